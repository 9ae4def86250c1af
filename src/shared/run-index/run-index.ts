/**
 * A run's index (docs/run-index.md): what every view needs from a run, built once from its log —
 * the replay model's typed columns (block moves with their pool cells, copies per source and
 * direction, requests, GPU samples), the run analysis, the bad lines — so that opening a run reads
 * this instead of decoding and validating every line again.
 *
 * Two forms: `compact` (delta varints, deflate, a checksum) is the file kept beside the log, and
 * the window is sent that file as it is; the plain form (raw columns, read in place) is what a run
 * still being followed is sent, as encoding it is a copy and nothing more.
 */
import type { BadLine } from '../events-reader';
import type { KvEvent } from '../protocol';
import { ReplayModel, type ReplayState } from '../replay';
import { RunAnalyzer, type RunAnalysis, type RunAnalyzerState } from '../run-analysis';
import { decodeColumnFile, decodeColumnFileAsync, encodeColumnFile, readColumnFileHeader, type DecodeOptions, type TypedColumn } from './column-file';

/**
 * The index format. Bump it whenever what an index holds, or how a model is compiled from a log,
 * changes: an index of another format is never read, only rebuilt from its log.
 */
export const RUN_INDEX_FORMAT = 2;

/** The log an index was built from: an index whose log no longer matches is stale. */
export interface RunIndexSource {
  /** Bytes of the log file as stored (compressed bytes for a .gz). */
  logSize: number;
  logMtimeMs: number;
  /** The log's inode change time (moved by every write, and by nothing a program can set back). */
  logCtimeMs: number;
  /** A fingerprint of the log's last bytes (see run-index-store.ts), so a rewrite of equal size is caught. */
  logTail: string;
}

/** What an index holds. */
export interface RunIndexContent {
  analysis: RunAnalysis;
  /** The first bad lines (at most BAD_LINES_KEPT) and how many there were. */
  badLines: BadLine[];
  badLineTotal: number;
  /** Valid events in the log. */
  eventCount: number;
  replay: ReplayModel;
  /**
   * The analyzer that made `analysis`, part-way (a run this process follows, in the plain form
   * only): a window that opened the run goes on feeding it the lines pushed after. Null otherwise.
   */
  analyzer: RunAnalyzerState | null;
}

/** Bad lines kept in full (the rest are counted), as RunStore.load keeps them. */
export const BAD_LINES_KEPT = 1000;

interface IndexMeta {
  source: RunIndexSource | null;
  analysis: RunAnalysis;
  badLines: BadLine[];
  badLineTotal: number;
  eventCount: number;
  replay: Omit<ReplayState, 'columns' | 'blockIds'>;
  /** Block ids when any is a string; otherwise they are the `blockIds` column. */
  blockIdsJson: Array<string | number> | null;
  /** RunIndexContent.analyzer; absent from a file. */
  analyzer?: RunAnalyzerState | null;
}

/** Consumes a log's events (seq order) and bad lines; `content()` at any point (a live run). */
export class RunIndexBuilder {
  readonly analyzer = new RunAnalyzer();
  readonly replay = new ReplayModel();
  readonly badLines: BadLine[] = [];
  badLineTotal = 0;
  eventCount = 0;
  private batch: KvEvent[] = [];

  push(e: KvEvent): void {
    this.eventCount++;
    this.analyzer.push(e);
    this.batch.push(e);
    if (this.batch.length >= 4096) this.flush();
  }

  badLine(b: BadLine): void {
    this.badLineTotal++;
    if (this.badLines.length < BAD_LINES_KEPT) this.badLines.push(b);
  }

  private flush(): void {
    if (this.batch.length === 0) return;
    this.replay.append(this.batch);
    this.batch = [];
  }

  /** The log is complete: whole-run rules apply (RunAnalyzer.finish). */
  finish(): void {
    this.flush();
    this.analyzer.finish();
  }

  /**
   * The index of everything pushed so far; `withAnalyzer`: with the analyzer's state, for a window
   * that will feed it the lines still to come (a run being followed).
   */
  content(options: { withAnalyzer?: boolean } = {}): RunIndexContent {
    this.flush();
    return {
      analysis: this.analyzer.result(),
      badLines: [...this.badLines],
      badLineTotal: this.badLineTotal,
      eventCount: this.eventCount,
      replay: this.replay,
      analyzer: options.withAnalyzer ? this.analyzer.state : null,
    };
  }
}

export interface EncodeRunIndexOptions {
  /** The file form: varints, deflate and a checksum (pass `deflate`, `crc32`); else the plain form the window maps in place. */
  compact: boolean;
  deflate?: (bytes: Uint8Array) => Uint8Array;
  crc32?: (bytes: Uint8Array) => number;
}

export function encodeRunIndex(content: RunIndexContent, source: RunIndexSource | null, options: EncodeRunIndexOptions): Uint8Array {
  const { columns, blockIds, ...scalars } = content.replay.toState();
  const numericIds = blockIds.every((id) => typeof id === 'number');
  const list: Array<[string, TypedColumn]> = Object.entries(columns);
  if (numericIds) list.push(['blockIds', Float64Array.from(blockIds as number[])]);
  const meta: IndexMeta = {
    source,
    analysis: content.analysis,
    badLines: content.badLines,
    badLineTotal: content.badLineTotal,
    eventCount: content.eventCount,
    replay: scalars,
    blockIdsJson: numericIds ? null : blockIds,
    ...(content.analyzer ? { analyzer: content.analyzer } : {}),
  };
  return encodeColumnFile(RUN_INDEX_FORMAT, meta, list, { varint: options.compact, deflate: options.compact ? options.deflate : undefined, crc32: options.compact ? options.crc32 : undefined });
}

/**
 * Reads an index. Throws (ColumnFileError, or Error for a column that is missing) on bytes that
 * are not a whole index of this format, or, given `crc32`, whose checksum does not match: the
 * caller then rebuilds it from the log.
 */
export function decodeRunIndex(bytes: Uint8Array, options: DecodeOptions = {}): DecodedRunIndex {
  const { meta, columns } = decodeColumnFile<IndexMeta>(bytes, RUN_INDEX_FORMAT, options);
  return fromColumns(meta, columns);
}

/** decodeRunIndex with an asynchronous inflater: how the window reads an index file's bytes. */
export async function decodeRunIndexAsync(bytes: Uint8Array, inflate: (bytes: Uint8Array) => Promise<Uint8Array>): Promise<DecodedRunIndex> {
  const { meta, columns } = await decodeColumnFileAsync<IndexMeta>(bytes, RUN_INDEX_FORMAT, inflate);
  return fromColumns(meta, columns);
}

export interface DecodedRunIndex {
  content: RunIndexContent;
  source: RunIndexSource | null;
}

function fromColumns(meta: IndexMeta, columns: Map<string, TypedColumn>): DecodedRunIndex {
  const ids = meta.blockIdsJson ?? Array.from(columns.get('blockIds') ?? []);
  const state: ReplayState = { ...meta.replay, blockIds: ids, columns: Object.fromEntries(columns) };
  const replay = ReplayModel.fromState(state);
  return {
    content: { analysis: meta.analysis, badLines: meta.badLines, badLineTotal: meta.badLineTotal, eventCount: meta.eventCount, replay, analyzer: meta.analyzer ?? null },
    source: meta.source,
  };
}

/** What an index's header holds, without decoding a column. */
export interface RunIndexHeader {
  analysis: RunAnalysis;
  source: RunIndexSource | null;
  /** RunIndexContent.analyzer. */
  analyzer: RunAnalyzerState | null;
  /** The seq of the last line the index holds (-1: none). */
  lastSeq: number;
}

/** The analysis and source an index holds (the runs list needs no more), its analyzer and last seq. */
export function runIndexHeader(bytes: Uint8Array, options: Pick<DecodeOptions, 'crc32'> = {}): RunIndexHeader {
  const meta = readColumnFileHeader<IndexMeta>(bytes, RUN_INDEX_FORMAT, options).meta;
  return { analysis: meta.analysis, source: meta.source, analyzer: meta.analyzer ?? null, lastSeq: meta.replay.lastSeq };
}
