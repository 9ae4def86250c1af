/**
 * The portable run file (`.kvscope`): one run's meta and its exact event-log bytes in one gzip
 * stream, written and read in one pass with bounded memory (layout in docs/kvscope-file.md):
 *
 *   gzip(  header line  = {"kvscope_file":1,"events_bytes":N,"meta":{...}} "\n"
 *          N bytes      = events.jsonl, byte for byte (decompressed when the run's log is .gz)
 *          trailer line = "\n" {"events_sha256":"<hex>"} "\n"  )
 *
 * The byte count sits in the header so a reader knows where the events end without scanning
 * them; the digest sits in the trailer so a writer streams the log once (a .gz log takes one extra
 * pass to count its decompressed bytes). A reader checks
 * both and refuses a damaged file with a clear error; nothing is written into the runs folder
 * until the digest has matched.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat, statfs, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { jsonDeeperThan } from '../../../shared/protocol';
import { CodedError } from '../../../shared/result';
import type { RunMeta } from '../run-store';

export const KVSCOPE_FILE_VERSION = 1;
export const KVSCOPE_EXT = '.kvscope';
/** Whether a path names a run file (the extension in any case, as the shell's open dialog and open-args accept it). */
export const isKvscopeFile = (path: string): boolean => path.toLowerCase().endsWith(KVSCOPE_EXT);
/** The header carries only meta.json; anything bigger is not a run file. */
const MAX_HEADER_BYTES = 1 << 20;
const MAX_TRAILER_BYTES = 4096;
/**
 * The most event bytes an import takes (a run of a million transfers is ~200 MB of JSONL). A run
 * file declares its size in its header, and a few MB of gzip can declare gigabytes: the declared
 * size is checked against this, and against the free space, before anything is written.
 */
export const MAX_IMPORT_BYTES = 1024 * 1024 * 1024;
/** Left free on the disk after an import (meta.json, and room for everything else). */
const IMPORT_HEADROOM_BYTES = 16 << 20;

export interface KvscopeHeader {
  kvscope_file: number;
  events_bytes: number;
  meta: RunMeta;
}

/** The decompressed bytes of a log file (plain or .gz). */
function logBytes(file: string): Readable {
  const raw = createReadStream(file, { highWaterMark: 1 << 20 });
  if (!file.endsWith('.gz')) return raw;
  const gunzip = createGunzip();
  raw.on('error', (e) => gunzip.destroy(e));
  return raw.pipe(gunzip);
}

async function countBytes(file: string): Promise<number> {
  if (!file.endsWith('.gz')) return (await stat(file)).size;
  let n = 0;
  for await (const chunk of logBytes(file)) n += (chunk as Buffer).length;
  return n;
}

/**
 * Writes `dest` from a log file and its meta. For a plain log, the bytes present when the export
 * starts are taken (a live run may grow meanwhile; the file holds a consistent prefix).
 */
export async function writeKvscopeFile(logFile: string, meta: RunMeta, dest: string, onProgress?: (done: number, total: number) => void): Promise<{ eventsBytes: number; sha256: string }> {
  const total = await countBytes(logFile);
  const hash = createHash('sha256');
  let digest = '';
  const header: KvscopeHeader = { kvscope_file: KVSCOPE_FILE_VERSION, events_bytes: total, meta };
  async function* body(): AsyncGenerator<Buffer> {
    yield Buffer.from(JSON.stringify(header) + '\n');
    let sent = 0;
    let last = 0;
    for await (const chunk0 of logBytes(logFile)) {
      let chunk = chunk0 as Buffer;
      if (sent + chunk.length > total) chunk = chunk.subarray(0, total - sent);
      if (chunk.length === 0) break;
      hash.update(chunk);
      sent += chunk.length;
      yield chunk;
      if (onProgress && sent - last > 8 << 20) {
        last = sent;
        onProgress(sent, total);
      }
      if (sent >= total) break;
    }
    if (sent !== total) throw new CodedError('io_error', `${logFile} shrank while it was exported (${sent} of ${total} bytes)`);
    digest = hash.digest('hex');
    yield Buffer.from('\n' + JSON.stringify({ events_sha256: digest }) + '\n');
  }
  const tmp = `${dest}.${process.pid}.tmp`;
  try {
    await pipeline(Readable.from(body()), createGzip({ level: 6 }), createWriteStream(tmp));
    await rename(tmp, dest);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  onProgress?.(total, total);
  return { eventsBytes: total, sha256: digest };
}

/**
 * Reads a `.kvscope` file: `header` is called once, then the events' bytes are yielded in chunks,
 * and the digest is checked at the end (a mismatch or a cut-off file throws `bad_run`).
 */
export async function* readKvscopeFile(file: string, onHeader?: (h: KvscopeHeader) => void): AsyncGenerator<Buffer> {
  const raw = createReadStream(file, { highWaterMark: 1 << 20 });
  const gunzip = createGunzip();
  raw.on('error', (e) => gunzip.destroy(e));
  let state: 'header' | 'events' | 'trailer' = 'header';
  let headerParts: Buffer[] = [];
  let headerLen = 0;
  let header: KvscopeHeader | null = null;
  let left = 0;
  const hash = createHash('sha256');
  let trailer = Buffer.alloc(0);
  try {
    for await (const c of raw.pipe(gunzip)) {
      let chunk = c as Buffer;
      while (chunk.length > 0) {
        if (state === 'header') {
          const nl = chunk.indexOf(0x0a);
          const piece = nl === -1 ? chunk : chunk.subarray(0, nl);
          headerParts.push(piece);
          headerLen += piece.length;
          if (headerLen > MAX_HEADER_BYTES) throw new CodedError('bad_run', `${file} is not a KV Scope run file (no header line in the first ${MAX_HEADER_BYTES} bytes)`);
          if (nl === -1) break;
          header = parseHeader(Buffer.concat(headerParts).toString('utf8'), file);
          headerParts = [];
          onHeader?.(header);
          left = header.events_bytes;
          state = 'events';
          chunk = chunk.subarray(nl + 1);
        } else if (state === 'events') {
          const take = Math.min(left, chunk.length);
          if (take > 0) {
            const part = chunk.subarray(0, take);
            hash.update(part);
            left -= take;
            yield part;
          }
          chunk = chunk.subarray(take);
          if (left === 0) state = 'trailer';
        } else {
          trailer = Buffer.concat([trailer, chunk]);
          if (trailer.length > MAX_TRAILER_BYTES) throw new CodedError('bad_run', `${file}: unexpected data after the events`);
          chunk = chunk.subarray(chunk.length);
        }
      }
    }
  } catch (e) {
    if (e instanceof CodedError) throw e;
    const code = (e as { code?: string }).code;
    if (code === 'Z_BUF_ERROR' || code === 'Z_DATA_ERROR' || code === 'Z_STREAM_ERROR') {
      throw new CodedError('bad_run', `${file} is damaged or cut off (${(e as Error).message}); ${header ? `${header.events_bytes - left} of ${header.events_bytes} event bytes were readable` : 'not a gzip KV Scope run file'}`);
    }
    throw e;
  }
  if (!header) throw new CodedError('bad_run', `${file} is not a KV Scope run file (no header line)`);
  if (left > 0) throw new CodedError('bad_run', `${file} is cut off: ${header.events_bytes - left} of ${header.events_bytes} event bytes present`);
  let expected: unknown;
  try {
    expected = (JSON.parse(trailer.toString('utf8').trim()) as { events_sha256?: unknown }).events_sha256;
  } catch {
    throw new CodedError('bad_run', `${file} has no readable digest line after the events (cut off?)`);
  }
  const got = hash.digest('hex');
  if (expected !== got) throw new CodedError('bad_run', `${file}: the events' sha256 is ${got}, the file says ${String(expected)} (damaged file)`);
}

function parseHeader(text: string, file: string): KvscopeHeader {
  if (jsonDeeperThan(text)) throw new CodedError('bad_run', `${file}: its header is nested too deep to be a run's meta`);
  let h: unknown;
  try {
    h = JSON.parse(text);
  } catch {
    throw new CodedError('bad_run', `${file} is not a KV Scope run file (its first line is not JSON)`);
  }
  const o = h as Partial<KvscopeHeader>;
  if (typeof o !== 'object' || o === null || typeof o.kvscope_file !== 'number') throw new CodedError('bad_run', `${file} is not a KV Scope run file (no "kvscope_file" in its header)`);
  if (o.kvscope_file > KVSCOPE_FILE_VERSION) throw new CodedError('unsupported', `${file} is a version ${o.kvscope_file} run file; this KV Scope reads version ${KVSCOPE_FILE_VERSION}`);
  if (!Number.isSafeInteger(o.events_bytes) || (o.events_bytes as number) < 0) throw new CodedError('bad_run', `${file}: header has no valid events_bytes`);
  if (typeof o.meta !== 'object' || o.meta === null || Array.isArray(o.meta)) throw new CodedError('bad_run', `${file}: header has no meta`);
  return o as KvscopeHeader;
}

/** Only the header (stops reading after the first line). */
export async function readKvscopeHeader(file: string): Promise<KvscopeHeader> {
  let header: KvscopeHeader | null = null;
  const it = readKvscopeFile(file, (h) => (header = h));
  try {
    // The header is delivered before the first events chunk; stop there.
    await it.next();
  } finally {
    await it.return(undefined);
  }
  if (!header) throw new CodedError('bad_run', `${file} is not a KV Scope run file`);
  return header;
}

const RUN_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
const IMPORTED_STATUSES = new Set(['ok', 'error', 'cancelled', 'incomplete']);

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Refuses to write `bytes` into `dir` when its disk has less than that free (plus headroom). */
export async function checkFreeSpace(dir: string, bytes: number, what: string): Promise<void> {
  const fs = await statfs(dir).catch(() => null);
  if (!fs) return; // a file system that cannot say: the write itself reports a full disk
  const free = fs.bavail * fs.bsize;
  if (bytes + IMPORT_HEADROOM_BYTES > free) {
    throw new CodedError('io_error', `${what} needs ${bytes} bytes and ${dir} has ${free} bytes free; nothing was written`, { needed: bytes, free });
  }
}

/**
 * The meta an imported run keeps: what the runs list shows, nothing more. A run file is someone
 * else's data, so nothing in it may ever reach a shell: the host's Python, run folder, process
 * group and agent arguments (which resume and cancel use for runs started on this machine) are
 * dropped, and `imported_from` marks the run as a finished record that is never followed again.
 */
function importedMeta(m: Record<string, unknown>, id: string, file: string): RunMeta {
  const text = (v: unknown, max: number): string | undefined => (typeof v === 'string' && v.length > 0 ? v.slice(0, max) : undefined);
  // A finished status is shown from the log's own run.end; a run exported while live stays incomplete.
  const status: RunMeta['status'] = m.status === 'running' ? 'incomplete' : IMPORTED_STATUSES.has(m.status as string) ? (m.status as RunMeta['status']) : 'ok';
  const e = m.error as { code?: unknown; message?: unknown } | null | undefined;
  const meta: RunMeta = {
    id,
    name: text(m.name, 200) ?? id,
    host: text(m.host, 200) ?? 'imported',
    status,
    createdAt: text(m.createdAt, 64) ?? '',
    imported_from: file,
    imported_at: new Date().toISOString(),
  };
  const endedAt = text(m.endedAt, 64);
  if (endedAt) meta.endedAt = endedAt;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') meta.error = { code: e.code.slice(0, 100), message: e.message.slice(0, 2000) };
  const source = text(m.id, 128);
  if (source) meta.source_run_id = source;
  return meta;
}

/**
 * Restores a `.kvscope` file into `runsDir` as a run folder (events.jsonl byte for byte, and
 * meta.json). The id is the file's run id, with `-2`, `-3`, ... added when that id is taken.
 * Nothing is written before the file has proved whole: its declared size is checked against
 * `maxEventsBytes` and the free space, and a first pass checks the digest without writing; the
 * second pass writes under a temporary name (checking the digest again, should the file change
 * in between) and renames it into place.
 */
export async function importKvscopeFile(
  file: string,
  runsDir: string,
  options: { maxEventsBytes?: number; /** What `imported_from` names (default: the file's path). */ source?: string } = {},
): Promise<{ id: string; dir: string; eventsBytes: number }> {
  const max = options.maxEventsBytes ?? MAX_IMPORT_BYTES;
  const declared = await readKvscopeHeader(file);
  if (declared.events_bytes > max) {
    throw new CodedError('too_large', `${file} declares ${declared.events_bytes} bytes of events, more than an import takes (${max}); nothing was written`, { declared: declared.events_bytes, limit: max });
  }
  for await (const chunk of readKvscopeFile(file)) void chunk; // the digest, before any byte is written
  await mkdir(runsDir, { recursive: true });
  await checkFreeSpace(runsDir, declared.events_bytes, `importing ${file}`);
  const tmpDir = join(runsDir, `.import-${process.pid}-${Date.now()}`);
  await mkdir(tmpDir);
  let header: KvscopeHeader | null = null;
  try {
    await pipeline(
      Readable.from(readKvscopeFile(file, (h) => (header = h))),
      createWriteStream(join(tmpDir, 'events.jsonl')),
    );
    const h = header as KvscopeHeader | null;
    if (!h) throw new CodedError('bad_run', `${file} is not a KV Scope run file`);
    const wanted = typeof h.meta.id === 'string' && RUN_ID_RE.test(h.meta.id) && !h.meta.id.startsWith('.') ? h.meta.id : 'imported-run';
    let id = wanted;
    for (let i = 2; await exists(join(runsDir, id)); i++) id = `${wanted}-${i}`;
    await writeFile(join(tmpDir, 'meta.json'), JSON.stringify(importedMeta(h.meta as Record<string, unknown>, id, options.source ?? file), null, 2) + '\n');
    const dir = join(runsDir, id);
    await rename(tmpDir, dir);
    return { id, dir, eventsBytes: h.events_bytes };
  } catch (e) {
    await rm(tmpDir, { recursive: true, force: true });
    throw e;
  }
}
