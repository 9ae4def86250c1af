/**
 * Streaming reader: bytes → lines → validated events.
 *
 * Never holds more than one line (≤ 1 MiB) plus the current chunk, so a run of any length is read
 * in constant memory. Bad lines are counted and reported with their `seq` (when the line parsed far
 * enough to have one) and byte offset; reading always goes on. A partial last line is held until
 * more bytes arrive (a live tail), and reported as truncated only when the caller says the stream
 * has ended.
 */
import { jsonDeeperThan, MAX_JSON_DEPTH, MAX_LINE_BYTES, validateEvent, type BadLineReason, type KvEvent } from './protocol';

export type { BadLineReason };

export interface BadLine {
  reason: BadLineReason;
  /** Byte offset of the line's first byte in the stream. */
  offset: number;
  /** 1-based line number. */
  line: number;
  /** The line's `seq` when it could be read, else null. */
  seq: number | null;
  message: string;
}

export interface DecoderSink {
  onEvent(event: KvEvent, offset: number): void;
  onBadLine?(bad: BadLine): void;
}

const NEWLINE = 0x0a;
/** Whole lines are decoded up to this many bytes at a time (a longer line alone). */
const WINDOW_BYTES = 64 << 10;
const SEQ_RE = /"seq"\s*:\s*(\d+)/;

/**
 * A copy of the bytes: the caller may reuse its chunk buffer once `push` returns. (Not
 * `piece.slice()`: on a Node Buffer, `slice` is a view of the same memory, not a copy.)
 */
function copyOf(piece: Uint8Array): Uint8Array {
  return new Uint8Array(piece);
}

/** Incremental decoder. Feed it chunks with `push`, then call `end` once the stream is over. */
export class EventLineDecoder {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  /** For windows of whole lines; BOMs are dropped per line by `wholeLines`, as `decoder` does. */
  private readonly windowDecoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly maxLineBytes: number;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** True while skipping the rest of an over-long line. */
  private skipping = false;
  private skipStart = 0;
  private offset = 0;
  private lineNo = 0;
  private lineStart = 0;
  /** Counters, readable at any time. */
  readonly counts = { events: 0, badLines: 0, bytes: 0 };

  constructor(
    private readonly sink: DecoderSink,
    options: { maxLineBytes?: number; startOffset?: number; startLine?: number } = {},
  ) {
    this.maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
    this.offset = options.startOffset ?? 0;
    this.lineStart = this.offset;
    this.lineNo = options.startLine ?? 0;
  }

  /** Offset just past the last complete line: where a tail resumes without duplicating a line. */
  get committedOffset(): number {
    return this.lineStart;
  }

  /** Lines completed so far (good or bad). */
  get lines(): number {
    return this.lineNo;
  }

  push(chunk: Uint8Array): void {
    this.counts.bytes += chunk.length;
    let pos = 0;
    // A line begun in an earlier chunk (or the rest of an over-long one) ends at the first newline.
    if (this.skipping || this.pendingBytes > 0) {
      const nl = chunk.indexOf(NEWLINE);
      const piece = chunk.subarray(0, nl === -1 ? chunk.length : nl);
      if (!this.skipping && this.pendingBytes + piece.length > this.maxLineBytes) {
        this.skipping = true;
        this.skipStart = this.lineStart;
        this.pending = [];
        this.pendingBytes = 0;
      } else if (!this.skipping && piece.length > 0) {
        this.pending.push(copyOf(piece));
        this.pendingBytes += piece.length;
      }
      if (nl === -1) {
        this.offset += piece.length;
        return;
      }
      this.offset += piece.length + 1;
      pos = nl + 1;
      if (this.skipping) this.endSkipping();
      else this.finishLine(this.takePending());
    }
    // Lines wholly inside this chunk: decoded a window at a time, not one TextDecoder call per line.
    const last = chunk.lastIndexOf(NEWLINE);
    while (pos <= last) {
      // A window ends at a newline. Small windows: text that is all ASCII decodes to a one-byte
      // string, fast; a window holding one multi-byte character decodes (slower) to a two-byte one,
      // so a rare non-ASCII line slows only its own window.
      let end = pos + WINDOW_BYTES >= last ? last : chunk.lastIndexOf(NEWLINE, pos + WINDOW_BYTES);
      if (end < pos) {
        // The line at `pos` is longer than a window: a window by itself, or too long to read.
        const nl = chunk.indexOf(NEWLINE, pos);
        if (nl - pos > this.maxLineBytes) {
          this.skipStart = this.lineStart;
          this.offset += nl + 1 - pos;
          this.endSkipping();
          pos = nl + 1;
          continue;
        }
        end = nl;
      }
      this.wholeLines(chunk, pos, end);
      pos = end + 1;
    }
    // The start of a line that ends in a later chunk.
    if (pos < chunk.length) {
      const piece = chunk.subarray(pos);
      if (piece.length > this.maxLineBytes) {
        this.skipping = true;
        this.skipStart = this.lineStart;
      } else {
        this.pending.push(copyOf(piece));
        this.pendingBytes += piece.length;
      }
      this.offset += piece.length;
    }
  }

  /** Ends an over-long line begun at `skipStart`: reported, never parsed. */
  private endSkipping(): void {
    this.skipping = false;
    this.lineNo++;
    this.report({
      reason: 'too_long',
      offset: this.skipStart,
      line: this.lineNo,
      seq: null,
      message: `line is longer than ${this.maxLineBytes} bytes`,
    });
    this.lineStart = this.offset;
  }

  /**
   * The lines of chunk[from..last] (`last` is a newline), decoded as one string. The k-th newline
   * byte is the k-th '\n' of the string (UTF-8 never has 0x0a inside a character, and a malformed
   * sequence ends before a newline), so each line's text is a slice of it and its byte offset
   * comes from the bytes. Replacement characters come out as decoding each line alone would give.
   */
  private wholeLines(chunk: Uint8Array, from: number, last: number): void {
    const text = this.windowDecoder.decode(chunk.subarray(from, last + 1));
    // One UTF-16 unit per byte: every byte is ASCII (or a lone bad byte), positions coincide.
    const sameIndex = text.length === last + 1 - from;
    let p = from;
    let q = 0;
    while (p <= last) {
      const nl = chunk.indexOf(NEWLINE, p);
      const nlc = sameIndex ? nl - from : text.indexOf('\n', q);
      const bytes = nl - p;
      this.offset += bytes + 1;
      if (bytes > this.maxLineBytes) {
        this.skipStart = this.lineStart;
        this.endSkipping();
      } else {
        const offset = this.lineStart;
        this.lineStart = this.offset;
        this.lineNo++;
        let a = q;
        let b = nlc;
        if (b > a && text.charCodeAt(b - 1) === 0x0d) b--;
        if (b > a) {
          // A per-line TextDecoder drops a leading byte order mark; so does this.
          if (text.charCodeAt(a) === 0xfeff) a++;
          this.parseLine(text.slice(a, b), offset);
        }
      }
      p = nl + 1;
      q = nlc + 1;
    }
  }

  /** The stream is over: a partial last line is reported as truncated. */
  end(): void {
    if (this.skipping) {
      this.endSkipping();
    } else if (this.pendingBytes > 0) {
      const text = this.decoder.decode(this.takePending());
      this.lineNo++;
      const seq = SEQ_RE.exec(text);
      this.report({
        reason: 'truncated',
        offset: this.lineStart,
        line: this.lineNo,
        seq: seq ? Number(seq[1]) : null,
        message: `the last line has no newline (${text.length} characters): the run was cut off mid-line`,
      });
    }
    this.lineStart = this.offset;
  }

  private takePending(): Uint8Array {
    const parts = this.pending;
    this.pending = [];
    const total = this.pendingBytes;
    this.pendingBytes = 0;
    if (parts.length === 1) return parts[0]!;
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  private finishLine(bytes: Uint8Array): void {
    const offset = this.lineStart;
    this.lineStart = this.offset;
    this.lineNo++;
    // Tolerate CRLF and blank lines (a blank line is not an event, and not an error).
    let len = bytes.length;
    if (len > 0 && bytes[len - 1] === 0x0d) len--;
    if (len === 0) return;
    this.parseLine(this.decoder.decode(len === bytes.length ? bytes : bytes.subarray(0, len)), offset);
  }

  /** Parses and validates one line's text (CR and blank lines already dropped). */
  private parseLine(text: string, offset: number): void {
    if (jsonDeeperThan(text)) {
      const seq = SEQ_RE.exec(text);
      this.report({ reason: 'too_deep', offset, line: this.lineNo, seq: seq ? Number(seq[1]) : null, message: `nested more than ${MAX_JSON_DEPTH} levels deep (no event is)` });
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      const seq = SEQ_RE.exec(text);
      this.report({
        reason: 'not_json',
        offset,
        line: this.lineNo,
        seq: seq ? Number(seq[1]) : null,
        message: `not JSON: ${(e as Error).message}`,
      });
      return;
    }
    const result = validateEvent(value);
    if (result.ok) {
      this.counts.events++;
      this.sink.onEvent(result.event, offset);
      return;
    }
    const rawSeq = (value as { seq?: unknown } | null)?.seq;
    const seq = typeof rawSeq === 'number' && Number.isInteger(rawSeq) ? rawSeq : null;
    const r = result.reason;
    this.report({
      reason: r.kind,
      offset,
      line: this.lineNo,
      seq,
      message:
        r.kind === 'unknown_type'
          ? `unknown event type "${r.type}"`
          : r.kind === 'not_object'
            ? 'a line must be a JSON object'
            : `${r.type}: ${r.message}`,
    });
  }

  private report(bad: BadLine): void {
    this.counts.badLines++;
    this.sink.onBadLine?.(bad);
  }
}

/** Decodes a whole in-memory log (tests, small files, the renderer's drag-and-drop). */
export function decodeAll(bytes: Uint8Array): { events: KvEvent[]; bad: BadLine[] } {
  const events: KvEvent[] = [];
  const bad: BadLine[] = [];
  const d = new EventLineDecoder({ onEvent: (e) => events.push(e), onBadLine: (b) => bad.push(b) });
  d.push(bytes);
  d.end();
  return { events, bad };
}

/** Reads events from any async byte source (a file stream, an SSH channel, a fetch body). */
export async function readEventStream(source: AsyncIterable<Uint8Array>, sink: DecoderSink): Promise<EventLineDecoder> {
  const d = new EventLineDecoder(sink);
  for await (const chunk of source) d.push(chunk);
  d.end();
  return d;
}
