/**
 * The local runs library: one folder per run under the runs folder, holding `events.jsonl`
 * (append-only, exactly the agent's bytes) and `meta.json` (host, remote_dir, status, timings).
 * Bundled sample runs (resources/samples/*.jsonl.gz) are listed read-only beside them.
 */
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { LoadedRun, RunIndexBytes, RunListing } from '../../shared/api';
import type { BadLine } from '../../shared/events-reader';
import type { KvEvent } from '../../shared/protocol';
import { CodedError } from '../../shared/result';
import { RunAnalyzer, type RunAnalysis } from '../../shared/run-analysis';
import { readEventFile } from './event-files';
import { INDEX_FILE, RunIndexStore, type IndexProgress, type IndexTarget } from './run-index-store';

/** meta.json of a run folder. Unknown keys are kept when rewritten. */
export interface RunMeta {
  id: string;
  name: string;
  host: string;
  status: RunListing['status'];
  createdAt: string;
  endedAt?: string;
  /** The run folder on the GPU host, for resuming a tail. */
  remote_dir?: string;
  /** Bytes of events.jsonl known complete (a tail resumes here). */
  bytes_received?: number;
  last_seq?: number;
  error?: { code: string; message: string };
  [extra: string]: unknown;
}

const SAMPLE_PREFIX = 'sample:';
const RUN_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** Rejects ids that could escape the runs folder. */
export function checkRunId(id: string): void {
  if (!RUN_ID_RE.test(id) || id === '.' || id === '..') throw new CodedError('invalid_argument', `not a run id: ${JSON.stringify(id)}`);
}

/** What a listing takes from a run's log: cached by the log's size and mtime, never by its meta. */
type LogFacts = Pick<RunAnalysis, 'start' | 'status' | 'e2e_ns' | 'error' | 'moves'> & { users: { length: number }; ttft: { mean: number | null }; serviceTtft: { mean: number | null } };

const factsOf = (a: RunAnalysis): LogFacts => ({
  start: a.start,
  status: a.status,
  e2e_ns: a.e2e_ns,
  error: a.error,
  moves: a.moves,
  users: { length: a.users.length },
  ttft: { mean: a.ttft.mean },
  serviceTtft: { mean: a.serviceTtft.mean },
});

/** Whether `resume` can follow a run again: incomplete, started on a host from this machine, not imported. */
export function isResumable(meta: RunMeta): boolean {
  return meta.status === 'incomplete' && meta.imported_from === undefined && typeof meta.remote_dir === 'string' && meta.remote_dir.length > 0;
}

export class RunStore {
  /**
   * Facts read from each run's log, keyed by the log's mtime and size only: a listing is those
   * facts plus meta.json (name, status, host), which is re-read every time and costs no log read,
   * whatever it says (an `error` meta over a log without run.end included).
   */
  private readonly cache = new Map<string, { mtimeMs: number; size: number; facts: LogFacts }>();
  /** Each run's index (docs/run-index.md): lists and opens read it instead of the log. */
  readonly index = new RunIndexStore();

  constructor(
    readonly runsDir: string,
    readonly samplesDir: string | null,
  ) {}

  async ensure(): Promise<void> {
    await mkdir(this.runsDir, { recursive: true });
  }

  runDir(id: string): string {
    checkRunId(id);
    return join(this.runsDir, id);
  }

  /** The log file behind a run id (a sample's .jsonl.gz, or a folder's events.jsonl). */
  async logPath(id: string): Promise<string> {
    if (id.startsWith(SAMPLE_PREFIX)) {
      const name = id.slice(SAMPLE_PREFIX.length);
      checkRunId(name);
      if (!this.samplesDir) throw new CodedError('not_found', `no bundled samples folder`);
      return join(this.samplesDir, `${name}.jsonl.gz`);
    }
    return join(this.runDir(id), 'events.jsonl');
  }

  /** Where a run's log and index are; a run another process still follows is indexed in memory only. */
  async indexTarget(id: string, meta?: RunMeta): Promise<IndexTarget> {
    const log = await this.logPath(id);
    if (id.startsWith(SAMPLE_PREFIX)) return { log, index: join(this.runsDir, '.index', `${id.slice(SAMPLE_PREFIX.length)}.kvindex`), persist: true };
    const m = meta ?? (await this.readMeta(id));
    return { log, index: join(this.runDir(id), INDEX_FILE), persist: m.status !== 'running' };
  }

  async readMeta(id: string): Promise<RunMeta> {
    const file = join(this.runDir(id), 'meta.json');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      throw new CodedError('not_found', `run ${id} has no meta.json`);
    }
    try {
      return JSON.parse(text) as RunMeta;
    } catch (e) {
      throw new CodedError('bad_run', `run ${id}: meta.json is not JSON (${(e as Error).message})`);
    }
  }

  /** Writes meta.json atomically (write a temp file, then rename over). */
  async writeMeta(meta: RunMeta): Promise<void> {
    const dir = this.runDir(meta.id);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.meta.json.${process.pid}.tmp`);
    await writeFile(tmp, JSON.stringify(meta, null, 2) + '\n');
    await rename(tmp, join(dir, 'meta.json'));
  }

  async list(): Promise<RunListing[]> {
    const out: RunListing[] = [];
    if (this.samplesDir) {
      let names: string[] = [];
      try {
        names = (await readdir(this.samplesDir)).filter((n) => n.endsWith('.jsonl.gz')).sort();
      } catch {
        names = [];
      }
      for (const n of names) {
        const id = SAMPLE_PREFIX + basename(n, '.jsonl.gz');
        out.push(await this.listingFor(id, { id, name: basename(n, '.jsonl.gz'), host: 'sample', status: 'ok', createdAt: '' }, true));
      }
    }
    let dirs: string[] = [];
    try {
      dirs = await readdir(this.runsDir);
    } catch {
      dirs = [];
    }
    for (const d of dirs.sort()) {
      if (!RUN_ID_RE.test(d)) continue;
      let meta: RunMeta;
      try {
        meta = await this.readMeta(d);
      } catch {
        continue;
      }
      out.push(await this.listingFor(d, meta, false));
    }
    return out;
  }

  private async listingFor(id: string, meta: RunMeta, bundled: boolean): Promise<RunListing> {
    const file = await this.logPath(id);
    let s;
    try {
      s = await stat(file);
    } catch {
      return baseListing(id, meta, bundled, null);
    }
    const hit = this.cache.get(id);
    if (hit && hit.mtimeMs === s.mtimeMs && hit.size === s.size) return baseListing(id, meta, bundled, hit.facts);
    const facts = factsOf(await this.index.analysis(await this.indexTarget(id, meta)));
    this.cache.set(id, { mtimeMs: s.mtimeMs, size: s.size, facts });
    return baseListing(id, meta, bundled, facts);
  }

  private async metaOf(id: string): Promise<RunMeta> {
    return id.startsWith(SAMPLE_PREFIX) ? { id, name: id.slice(SAMPLE_PREFIX.length), host: 'sample', status: 'ok', createdAt: '' } : this.readMeta(id);
  }

  /**
   * Builds the index of a run that stopped being followed (docs/run-index.md: built when a run
   * ends), so its first open reads it; does nothing when it is there. A failure only leaves it to
   * be built at that open.
   */
  async ensureIndex(id: string): Promise<void> {
    try {
      await this.index.analysis(await this.indexTarget(id));
    } catch {
      // built at the next open instead
    }
  }

  /**
   * The run as the window opens it: its listing and its index (built first when missing or stale,
   * `onProgress` hearing how far through the log).
   */
  async loadIndex(id: string, onProgress?: IndexProgress): Promise<RunIndexBytes> {
    const meta = await this.metaOf(id);
    const target = await this.indexTarget(id, meta);
    const { bytes, analysis } = await this.index.windowBytes(target, onProgress);
    return { listing: baseListing(id, meta, id.startsWith(SAMPLE_PREFIX), analysis), index: bytes };
  }

  /** The run from its log: every event (the export, `loadRun`, and the index's own tests read this). */
  async load(id: string): Promise<LoadedRun> {
    const meta = await this.metaOf(id);
    const file = await this.logPath(id);
    const events: KvEvent[] = [];
    const badLines: BadLine[] = [];
    let badLineTotal = 0;
    const analyzer = new RunAnalyzer();
    await readEventFile(file, {
      onEvent: (e) => {
        events.push(e);
        analyzer.push(e);
      },
      onBadLine: (b) => {
        badLineTotal++;
        if (badLines.length < 1000) badLines.push(b);
      },
    });
    analyzer.finish();
    const analysis = analyzer.result();
    return { listing: baseListing(id, meta, id.startsWith(SAMPLE_PREFIX), analysis), events, badLines, badLineTotal, analysis };
  }
}

function baseListing(id: string, meta: RunMeta, bundled: boolean, a: LogFacts | null): RunListing {
  const cfg = a?.start?.config;
  // What the app asked for (meta.json's workload), for a run that failed before its run.start line.
  const asked = (meta.workload && typeof meta.workload === 'object' ? meta.workload : {}) as { model?: unknown; users?: unknown; rounds?: unknown };
  // The log's run.end when it has one; else a failure or cancel the app recorded (the agent never
  // wrote run.end); "ok" only with the log's word for it.
  const ended = a && a.status !== 'incomplete' ? a.status : null;
  const status: RunListing['status'] =
    meta.status === 'running' || meta.status === 'incomplete' ? meta.status : (ended ?? (meta.status === 'error' || meta.status === 'cancelled' ? meta.status : 'incomplete'));
  const error = a?.error ?? meta.error ?? null;
  return {
    id,
    name: meta.name ?? id,
    host: meta.host ?? 'local',
    status,
    createdAt: meta.createdAt || (a?.start ? new Date(a.start.clock.unix_ns_at_t0 / 1e6).toISOString() : ''),
    model: typeof cfg?.model === 'string' ? cfg.model : typeof asked.model === 'string' ? asked.model : null,
    // A run with no run.start has no users yet: what was asked, never the 0 users seen.
    users: typeof cfg?.users === 'number' ? cfg.users : typeof asked.users === 'number' ? asked.users : a?.users.length ? a.users.length : null,
    rounds: typeof cfg?.rounds === 'number' ? cfg.rounds : typeof asked.rounds === 'number' ? asked.rounds : null,
    engine: a?.start?.engine.name ?? null,
    gpu: a?.start?.host.gpus[0]?.name ?? null,
    e2e_ns: a?.e2e_ns ?? null,
    ttft_ns_mean: a?.ttft.mean ?? null,
    service_ttft_ns_mean: a?.serviceTtft.mean ?? null,
    error: status === 'error' && error ? `${error.code}: ${error.message}` : null,
    bundled,
    context_tokens: typeof cfg?.context_tokens === 'number' ? cfg.context_tokens : null,
    gpu_kv_bytes: typeof cfg?.gpu_kv_bytes === 'number' ? cfg.gpu_kv_bytes : null,
    host_kv_bytes: typeof cfg?.host_kv_bytes === 'number' ? cfg.host_kv_bytes : null,
    disk_kv_bytes: typeof cfg?.disk_kv_bytes === 'number' ? cfg.disk_kv_bytes : null,
    tier_moves: a?.moves ? { ...a.moves } : null,
    simulated: simulatedInfo(a),
    resumable: !bundled && isResumable(meta),
  };
}

/** run.start `simulated` (docs/whatif.md) as the library lists it; null for a measured run. */
function simulatedInfo(a: LogFacts | null): RunListing['simulated'] {
  const s = a?.start?.simulated;
  if (!s || typeof s !== 'object' || !s.profile || !s.source) return null;
  return {
    profile: String(s.profile.id),
    profileName: String(s.profile.name),
    sourceRunIds: Array.isArray(s.source.run_ids) ? s.source.run_ids.map(String) : [],
    sourceGpu: typeof s.source.gpu === 'string' ? s.source.gpu : null,
    range: simulatedRange(s.range),
  };
}

/** run.start `simulated.range`, where both pairs are two finite numbers, low first; else null. */
function simulatedRange(r: unknown): NonNullable<RunListing['simulated']>['range'] {
  const pair = (v: unknown): [number, number] | null =>
    Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x)) && v[0] <= v[1] ? [v[0] as number, v[1] as number] : null;
  if (!r || typeof r !== 'object') return null;
  const e2e = pair((r as Record<string, unknown>).e2e_ns);
  const ttft = pair((r as Record<string, unknown>).ttft_ns_mean);
  return e2e && ttft ? { e2e_ns: e2e, ttft_ns_mean: ttft } : null;
}
