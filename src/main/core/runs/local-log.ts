/**
 * The local copy of a run's events.jsonl, written from the bytes the tail brings home: only whole
 * lines, so after a dropped connection the next tail starts at exactly its length and the copy ends
 * byte-for-byte equal to the host's.
 */
import { closeSync, existsSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { EventLineDecoder, type BadLine } from '../../../shared/events-reader';
import { MAX_LINE_BYTES, type KvEvent } from '../../../shared/protocol';
import { CodedError } from '../../../shared/result';

/**
 * The most bytes of one unfinished line the local copy holds while it waits for its newline. The
 * protocol's lines are at most 1 MiB; a longer one is still stored byte for byte (readers report
 * it as a bad line) up to this, and a host that sends more without a newline is not sending an
 * event log: following stops with `line_too_long` instead of buffering without end.
 */
export const MAX_UNTERMINATED_LINE_BYTES = 8 * MAX_LINE_BYTES;

/**
 * The local copy of a run's events.jsonl. Only whole lines are written (the bytes up to the
 * decoder's committed offset), so the file is always a prefix of the remote file made of complete
 * lines, and its length is exactly where the next tail starts.
 */
export class LocalEventSink {
  private fd: number;
  private decoder!: EventLineDecoder;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes on disk (all complete lines). */
  written = 0;
  lastSeq: number | null = null;
  runEnd: Extract<KvEvent, { type: 'run.end' }> | null = null;
  runStart: Extract<KvEvent, { type: 'run.start' }> | null = null;
  badLines = 0;
  /** Hears each bad line of what arrives (not of what the file held at construction). */
  onBadLine: ((b: BadLine) => void) | null = null;

  constructor(
    readonly file: string,
    private readonly onEvent?: (e: KvEvent) => void,
  ) {
    mkdirSync(join(file, '..'), { recursive: true });
    this.fd = openSync(file, existsSync(file) ? 'r+' : 'w+');
    // Recover from a crash: keep whole lines only, and learn the last seq from them.
    const size = fstatSync(this.fd).size;
    let keep = 0;
    if (size > 0) {
      const buf = Buffer.alloc(Math.min(size, 4 << 20));
      const start = size - buf.length;
      readSync(this.fd, buf, 0, buf.length, start);
      const nl = buf.lastIndexOf(0x0a);
      keep = nl === -1 ? (start === 0 ? 0 : start) : start + nl + 1;
      if (keep < size) ftruncateSync(this.fd, keep);
      if (keep > 0) {
        // Re-read the existing lines once for the last seq and run.start/run.end.
        const all = readFileSync(file);
        const d = new EventLineDecoder({ onEvent: (e) => this.note(e) });
        d.push(all.subarray(0, keep));
      }
    }
    this.written = keep;
    this.resetDecoder();
  }

  private note(e: KvEvent): void {
    this.lastSeq = e.seq;
    if (e.type === 'run.start') this.runStart = e;
    else if (e.type === 'run.end') this.runEnd = e;
  }

  /** Forget a partial line (the next tail re-sends it from `written`). */
  resetDecoder(): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.decoder = new EventLineDecoder(
      {
        onEvent: (e) => {
          this.note(e);
          this.onEvent?.(e);
        },
        onBadLine: (b) => {
          this.badLines++;
          this.onBadLine?.(b);
        },
      },
      { startOffset: this.written },
    );
  }

  push(chunk: Buffer): void {
    this.decoder.push(chunk);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const commit = this.decoder.committedOffset - this.written;
    if (commit <= 0) {
      if (this.pendingBytes > MAX_UNTERMINATED_LINE_BYTES) {
        const held = this.pendingBytes;
        this.pending = [];
        this.pendingBytes = 0;
        throw new CodedError('too_large', `the host sent ${held} bytes without a newline at byte ${this.written} of the log (an event line is at most ${MAX_LINE_BYTES} bytes): not an event log`, { offset: this.written });
      }
      return;
    }
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    let off = 0;
    try {
      while (off < commit) off += writeSync(this.fd, all, off, commit - off, this.written + off);
    } catch (e) {
      // A short write then ENOSPC would leave half a line: cut back to the last whole line.
      try {
        ftruncateSync(this.fd, this.written);
      } catch {
        /* the next start truncates to the last newline anyway */
      }
      throw e;
    }
    this.written += commit;
    const rest = all.subarray(commit);
    this.pending = rest.length ? [Buffer.from(rest)] : [];
    this.pendingBytes = rest.length;
  }

  /** The stream is over: a last line without a newline is kept too, byte-identical. */
  finish(): void {
    if (this.pendingBytes > 0) {
      const all = Buffer.concat(this.pending, this.pendingBytes);
      writeSync(this.fd, all, 0, all.length, this.written);
      this.written += all.length;
      this.decoder.end();
      this.pending = [];
      this.pendingBytes = 0;
    }
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* closed */
    }
  }

}
