/**
 * Streaming reader: bytes → lines → validated events.
 *
 * Never holds more than one line (≤ 1 MiB) plus the current chunk, so a run of any length is read
 * in constant memory. Bad lines are counted and reported with their `seq` (when the line parsed far
 * enough to have one) and byte offset; reading always goes on. A partial last line is held until
 * more bytes arrive (a live tail), and reported as truncated only when the caller says the stream
 * has ended.
 */
import { MAX_LINE_BYTES, validateEvent, type KvEvent } from './protocol';

export type BadLineReason = 'not_json' | 'too_long' | 'not_object' | 'unknown_type' | 'schema' | 'truncated';

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
const SEQ_RE = /"seq"\s*:\s*(\d+)/;

/** Incremental decoder. Feed it chunks with `push`, then call `end` once the stream is over. */
export class EventLineDecoder {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
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
    while (pos < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, pos);
      const end = nl === -1 ? chunk.length : nl;
      const piece = chunk.subarray(pos, end);
      if (this.skipping) {
        // Discard the rest of an over-long line.
      } else if (this.pendingBytes + piece.length > this.maxLineBytes) {
        this.skipping = true;
        this.skipStart = this.lineStart;
        this.pending = [];
        this.pendingBytes = 0;
      } else if (nl !== -1 && this.pendingBytes === 0) {
        // Fast path: the whole line is inside this chunk.
        this.offset += piece.length + 1;
        this.finishLine(piece);
        pos = nl + 1;
        continue;
      } else if (piece.length > 0) {
        // Copy: the caller may reuse its chunk buffer.
        this.pending.push(piece.slice());
        this.pendingBytes += piece.length;
      }
      if (nl === -1) {
        this.offset += piece.length;
        break;
      }
      this.offset += piece.length + 1;
      pos = nl + 1;
      if (this.skipping) {
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
      } else {
        const line = this.takePending();
        this.finishLine(line);
      }
    }
  }

  /** The stream is over: a partial last line is reported as truncated. */
  end(): void {
    if (this.skipping) {
      this.skipping = false;
      this.lineNo++;
      this.report({
        reason: 'too_long',
        offset: this.skipStart,
        line: this.lineNo,
        seq: null,
        message: `line is longer than ${this.maxLineBytes} bytes`,
      });
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
    const text = this.decoder.decode(len === bytes.length ? bytes : bytes.subarray(0, len));
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
