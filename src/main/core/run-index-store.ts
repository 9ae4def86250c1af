/**
 * Run indexes on disk (docs/run-index.md): one file per run, built once from the run's log and
 * read instead of it afterwards. A run folder keeps its index beside its log
 * (`<run>/events.kvindex`); a bundled sample, whose folder may be read-only, keeps it in the runs
 * folder (`<runs>/.index/<sample>.kvindex`).
 *
 * An index is trusted only while it was built from the log as it is now (same size, modification
 * time and last bytes) and is of this app's format; otherwise it is rebuilt from the log. An index
 * that cannot be written (a read-only folder, a full disk) is still built and used, in memory.
 * While a run is followed by this process, its index lives in memory and grows with every event
 * (`startLive`), so a running run opens from it as fast as a finished one.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import type { BadLine } from '../../shared/events-reader';
import type { KvEvent } from '../../shared/protocol';
import type { RunAnalysis } from '../../shared/run-analysis';
import { encodeRunIndex, runIndexHeader, RunIndexBuilder, type RunIndexContent, type RunIndexSource } from '../../shared/run-index/run-index';
import { readEventFile } from './event-files';

/** The index file beside a run folder's events.jsonl. */
export const INDEX_FILE = 'events.kvindex';
/** Bytes at the end of a log that its fingerprint covers (a .gz ends with its CRC and length). */
const TAIL_BYTES = 16 << 10;

/**
 * Size, modification and change times, and a hash of the last bytes of a log: what an index must
 * match. Any write to the log moves its change time (which no program can set back), so an index
 * is never read for a log that changed after it was built; copying a run also moves it, and costs
 * one rebuild.
 */
export async function logSource(logPath: string): Promise<RunIndexSource> {
  const fh = await open(logPath, 'r');
  try {
    const s = await fh.stat();
    const n = Math.min(TAIL_BYTES, s.size);
    const buf = Buffer.alloc(n);
    if (n > 0) await fh.read(buf, 0, n, s.size - n);
    return { logSize: s.size, logMtimeMs: s.mtimeMs, logCtimeMs: s.ctimeMs, logTail: createHash('sha256').update(buf).digest('hex').slice(0, 32) };
  } finally {
    await fh.close();
  }
}

export function sameSource(a: RunIndexSource | null, b: RunIndexSource): boolean {
  return !!a && a.logSize === b.logSize && a.logMtimeMs === b.logMtimeMs && a.logCtimeMs === b.logCtimeMs && a.logTail === b.logTail;
}

const deflate = (bytes: Uint8Array) => deflateRawSync(bytes, { level: 6 });

/** The index file form of `content`, built from the log `source` describes. */
export function compactIndex(content: RunIndexContent, source: RunIndexSource): Uint8Array {
  return encodeRunIndex(content, source, { compact: true, deflate, crc32 });
}


/** Where a log is and where its index goes; `persist: false` keeps a built index in memory only. */
export interface IndexTarget {
  log: string;
  index: string;
  /** False while another process may still append to the log (a run followed elsewhere). */
  persist: boolean;
}

export type IndexProgress = (fraction: number) => void;

export class RunIndexStore {
  /** Builds in progress, by index path: two opens of one run build once. */
  private readonly building = new Map<string, Promise<{ content: RunIndexContent; bytes: Uint8Array }>>();
  /** Indexes of runs this process follows, by log path. */
  private readonly live = new Map<string, RunIndexBuilder>();

  /**
   * An empty index for a run that is starting (followed elsewhere, `persist: false`) and has no
   * log yet: it opens empty and fills from the events pushed to the window. Null otherwise.
   */
  private async notStartedYet(t: IndexTarget): Promise<RunIndexBuilder | null> {
    if (t.persist) return null;
    try {
      await stat(t.log);
      return null;
    } catch (e) {
      return (e as { code?: string }).code === 'ENOENT' ? new RunIndexBuilder() : null;
    }
  }

  /** The run's analysis, from its index's header; builds the index when it is missing or stale. */
  async analysis(t: IndexTarget): Promise<RunAnalysis> {
    const live = this.live.get(t.log) ?? (await this.notStartedYet(t));
    if (live) return live.content().analysis;
    const source = await logSource(t.log);
    const header = await readHeader(t.index);
    if (header && sameSource(header.source, source)) return header.analysis;
    return (await this.build(t, source)).content.analysis;
  }

  /**
   * The run's index as the window is sent it, with its analysis: the index file's bytes as they
   * are (fresh, checksum checked), or one built now from the log; a run followed here, its
   * in-memory index in the plain form, with its analyzer's state, so the window analyses the lines
   * pushed after from there rather than reading the log again.
   */
  async windowBytes(t: IndexTarget, onProgress?: IndexProgress): Promise<{ bytes: Uint8Array; analysis: RunAnalysis }> {
    const live = this.live.get(t.log) ?? (await this.notStartedYet(t));
    if (live) {
      const content = live.content({ withAnalyzer: true });
      return { bytes: encodeRunIndex(content, null, { compact: false }), analysis: content.analysis };
    }
    const source = await logSource(t.log);
    const file = await readFile(t.index).catch(() => null);
    if (file) {
      try {
        const header = runIndexHeader(file, { crc32 });
        if (sameSource(header.source, source)) return { bytes: file, analysis: header.analysis };
      } catch {
        // Not a whole, undamaged index of this format: rebuilt below, never read.
      }
    }
    const built = await this.build(t, source, onProgress);
    return { bytes: built.bytes, analysis: built.content.analysis };
  }

  /** Builds the index from the log (once at a time per index) and writes it where it can. */
  build(t: IndexTarget, source?: RunIndexSource, onProgress?: IndexProgress): Promise<{ content: RunIndexContent; bytes: Uint8Array }> {
    let p = this.building.get(t.index);
    if (!p) {
      p = this.buildNow(t, source, onProgress).finally(() => this.building.delete(t.index));
      this.building.set(t.index, p);
    }
    return p;
  }

  private async buildNow(t: IndexTarget, known: RunIndexSource | undefined, onProgress?: IndexProgress): Promise<{ content: RunIndexContent; bytes: Uint8Array }> {
    const source = known ?? (await logSource(t.log));
    const builder = new RunIndexBuilder();
    let last = 0;
    await readEventFile(
      t.log,
      { onEvent: (e) => builder.push(e), onBadLine: (b) => builder.badLine(b) },
      onProgress &&
        ((read) => {
          const f = source.logSize > 0 ? Math.min(1, read / source.logSize) : 1;
          if (f - last >= 0.02) {
            last = f;
            onProgress(f);
          }
        }),
    );
    builder.finish();
    const content = builder.content();
    const bytes = compactIndex(content, source);
    // The log changed while it was read (a run followed elsewhere): use what was read, keep nothing.
    const after = await logSource(t.log).catch(() => null);
    if (t.persist && after && sameSource(after, source)) await writeIndex(t.index, bytes).catch(() => undefined);
    return { content, bytes };
  }

  /**
   * Starts the in-memory index of a run this process follows, from what its log holds so far;
   * feed it every later event and bad line, then `stopLive`.
   */
  async startLive(log: string): Promise<LiveIndex> {
    const builder = new RunIndexBuilder();
    try {
      await readEventFile(log, { onEvent: (e) => builder.push(e), onBadLine: (b) => builder.badLine(b) });
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e;
    }
    this.live.set(log, builder);
    return {
      push: (e: KvEvent) => builder.push(e),
      badLine: (b: BadLine) => builder.badLine(b),
    };
  }

  /** The run is no longer followed by this process: opens read (or build) its index file again. */
  stopLive(log: string): void {
    this.live.delete(log);
  }
}

export interface LiveIndex {
  push(e: KvEvent): void;
  badLine(b: BadLine): void;
}

/** Writes an index atomically (temp file, then rename over), creating its folder. */
async function writeIndex(path: string, bytes: Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/** An index file's analysis and source, its checksum checked, no column decoded; null if unreadable. */
async function readHeader(path: string): Promise<{ analysis: RunAnalysis; source: RunIndexSource | null } | null> {
  try {
    return runIndexHeader(await readFile(path), { crc32 });
  } catch {
    return null;
  }
}

