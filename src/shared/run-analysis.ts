/**
 * One pass over a run's events that yields what `kvscope validate`, the run summary view and the
 * CSV export all print: events by type, users, rounds, block moves, peak pool occupancy, TTFT and
 * E2E. Memory grows with the number of requests (users × rounds), never with the number of events.
 */
import { BlockLedger, copied, type BlockLedgerState } from './ledger';
import { blockMove, isCopyDir, type CopyDir, type DiskDir, type KvEvent, type PoolName, type RequestPhaseTimes, type RunEndEvent, type RunStartEvent, type TtftParts } from './protocol';
import { StartupCopyRule } from './startup-copies';

export interface RequestTiming extends RequestPhaseTimes {
  prompt_tokens: number | null;
  output_tokens: number | null;
  reused_gpu_tokens: number | null;
  reused_host_tokens: number | null;
  /** Prompt tokens promoted from a disk tier (a v2 log's `done`), null where the log does not say. */
  reused_disk_tokens: number | null;
  computed_tokens: number | null;
  /** Where the TTFT went, as the engine recorded it on `first_token` (docs/protocol.md), or null where it did not. */
  ttft_parts: TtftParts | null;
  /** Blocks the log moved host → GPU for this request (its user and round on the blocks line). */
  blocks_onboarded: number;
  /** Queued TTFT: first_token − queued, ns (docs/protocol.md), the seed benchmark's TTFT. */
  ttft_ns: number | null;
  /** Service TTFT: first_token − scheduled (admitted), ns: the time to first token once the engine took the request. */
  service_ttft_ns: number | null;
}

export interface Distribution {
  count: number;
  mean: number | null;
  p50: number | null;
  p99: number | null;
}

export interface RoundRow {
  round: number;
  users: number;
  /** First queued to last done within the round, ns. */
  e2e_ns: number | null;
  /** Queued TTFT (queued → first token). */
  ttft: Distribution;
  /** Service TTFT (admitted → first token). */
  serviceTtft: Distribution;
}

export interface RunAnalysis {
  runId: string | null;
  eventsByType: Record<string, number>;
  events: number;
  users: number[];
  rounds: number[];
  /** Blocks stored, moved gpu → host (offloaded) and host → gpu (onboarded), evicted from any pool, hit. */
  blocks: { stored: number; offloaded: number; onboarded: number; evicted: number; hit: number };
  /** Blocks moved between each pair of pools, keyed `${from}>${to}` ("gpu>host", "host>disk", …: `ledger.stats.moves`). */
  moves: Record<string, number>;
  /** Most blocks each pool held: gpu and host, and any other pool the run declares (a disk tier). */
  peakOccupancy: Record<PoolName, number>;
  pools: BlockLedger['pools'];
  /** Queued TTFT (queued → first token) over the timed rounds (1..R). */
  ttft: Distribution;
  /** Service TTFT (admitted → first token) over the timed rounds (1..R). */
  serviceTtft: Distribution;
  /** From the first `req queued` of round 1 to the last `req done` of round R, ns. */
  e2e_ns: number | null;
  /** Bytes of every copy (xfer line between memories), whatever its source (CUPTI and engine lines may describe the same copy). */
  xferBytes: Record<CopyDir, number>;
  /** The same, split by `source`: CUPTI's traced copies, and copies the engine reported itself. */
  xferBytesBySource: Record<'cupti' | 'engine', Record<CopyDir, number>>;
  /** Of those, the start-up copies (the plain-copy check, shared/startup-copies.ts): no KV block rides on them. */
  startupXferBytesBySource: Record<'cupti' | 'engine', Record<CopyDir, number>>;
  /** Bytes of cupti transfers inside the `rounds` phase, per direction (docs/protocol.md "Transfers and blocks agree"). */
  roundsXferBytes: Record<CopyDir, number>;
  /** A disk tier's I/O (xfer lines h2f: written, f2h: read), present only when the run has some. */
  diskXferBytes?: Record<DiskDir, number>;
  roundRows: RoundRow[];
  requests: RequestTiming[];
  status: RunEndEvent['status'] | 'incomplete';
  endSummary: RunEndEvent['summary'] | null;
  error: RunEndEvent['error'] | null;
  start: RunStartEvent | null;
  /** Last event time seen, ns. */
  durationNs: number;
}

/** Linear-interpolated percentile (numpy's default), on a sorted array. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

export function distribution(values: readonly number[]): Distribution {
  if (values.length === 0) return { count: 0, mean: null, p50: null, p99: null };
  const sorted = [...values].sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { count: sorted.length, mean, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

const emptyDirs = (): Record<CopyDir, number> => ({ h2d: 0, d2h: 0, d2d: 0, h2h: 0 });

type BySource = Record<'cupti' | 'engine', Record<CopyDir, number>>;

/**
 * Everything an analyzer holds part-way through a log, as plain data (JSON): what a followed run's
 * index carries to the window (docs/run-index.md), so the window goes on analysing the lines that
 * arrive after it opened the run instead of reading the log again.
 */
export interface RunAnalyzerState {
  ledger: BlockLedgerState;
  byType: Record<string, number>;
  /** In the order of their first line. */
  requests: RequestTiming[];
  onboardedFor: Array<[string, number]>;
  users: number[];
  rounds: number[];
  xferBytes: Record<CopyDir, number>;
  xferBySource: BySource;
  startupBySource: BySource;
  startupRule: StartupCopyRule['state'];
  diskXferBytes: Record<DiskDir, number> | null;
  start: RunStartEvent | null;
  end: RunEndEvent | null;
  count: number;
  lastT: number;
  finished: boolean;
}

/** Consumes events in seq order; `result()` may be called at any point (live runs). */
export class RunAnalyzer {
  readonly ledger: BlockLedger;
  private readonly byType: Record<string, number> = {};
  private readonly reqs = new Map<string, RequestTiming>();
  /** Blocks moved host → GPU per request (`user/round`), as blocks lines may come before the request's first req line. */
  private readonly onboardedFor = new Map<string, number>();
  private readonly users = new Set<number>();
  private readonly rounds = new Set<number>();
  private readonly xferBytes = emptyDirs();
  private readonly xferBySource = { cupti: emptyDirs(), engine: emptyDirs() };
  private readonly startupBySource = { cupti: emptyDirs(), engine: emptyDirs() };
  private readonly startupRule = new StartupCopyRule();
  private diskXferBytes: Record<DiskDir, number> | null = null;
  private start: RunStartEvent | null = null;
  private end: RunEndEvent | null = null;
  private count = 0;
  private lastT = 0;
  private finished = false;

  constructor(ledger = new BlockLedger()) {
    this.ledger = ledger;
  }

  /** What the analyzer holds (a copy: later lines do not change it). */
  get state(): RunAnalyzerState {
    return copied<RunAnalyzerState>({
      ledger: this.ledger.state,
      byType: this.byType,
      requests: [...this.reqs.values()],
      onboardedFor: [...this.onboardedFor],
      users: [...this.users],
      rounds: [...this.rounds],
      xferBytes: this.xferBytes,
      xferBySource: this.xferBySource,
      startupBySource: this.startupBySource,
      startupRule: this.startupRule.state,
      diskXferBytes: this.diskXferBytes,
      start: this.start,
      end: this.end,
      count: this.count,
      lastT: this.lastT,
      finished: this.finished,
    });
  }

  /** The analyzer a state describes: fed the lines after it, it ends as one fed the whole log. */
  static fromState(state: RunAnalyzerState): RunAnalyzer {
    const { ledger, byType, requests, onboardedFor, users, rounds, xferBytes, xferBySource, startupBySource, startupRule, ...scalars } = copied(state);
    const a = new RunAnalyzer(BlockLedger.fromState(ledger));
    Object.assign(a.byType, byType);
    for (const r of requests) a.reqs.set(`${r.user}/${r.round}`, r);
    for (const [key, n] of onboardedFor) a.onboardedFor.set(key, n);
    for (const u of users) a.users.add(u);
    for (const r of rounds) a.rounds.add(r);
    Object.assign(a.xferBytes, xferBytes);
    Object.assign(a.xferBySource, xferBySource);
    Object.assign(a.startupBySource, startupBySource);
    a.startupRule.restore(startupRule);
    // diskXferBytes, start, end, count, lastT, finished.
    return Object.assign(a, scalars);
  }

  push(e: KvEvent): void {
    this.count++;
    this.byType[e.type] = (this.byType[e.type] ?? 0) + 1;
    if (e.t > this.lastT) this.lastT = e.t;
    this.ledger.apply(e);
    this.startupRule.observe(e);
    switch (e.type) {
      case 'run.start':
        this.start = e;
        break;
      case 'run.end':
        this.end = e;
        break;
      case 'blocks': {
        const mv = blockMove(e);
        if (mv && mv.from === 'host' && mv.to === 'gpu' && e.user !== undefined && e.round !== undefined) {
          const key = `${e.user}/${e.round}`;
          this.onboardedFor.set(key, (this.onboardedFor.get(key) ?? 0) + e.ids.length);
        }
        break;
      }
      case 'xfer':
        if (!isCopyDir(e.dir)) {
          this.diskXferBytes ??= { h2f: 0, f2h: 0 };
          this.diskXferBytes[e.dir] += e.bytes;
          break;
        }
        this.xferBytes[e.dir] += e.bytes;
        this.xferBySource[e.source][e.dir] += e.bytes;
        if (this.startupRule.isStartup(e)) this.startupBySource[e.source][e.dir] += e.bytes;
        break;
      case 'req': {
        this.users.add(e.user);
        this.rounds.add(e.round);
        const key = `${e.user}/${e.round}`;
        let r = this.reqs.get(key);
        if (!r) {
          r = {
            user: e.user,
            round: e.round,
            queued: null,
            scheduled: null,
            first_token: null,
            done: null,
            prompt_tokens: null,
            output_tokens: null,
            reused_gpu_tokens: null,
            reused_host_tokens: null,
            reused_disk_tokens: null,
            computed_tokens: null,
            ttft_parts: null,
            blocks_onboarded: 0,
            ttft_ns: null,
            service_ttft_ns: null,
          };
          this.reqs.set(key, r);
        }
        r[e.phase] = e.t;
        if (e.phase === 'done') {
          r.prompt_tokens = e.prompt_tokens ?? null;
          r.output_tokens = e.output_tokens ?? null;
          r.reused_gpu_tokens = e.reused_gpu_tokens ?? null;
          r.reused_host_tokens = e.reused_host_tokens ?? null;
          r.reused_disk_tokens = e.reused_disk_tokens ?? null;
          r.computed_tokens = e.computed_tokens ?? null;
        }
        if (e.phase === 'first_token' && e.ttft_parts) r.ttft_parts = e.ttft_parts;
        if (r.queued !== null && r.first_token !== null) r.ttft_ns = r.first_token - r.queued;
        if (r.scheduled !== null && r.first_token !== null) r.service_ttft_ns = r.first_token - r.scheduled;
        break;
      }
      case 'round':
        this.rounds.add(e.round);
        break;
      default:
        break;
    }
  }

  /** The log is complete: apply whole-run rules. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.ledger.finish();
  }

  result(): RunAnalysis {
    const requests = [...this.reqs.values()].sort((a, b) => a.round - b.round || a.user - b.user).map((r) => ({ ...r, blocks_onboarded: this.onboardedFor.get(`${r.user}/${r.round}`) ?? 0 }));
    const timed = requests.filter((r) => r.round >= 1);
    const known = (xs: Array<number | null>) => xs.filter((v): v is number => v !== null);
    const ttfts = known(timed.map((r) => r.ttft_ns));
    const maxRound = timed.reduce((m, r) => Math.max(m, r.round), 0);
    const firstQueued = timed.filter((r) => r.round === 1 && r.queued !== null).map((r) => r.queued as number);
    const lastDone = timed.filter((r) => r.round === maxRound && r.done !== null).map((r) => r.done as number);
    const complete = timed.length > 0 && timed.every((r) => r.done !== null);
    const e2e = complete && firstQueued.length && lastDone.length ? Math.max(...lastDone) - Math.min(...firstQueued) : null;

    const byRound = new Map<number, RequestTiming[]>();
    for (const r of requests) {
      const list = byRound.get(r.round) ?? [];
      list.push(r);
      byRound.set(r.round, list);
    }
    const roundRows: RoundRow[] = [...byRound.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([round, list]) => {
        const q = list.map((r) => r.queued).filter((v): v is number => v !== null);
        const d = list.map((r) => r.done).filter((v): v is number => v !== null);
        const allDone = d.length === list.length;
        return {
          round,
          users: list.length,
          e2e_ns: allDone && q.length ? Math.max(...d) - Math.min(...q) : null,
          ttft: distribution(known(list.map((r) => r.ttft_ns))),
          serviceTtft: distribution(known(list.map((r) => r.service_ttft_ns))),
        };
      });

    const ops = this.ledger.stats.ops;
    return {
      runId: this.start?.run_id ?? null,
      eventsByType: { ...this.byType },
      events: this.count,
      users: [...this.users].sort((a, b) => a - b),
      rounds: [...this.rounds].sort((a, b) => a - b),
      blocks: { stored: ops.store, offloaded: this.ledger.moved('gpu', 'host'), onboarded: this.ledger.moved('host', 'gpu'), evicted: ops.evict, hit: ops.hit },
      moves: { ...this.ledger.stats.moves },
      peakOccupancy: { ...this.ledger.stats.peak },
      pools: this.ledger.pools,
      ttft: distribution(ttfts),
      serviceTtft: distribution(known(timed.map((r) => r.service_ttft_ns))),
      e2e_ns: e2e,
      xferBytes: { ...this.xferBytes },
      xferBytesBySource: { cupti: { ...this.xferBySource.cupti }, engine: { ...this.xferBySource.engine } },
      startupXferBytesBySource: { cupti: { ...this.startupBySource.cupti }, engine: { ...this.startupBySource.engine } },
      roundsXferBytes: this.ledger.roundsXferBytes(),
      ...(this.diskXferBytes ? { diskXferBytes: { ...this.diskXferBytes } } : {}),
      roundRows,
      requests,
      status: this.end?.status ?? 'incomplete',
      endSummary: this.end?.summary ?? null,
      error: this.end?.error ?? null,
      start: this.start,
      durationNs: this.lastT,
    };
  }
}

/** Convenience for an in-memory event list. */
export function analyzeEvents(events: Iterable<KvEvent>): RunAnalysis {
  const a = new RunAnalyzer();
  for (const e of events) a.push(e);
  a.finish();
  return a.result();
}
