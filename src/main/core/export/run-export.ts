/**
 * One entry for every export of a run, shared by `kvscope export` and the app's File → Export:
 * picks the writer for the format, streams the log once, reports progress, and says what was
 * skipped (bad lines) rather than failing on them.
 */
import { createReadStream, createWriteStream, type ReadStream } from 'node:fs';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import type { BadLine } from '../../../shared/events-reader';
import { CodedError } from '../../../shared/result';
import { RunAnalyzer } from '../../../shared/run-analysis';
import { readEventFile } from '../event-files';
import type { RunMeta } from '../run-store';
import { writeCsv, type CsvTable } from './csv';
import { isKvscopeFile, readKvscopeFile, writeKvscopeFile } from './kvscope-file';
import { EXPORT_FORMAT_CHOICES, type ExportFormat } from '../../../shared/api';
import { writePerfettoTrace, type PerfettoOptions, type PerfettoReport } from './perfetto';
import { writePerfettoProtoTrace } from './perfetto-proto';

export type { ExportFormat };
export const EXPORT_FORMATS: readonly ExportFormat[] = EXPORT_FORMAT_CHOICES.map((f) => f.id);

export interface ExportProgress {
  stage: string;
  /** 0..1 when the total is known. */
  fraction: number | null;
  message: string;
}

export interface ExportOptions {
  /** The run's log: events.jsonl, events.jsonl.gz or a .kvscope file. */
  logFile: string;
  /** meta.json of the run (written into a .kvscope file). */
  meta: RunMeta;
  format: ExportFormat;
  dest: string;
  /** csv only: one table into the file `dest`; without it, all tables into the folder `dest`. */
  table?: CsvTable;
  perfetto?: PerfettoOptions;
  onProgress?: (p: ExportProgress) => void;
}

export interface ExportResult {
  format: ExportFormat;
  files: string[];
  events: number;
  badLines: number;
  badLineSamples: BadLine[];
  perfetto?: PerfettoReport;
}

function describeBad(b: BadLine): string {
  return `line ${b.line}${b.seq !== null ? ` (seq ${b.seq})` : ''}: ${b.reason}: ${b.message}`;
}

/** What was skipped, in one sentence per bad line sample (for stderr and the app's message). */
export function skippedSummary(r: ExportResult): string[] {
  if (r.badLines === 0) return [];
  const out = [`skipped ${r.badLines} bad line(s); exported the ${r.events} valid event(s)`];
  for (const b of r.badLineSamples) out.push(`  ${describeBad(b)}`);
  if (r.badLines > r.badLineSamples.length) out.push(`  ... and ${r.badLines - r.badLineSamples.length} more`);
  return out;
}

/**
 * A plain log in 1 MiB chunks, the next read already in flight while the caller works on the
 * current chunk. (A ReadStream starts its next read only when the caller yields, so the export sat
 * waiting on every read: ~0.1 s per million events.) Two buffers alternate: the caller is done with
 * a chunk when it asks for the next one (EventLineDecoder copies the part of a line it keeps).
 */
async function* readAhead(file: string, onRead: (bytes: number) => void, chunkBytes = 1 << 20): AsyncGenerator<Uint8Array> {
  const fh: FileHandle = await open(file, 'r');
  const bufs = [Buffer.allocUnsafe(chunkBytes), Buffer.allocUnsafe(chunkBytes)];
  let i = 0;
  let next: Promise<{ bytesRead: number }> | null = fh.read(bufs[0]!, 0, chunkBytes, null);
  try {
    for (;;) {
      const { bytesRead } = await next;
      next = null;
      if (bytesRead === 0) return;
      const cur = bufs[i]!;
      i ^= 1;
      next = fh.read(bufs[i]!, 0, chunkBytes, null);
      onRead(bytesRead);
      yield cur.subarray(0, bytesRead);
    }
  } finally {
    // Stopped early (an error downstream): let the read in flight finish before closing.
    if (next) await next.catch(() => undefined);
    await fh.close();
  }
}

/** A log's decompressed bytes, with a way to ask how far through the file on disk we are. */
function openWithPosition(file: string): { bytes: AsyncIterable<Uint8Array>; position: () => number; total: Promise<number | null> } {
  if (isKvscopeFile(file)) {
    let total: number | null = null;
    let pos = 0;
    async function* events(): AsyncGenerator<Uint8Array> {
      for await (const chunk of readKvscopeFile(file, (h) => (total = h.events_bytes))) {
        pos += chunk.length;
        yield chunk;
      }
    }
    return { bytes: events(), position: () => pos, total: Promise.resolve(null).then(() => total) };
  }
  const total = stat(file).then((s) => s.size);
  if (!file.endsWith('.gz')) {
    let pos = 0;
    return { bytes: readAhead(file, (n) => (pos += n)), position: () => pos, total };
  }
  const raw: ReadStream = createReadStream(file, { highWaterMark: 1 << 20 });
  const gunzip = createGunzip();
  raw.on('error', (e) => gunzip.destroy(e));
  return { bytes: raw.pipe(gunzip), position: () => raw.bytesRead, total };
}

export async function exportLog(o: ExportOptions): Promise<ExportResult> {
  if (!EXPORT_FORMATS.includes(o.format)) throw new CodedError('invalid_argument', `unknown export format "${String(o.format)}" (use ${EXPORT_FORMATS.join(', ')})`);
  const progress = o.onProgress ?? (() => undefined);
  if (o.format === 'perfetto' || o.format === 'perfetto-proto') {
    const src = openWithPosition(o.logFile);
    const totalBytes = await src.total.catch(() => null);
    const tmp = `${o.dest}.${process.pid}.tmp`;
    const out = createWriteStream(tmp, { highWaterMark: 16 << 20 });
    let report: PerfettoReport;
    const write = o.format === 'perfetto' ? writePerfettoTrace : writePerfettoProtoTrace;
    try {
      report = await write(src.bytes, out, {
        ...o.perfetto,
        title: o.meta.name,
        totalBytes,
        sourceBytes: src.position,
        onProgress: (p) => {
          const fraction = p.totalBytes ? Math.min(1, p.bytesRead / p.totalBytes) : null;
          progress({ stage: o.format, fraction, message: `${p.events} events read${fraction !== null ? ` (${Math.round(fraction * 100)}%)` : ''}` });
        },
      });
      await rename(tmp, o.dest);
    } catch (e) {
      out.destroy();
      await rm(tmp, { force: true });
      throw e;
    }
    return { format: o.format, files: [o.dest], events: report.events, badLines: report.badLines, badLineSamples: report.badLineSamples, perfetto: report };
  }
  if (o.format === 'csv') {
    progress({ stage: 'csv', fraction: null, message: 'reading the run' });
    const analyzer = new RunAnalyzer();
    const bad: BadLine[] = [];
    let badLines = 0;
    const onBadLine = (b: BadLine) => {
      badLines++;
      if (bad.length < 20) bad.push(b);
    };
    try {
      await readEventFile(o.logFile, { onEvent: (e) => analyzer.push(e), onBadLine });
    } catch (e) {
      // A damaged .kvscope yields what it could, then says why it stopped: tabulate what was read.
      if (!(e instanceof CodedError && e.code === 'bad_run')) throw e;
      onBadLine({ reason: 'truncated', offset: -1, line: -1, seq: null, message: e.message });
    }
    analyzer.finish();
    const a = analyzer.result();
    const files = await writeCsv(a, o.dest, o.table);
    progress({ stage: 'csv', fraction: 1, message: `wrote ${files.length} table(s)` });
    return { format: 'csv', files, events: a.events, badLines, badLineSamples: bad };
  }
  // kvscope: the exact bytes; a bad line is carried as is (import restores the log byte for byte).
  const r = await writeKvscopeFile(o.logFile, o.meta, o.dest, (done, total) =>
    progress({ stage: 'kvscope', fraction: total ? done / total : null, message: `${done} of ${total} bytes` }),
  );
  void r;
  return { format: 'kvscope', files: [o.dest], events: 0, badLines: 0, badLineSamples: [] };
}
