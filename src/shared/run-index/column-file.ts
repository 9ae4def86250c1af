/**
 * The container of a run index (docs/run-index.md): a JSON header and named typed columns in one
 * byte array. Pure (no Node, no DOM), so the core writes it and the window reads it with the same
 * code.
 *
 *   "KVSINDEX" · u32 format · u32 header bytes · u32 flags · u32 checksum ·
 *   header JSON (UTF-8) · zero padding to 8 · column bodies, each starting on a multiple of 8
 *
 * All numbers little-endian. Flag bit 0: `checksum` is the CRC-32 of every byte after the 24-byte
 * prefix (header and bodies), which a reader of a file checks before believing any of it; the form
 * sent to the window, which never touches a disk, has none. Column offsets count from the first
 * body, so they do not depend on the header's length.
 *
 * A column is stored `raw` (its typed array's little-endian bytes, so a reader can view it in place
 * without a copy) or `delta-varint` (the differences of successive values, zigzag LEB128: times and
 * ids that rise in small steps shrink to a byte or two), and either may be deflated. The compact
 * form (varint + deflate) is what goes to disk; the raw form is what crosses the bridge, where
 * the window maps each column straight onto the received buffer.
 */

export const MAGIC = 'KVSINDEX';

export type ColumnType = 'f64' | 'i32' | 'i16' | 'i8' | 'u8';
export type TypedColumn = Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

export interface ColumnEntry {
  name: string;
  type: ColumnType;
  /** Values in the column. */
  length: number;
  encoding: 'raw' | 'delta-varint';
  deflated: boolean;
  /** Where the body starts, from the first body (a multiple of 8), and its stored size. */
  offset: number;
  bytes: number;
}

export interface ColumnFileHeader<M> {
  columns: ColumnEntry[];
  meta: M;
}

const CTOR = { f64: Float64Array, i32: Int32Array, i16: Int16Array, i8: Int8Array, u8: Uint8Array } as const;

export function columnType(a: TypedColumn): ColumnType {
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof Int16Array) return 'i16';
  if (a instanceof Int8Array) return 'i8';
  return 'u8';
}

/** Thrown for bytes that are not a whole, readable column file of the expected format. */
export class ColumnFileError extends Error {}

/** Deltas beyond this (2^52) could lose a bit in zigzag form; such columns stay raw. */
const MAX_DELTA = 4503599627370496;

/**
 * Zigzag LEB128 of the successive differences, or null when a value is not an integer or a
 * difference is too large to encode exactly (the column is then stored raw).
 */
export function encodeDeltaVarint(values: ArrayLike<number>, n: number): Uint8Array | null {
  // At most 8 bytes a value (zigzag ≤ 2^53 needs 54 bits = 8 groups of 7).
  let out = new Uint8Array(Math.max(16, n * 2));
  let at = 0;
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const x = values[i]!;
    const d = x - prev;
    if (!Number.isInteger(x) || !(d <= MAX_DELTA && d >= -MAX_DELTA) || prev + d !== x) return null;
    prev = x;
    let z = d >= 0 ? d * 2 : -d * 2 - 1;
    if (at + 8 > out.length) {
      const next = new Uint8Array(out.length * 2);
      next.set(out);
      out = next;
    }
    if (z < 0x80000000) {
      while (z >= 0x80) {
        out[at++] = (z & 0x7f) | 0x80;
        z >>>= 7;
      }
      out[at++] = z;
    } else {
      while (z >= 0x80) {
        out[at++] = (z % 128) | 0x80;
        z = Math.floor(z / 128);
      }
      out[at++] = z;
    }
  }
  return out.subarray(0, at);
}

/** Inverse of encodeDeltaVarint into a fresh column of `type`. */
export function decodeDeltaVarint(bytes: Uint8Array, n: number, type: ColumnType): TypedColumn {
  // Always decoded into doubles (one array type keeps the loop monomorphic: a loop storing into
  // five array types is recompiled for each), then converted natively.
  const out = new Float64Array(n);
  const end = bytes.length;
  let at = 0;
  let prev = 0;
  for (let i = 0; i < n; i++) {
    if (at + 8 > end) {
      // The last few bytes: every read checked.
      let z = 0;
      let scale = 1;
      let b: number;
      do {
        if (at >= end) throw new ColumnFileError('a varint column ends early');
        b = bytes[at++]!;
        z += (b & 0x7f) * scale;
        scale *= 128;
      } while (b & 0x80);
      prev += z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    } else {
      // Up to four bytes (28 bits, nearly every step) in 32-bit integer arithmetic.
      let b = bytes[at++]!;
      let z = b & 0x7f;
      if (b & 0x80) {
        b = bytes[at++]!;
        z |= (b & 0x7f) << 7;
        if (b & 0x80) {
          b = bytes[at++]!;
          z |= (b & 0x7f) << 14;
          if (b & 0x80) {
            b = bytes[at++]!;
            z |= (b & 0x7f) << 21;
          }
        }
      }
      if (b & 0x80) {
        // Longer: go on in doubles (a zigzag value may need 54 bits).
        let big = z;
        let scale = 268435456; // 2^28
        do {
          b = bytes[at++]!;
          big += (b & 0x7f) * scale;
          scale *= 128;
        } while (b & 0x80 && at < end);
        if (b & 0x80) throw new ColumnFileError('a varint column ends early');
        prev += big % 2 === 0 ? big / 2 : -(big + 1) / 2;
      } else prev += (z >>> 1) ^ -(z & 1);
    }
    out[i] = prev;
  }
  if (at !== end) throw new ColumnFileError('a varint column has bytes left over');
  return type === 'f64' ? out : new CTOR[type](out);
}

export interface EncodeOptions {
  /** Store integer columns as delta varints where that is smaller. */
  varint: boolean;
  /** Deflates a body (raw deflate); absent: nothing is deflated. Kept where it saves a third or more. */
  deflate?: (bytes: Uint8Array) => Uint8Array;
  /** CRC-32 (zlib's) of bytes: given, the file carries it and a reader checks it. */
  crc32?: (bytes: Uint8Array) => number;
}

/** Bytes before the header: magic, format, header length, flags, checksum. */
export const PREFIX_BYTES = 24;
const FLAG_CHECKSUM = 1;

const align8 = (n: number) => (n + 7) & ~7;

function bytesOf(a: TypedColumn): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Writes header meta and columns (each in [0, length) of its array) into one file. */
export function encodeColumnFile<M>(format: number, meta: M, columns: Array<[string, TypedColumn]>, options: EncodeOptions): Uint8Array {
  const bodies: Uint8Array[] = [];
  const entries: ColumnEntry[] = [];
  let at = 0;
  for (const [name, values] of columns) {
    const type = columnType(values);
    let body = bytesOf(values);
    let encoding: ColumnEntry['encoding'] = 'raw';
    if (options.varint && values.length > 0) {
      const v = encodeDeltaVarint(values, values.length);
      if (v && v.length < body.length) {
        body = v;
        encoding = 'delta-varint';
      }
    }
    let deflated = false;
    if (options.deflate && body.length > 64) {
      const z = options.deflate(body);
      // Kept where it saves a third or more: inflating costs the reader time (varints of copy
      // times, all different, save less and stay as they are).
      if (z.length <= body.length * (2 / 3)) {
        body = z;
        deflated = true;
      }
    }
    bodies.push(body);
    entries.push({ name, type, length: values.length, encoding, deflated, offset: at, bytes: body.length });
    at = align8(at + body.length);
  }
  const headerBytes = new TextEncoder().encode(JSON.stringify({ columns: entries, meta }));
  const start = align8(PREFIX_BYTES + headerBytes.length);
  const out = new Uint8Array(start + at);
  for (let i = 0; i < 8; i++) out[i] = MAGIC.charCodeAt(i);
  out.set(headerBytes, PREFIX_BYTES);
  for (let i = 0; i < entries.length; i++) out.set(bodies[i]!, start + entries[i]!.offset);
  const view = new DataView(out.buffer);
  view.setUint32(8, format, true);
  view.setUint32(12, headerBytes.length, true);
  if (options.crc32) {
    view.setUint32(16, FLAG_CHECKSUM, true);
    view.setUint32(20, options.crc32(out.subarray(PREFIX_BYTES)) >>> 0, true);
  }
  return out;
}

/** The format number of a column file, or null when the bytes do not start like one. */
export function columnFileFormat(bytes: Uint8Array): number | null {
  if (bytes.length < PREFIX_BYTES) return null;
  for (let i = 0; i < 8; i++) if (bytes[i] !== MAGIC.charCodeAt(i)) return null;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
}

export interface DecodeOptions {
  inflate?: (bytes: Uint8Array) => Uint8Array;
  /** Given: the file must carry a checksum, and it must match (a file read from disk). */
  crc32?: (bytes: Uint8Array) => number;
}

/**
 * Reads only the header (cheap: no column is touched). With `crc32`, `bytes` must be the whole
 * file and its checksum is checked first.
 */
export function readColumnFileHeader<M>(bytes: Uint8Array, format: number, options: DecodeOptions = {}): ColumnFileHeader<M> {
  const got = columnFileFormat(bytes);
  if (got === null) throw new ColumnFileError('not a run index (no KVSINDEX magic)');
  if (got !== format) throw new ColumnFileError(`run index format ${got}, this version reads ${format}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = view.getUint32(12, true);
  if (PREFIX_BYTES + len > bytes.length) throw new ColumnFileError('run index header is cut off');
  if (options.crc32) {
    if (!(view.getUint32(16, true) & FLAG_CHECKSUM)) throw new ColumnFileError('run index file has no checksum');
    if (options.crc32(bytes.subarray(PREFIX_BYTES)) >>> 0 !== view.getUint32(20, true)) throw new ColumnFileError('run index checksum does not match: the file is damaged');
  }
  let header: ColumnFileHeader<M>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + len))) as ColumnFileHeader<M>;
  } catch (e) {
    throw new ColumnFileError(`run index header is not JSON (${(e as Error).message})`);
  }
  if (!header || !Array.isArray(header.columns)) throw new ColumnFileError('run index header has no column list');
  return header;
}

/**
 * Reads every column. Raw, undeflated columns that sit on an aligned offset are views of `bytes`
 * (no copy); the rest are decoded into fresh arrays. `inflate` is needed only for deflated columns.
 */
export function decodeColumnFile<M>(bytes: Uint8Array, format: number, options: DecodeOptions = {}): { meta: M; columns: Map<string, TypedColumn> } {
  const header = readColumnFileHeader<M>(bytes, format, options);
  const bodies = columnBodies(bytes, header);
  return {
    meta: header.meta,
    columns: decodeBodies(
      header,
      bodies.map((b, i) => {
        const c = header.columns[i]!;
        if (!c.deflated) return b;
        if (!options.inflate) throw new ColumnFileError(`run index column ${c.name} is deflated and no inflater was given`);
        return inflateBody(c, () => options.inflate!(b));
      }),
    ),
  };
}

/**
 * decodeColumnFile with an asynchronous inflater (the window's DecompressionStream); the deflated
 * columns are inflated side by side.
 */
export async function decodeColumnFileAsync<M>(bytes: Uint8Array, format: number, inflate: (bytes: Uint8Array) => Promise<Uint8Array>): Promise<{ meta: M; columns: Map<string, TypedColumn> }> {
  const header = readColumnFileHeader<M>(bytes, format);
  const bodies = columnBodies(bytes, header);
  const ready = await Promise.all(
    bodies.map(async (b, i) => {
      const c = header.columns[i]!;
      if (!c.deflated) return b;
      try {
        return await inflate(b);
      } catch (e) {
        throw new ColumnFileError(`run index column ${c.name} does not inflate (${(e as Error).message})`);
      }
    }),
  );
  return { meta: header.meta, columns: decodeBodies(header, ready) };
}

function inflateBody(c: ColumnEntry, inflate: () => Uint8Array): Uint8Array {
  try {
    return inflate();
  } catch (e) {
    throw new ColumnFileError(`run index column ${c.name} does not inflate (${(e as Error).message})`);
  }
}

/** Each column's stored bytes, checked to lie inside the file. */
function columnBodies(bytes: Uint8Array, header: ColumnFileHeader<unknown>): Uint8Array[] {
  const start = align8(PREFIX_BYTES + new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(12, true));
  return header.columns.map((c) => {
    if (!CTOR[c.type] || !Number.isInteger(c.length) || c.length < 0 || !Number.isInteger(c.offset) || c.offset < 0 || !Number.isInteger(c.bytes) || c.bytes < 0 || start + c.offset + c.bytes > bytes.length) {
      throw new ColumnFileError(`run index column ${c.name} lies outside the file`);
    }
    return bytes.subarray(start + c.offset, start + c.offset + c.bytes);
  });
}

/** Columns from their (inflated) bodies. */
function decodeBodies(header: ColumnFileHeader<unknown>, bodies: Uint8Array[]): Map<string, TypedColumn> {
  const columns = new Map<string, TypedColumn>();
  header.columns.forEach((c, i) => {
    const Ctor = CTOR[c.type];
    const body = bodies[i]!;
    let values: TypedColumn;
    if (c.encoding === 'delta-varint') values = decodeDeltaVarint(body, c.length, c.type);
    else {
      if (body.length !== c.length * Ctor.BYTES_PER_ELEMENT) throw new ColumnFileError(`run index column ${c.name} has ${body.length} bytes for ${c.length} values`);
      values = body.byteOffset % Ctor.BYTES_PER_ELEMENT === 0 ? new Ctor(body.buffer as ArrayBuffer, body.byteOffset, c.length) : new Ctor(new Uint8Array(body).buffer, 0, c.length); // a copy (a Node Buffer's slice() would be a view)
    }
    columns.set(c.name, values);
  });
  return columns;
}
