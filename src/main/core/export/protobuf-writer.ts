/**
 * A small protocol-buffers encoder (wire format: https://protobuf.dev/programming-guides/encoding/):
 * varints, fixed64, doubles, length-delimited strings and nested messages, into one growing
 * buffer. Nested messages are written in place and their length prefix is inserted when they
 * close (`begin`/`end`), so no message is built twice. Integers must be safe (|n| < 2⁵³); negative
 * ones are written as 64-bit two's complement, as `int64` needs.
 */
const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;

const encoder = new TextEncoder();

export class ProtobufWriter {
  private buf = new Uint8Array(1 << 16);
  private pos = 0;
  private readonly open: number[] = [];
  private readonly view8 = new DataView(new ArrayBuffer(8));

  get length(): number {
    return this.pos;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  /** An unsigned varint (0 ≤ n < 2⁵³). */
  private varint(n: number): void {
    this.room(10);
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** uint32/uint64/int32 ≥ 0/bool/enum. */
  uint(field: number, n: number): this {
    this.tag(field, WIRE_VARINT);
    this.varint(n);
    return this;
  }

  /** int64 (and int32): negatives as ten-byte two's complement. */
  int(field: number, n: number): this {
    if (n >= 0) return this.uint(field, n);
    this.tag(field, WIRE_VARINT);
    let v = BigInt.asUintN(64, BigInt(n));
    this.room(10);
    while (v >= 0x80n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
    return this;
  }

  bool(field: number, b: boolean): this {
    return this.uint(field, b ? 1 : 0);
  }

  /** fixed64 (0 ≤ n < 2⁵³), little-endian. */
  fixed64(field: number, n: number): this {
    this.tag(field, WIRE_FIXED64);
    this.room(8);
    const lo = n % 0x100000000;
    const hi = Math.floor(n / 0x100000000);
    this.view8.setUint32(0, lo, true);
    this.view8.setUint32(4, hi, true);
    this.buf.set(new Uint8Array(this.view8.buffer), this.pos);
    this.pos += 8;
    return this;
  }

  double(field: number, v: number): this {
    this.tag(field, WIRE_FIXED64);
    this.room(8);
    this.view8.setFloat64(0, v, true);
    this.buf.set(new Uint8Array(this.view8.buffer), this.pos);
    this.pos += 8;
    return this;
  }

  string(field: number, s: string): this {
    const b = encoder.encode(s);
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Opens a nested message (or a packed field) in `field`; close it with `end`. */
  begin(field: number): this {
    this.tag(field, WIRE_LEN);
    this.open.push(this.pos);
    return this;
  }

  /** Closes the innermost `begin`: inserts its length before its bytes. */
  end(): this {
    const start = this.open.pop();
    if (start === undefined) throw new Error('ProtobufWriter.end without begin');
    const len = this.pos - start;
    let size = 1;
    for (let v = len; v >= 0x80; v = Math.floor(v / 0x80)) size++;
    this.room(size);
    this.buf.copyWithin(start + size, start, this.pos);
    let v = len;
    let at = start;
    while (v >= 0x80) {
      this.buf[at++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[at] = v;
    this.pos += size;
    return this;
  }

  /** The bytes written since the last `reset` (a view: copy it before writing on). */
  bytes(): Uint8Array {
    if (this.open.length) throw new Error('ProtobufWriter.bytes with a message still open');
    return this.buf.subarray(0, this.pos);
  }

  reset(): void {
    this.pos = 0;
    this.open.length = 0;
  }
}
