/**
 * The timeline model: everything on one run clock, in columns a canvas renderer can walk without
 * allocating — request rows per user (queued → scheduled → first token → done, TTFT), one lane per
 * transfer direction (each copy a bar, and a disk tier's reads and writes; sorted by start with the
 * longest transfer's duration kept so a view window finds every one that overlaps it by binary
 * search), counter tracks (occupancy of every pool, GPU memory, utilisation, PCIe rx/tx) and round
 * boundaries. Pure; built once per run (or appended
 * to on a live tail by rebuilding lanes lazily).
 */
import { poolTitle, type BlockOp, type CopyDir, type KvEvent, type RequestPhaseTimes, type XferDir } from './protocol';
import { compileReplay, decodeCopyRef, lowerBound, OP_BY_CODE, OP_CODE, type ReplayModel, type StartupCopies } from './replay';

export interface XferLane {
  /** A copy's direction, or a disk tier's (f2h: reads, h2f: writes). */
  dir: XferDir;
  start: Float64Array;
  end: Float64Array;
  bytes: Float64Array;
  /** Each copy's xfer line. */
  seq: Float64Array;
  length: number;
  /** Longest copy in the lane (ns): a window [a, b] needs copies with start ≥ a − maxDur. */
  maxDur: number;
  totalBytes: number;
  /** Lane index of each copy of the replay's columns (log order); null when they are the same. */
  laneOfColumn: Uint32Array | null;
}

export interface CounterTrack {
  /** `<pool>_pool` per pool (gpu_pool, host_pool, disk_pool, …), then the GPU's own samples. */
  key: `${string}_pool` | 'gpu_mem' | 'gpu_util' | 'pcie_rx' | 'pcie_tx';
  label: string;
  unit: 'blocks' | 'bytes' | 'pct' | 'bytes/s';
  t: Float64Array;
  v: Float64Array;
  length: number;
  /** Top of the track's scale (capacity for pools, 100 for %, max seen otherwise). */
  max: number;
  /**
   * What `max` is, so its label says so: a pool's capacity or the card's memory ("of …"), the
   * largest value seen ("peak …"; a host pool far larger than the run used), or 100%.
   */
  scale: 'capacity' | 'peak' | 'percent';
  /** Values hold until the next sample (pool sizes) rather than being points on a line. */
  step: boolean;
}

export interface RequestBar extends RequestPhaseTimes {
  /** Queued TTFT (queued → first token) and service TTFT (admitted → first token), ns. */
  ttft_ns: number | null;
  service_ttft_ns: number | null;
  /** Times of the request's onboard and offload lines (its blocks coming back from, going to, host). */
  onboards: number[];
  offloads: number[];
}

export interface TimelineModel {
  t0: number;
  t1: number;
  users: number[];
  requests: RequestBar[];
  lanes: XferLane[];
  counters: CounterTrack[];
  /** Start of each round: its first `req queued`. */
  rounds: Array<{ round: number; t: number }>;
  blockBytes: number | null;
  /** Start-up copies (the plain-copy check), kept out of the lanes: never KV traffic. */
  startupCopies: Readonly<Record<CopyDir, StartupCopies>>;
}

function laneFrom(dir: XferDir, starts: Float64Array, ends: Float64Array, bytes: Float64Array, seqs: Float64Array, n: number): XferLane {
  let sorted = true;
  let endsAfterStarts = true;
  for (let i = 0; i < n; i++) {
    if (i > 0 && starts[i]! < starts[i - 1]!) sorted = false;
    if (!(ends[i]! >= starts[i]!)) endsAfterStarts = false;
  }
  let maxDur = 0;
  let total = 0;
  if (sorted && endsAfterStarts) {
    // Already a lane (the usual case): its columns are the copies' own, shared, not copied.
    for (let i = 0; i < n; i++) {
      const d = ends[i]! - starts[i]!;
      if (d > maxDur) maxDur = d;
      total += bytes[i]!;
    }
    return { dir, start: starts.subarray(0, n), end: ends.subarray(0, n), bytes: bytes.subarray(0, n), seq: seqs.subarray(0, n), length: n, maxDur, totalBytes: total, laneOfColumn: null };
  }
  let order: Uint32Array | null = null;
  if (!sorted) {
    // CUPTI flushes per stream, so copies of two streams interleave out of start order.
    order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => starts[a]! - starts[b]!);
  }
  let laneOfColumn: Uint32Array | null = null;
  if (order) {
    laneOfColumn = new Uint32Array(n);
    for (let k = 0; k < n; k++) laneOfColumn[order[k]!] = k;
  }
  const lane: XferLane = { dir, start: new Float64Array(n), end: new Float64Array(n), bytes: new Float64Array(n), seq: new Float64Array(n), length: n, maxDur: 0, totalBytes: 0, laneOfColumn };
  for (let k = 0; k < n; k++) {
    const i = order ? order[k]! : k;
    const s = starts[i]!;
    const e0 = ends[i]!;
    const e = e0 > s ? e0 : s;
    lane.start[k] = s;
    lane.end[k] = e;
    lane.bytes[k] = bytes[i]!;
    lane.seq[k] = seqs[i]!;
    if (e - s > maxDur) maxDur = e - s;
    total += bytes[i]!;
  }
  lane.maxDur = maxDur;
  lane.totalBytes = total;
  return lane;
}

/**
 * Builds the model from a run's compiled replay, which already holds every copy in typed columns,
 * the requests and the nvidia-smi samples (one pass over the events, done once when the run
 * opens); `events` is compiled here only when no replay is given.
 */
export function buildTimelineModel(events: readonly KvEvent[], replay: ReplayModel | null): TimelineModel {
  const r = replay ?? compileReplay(events);
  let t0 = r.minT;
  let t1 = r.endT;
  if (!Number.isFinite(t0)) {
    t0 = 0;
    t1 = 1;
  }
  if (t1 <= t0) t1 = t0 + 1;
  const laneOrder: CopyDir[] = ['h2d', 'd2h', 'd2d', 'h2h'];
  const lanes = laneOrder
    .filter((d) => d === 'h2d' || d === 'd2h' || r.xfer[d].start.length > 0)
    .map((d) => {
      const x = r.xfer[d];
      return laneFrom(d, x.start.data, x.end.data, x.bytes.data, x.seq.data, x.start.length);
    });
  // A disk tier's reads and writes, after the copies (the engine's timings: CUPTI cannot see file I/O).
  for (const d of ['f2h', 'h2f'] as const) {
    const x = r.diskIo[d];
    if (x.start.length > 0) lanes.push(laneFrom(d, x.start.data, x.end.data, x.bytes.data, x.seq.data, x.start.length));
  }
  // One mark per blocks line (not per block) of each request's onboards and offloads.
  const marks = new Map<string, { onboards: number[]; offloads: number[] }>();
  let lastSeq = -1;
  for (let i = 0; i < r.moveCount; i++) {
    const op = r.op.data[i]!;
    if ((op !== OP_CODE.onboard && op !== OP_CODE.offload) || r.seq.data[i] === lastSeq) continue;
    lastSeq = r.seq.data[i]!;
    const key = `${r.user.data[i]}/${r.round.data[i]}`;
    let m = marks.get(key);
    if (!m) marks.set(key, (m = { onboards: [], offloads: [] }));
    (op === OP_CODE.onboard ? m.onboards : m.offloads).push(r.t.data[i]!);
  }
  const requests: RequestBar[] = [...r.requests.values()]
    .map((q) => ({
      ...q,
      ttft_ns: q.queued !== null && q.first_token !== null ? q.first_token - q.queued : null,
      service_ttft_ns: q.scheduled !== null && q.first_token !== null ? q.first_token - q.scheduled : null,
      onboards: marks.get(`${q.user}/${q.round}`)?.onboards ?? [],
      offloads: marks.get(`${q.user}/${q.round}`)?.offloads ?? [],
    }))
    .sort((a, b) => a.user - b.user || a.round - b.round);
  const users = [...new Set(requests.map((q) => q.user))].sort((a, b) => a - b);
  const firstQueued = new Map<number, number>();
  for (const q of requests) if (q.queued !== null) firstQueued.set(q.round, Math.min(firstQueued.get(q.round) ?? Infinity, q.queued));
  const rounds = [...firstQueued.entries()].sort((a, b) => a[0] - b[0]).map(([round, t]) => ({ round, t }));

  const counters: CounterTrack[] = [...occupancyTracks(r)];
  // gpuSamples values: mem_used_bytes, util_pct, pcie_rx, pcie_tx (NaN where the sample lacks one).
  const series = (k: number) => {
    const ts: number[] = [];
    const vs: number[] = [];
    for (const smp of r.gpuSamples) {
      const v = smp.values[k]!;
      if (!Number.isNaN(v)) {
        ts.push(smp.t);
        vs.push(v);
      }
    }
    return { t: Float64Array.from(ts), v: Float64Array.from(vs), length: ts.length };
  };
  const maxOf = (v: Float64Array) => v.reduce((m, x) => (x > m ? x : m), 0);
  const mem = series(0);
  counters.push({ key: 'gpu_mem', label: 'GPU memory', unit: 'bytes', ...mem, max: r.gpuMemoryTotal ?? Math.max(1, maxOf(mem.v)), scale: r.gpuMemoryTotal ? 'capacity' : 'peak', step: false });
  counters.push({ key: 'gpu_util', label: 'GPU utilisation', unit: 'pct', ...series(1), max: 100, scale: 'percent', step: false });
  const rx = series(2);
  const tx = series(3);
  counters.push({ key: 'pcie_rx', label: 'PCIe rx', unit: 'bytes/s', ...rx, max: Math.max(1, maxOf(rx.v)), scale: 'peak', step: false });
  counters.push({ key: 'pcie_tx', label: 'PCIe tx', unit: 'bytes/s', ...tx, max: Math.max(1, maxOf(tx.v)), scale: 'peak', step: false });
  return { t0, t1, users, requests, lanes, counters, rounds, blockBytes: r.pools.gpu?.block_bytes ?? null, startupCopies: r.startupCopies };
}

/** Every pool's block count after each blocks line (a step series per pool), nearest compute first: GPU, host, then a disk tier. */
export function occupancyTracks(replay: ReplayModel): CounterTrack[] {
  const n = replay.moveCount;
  const t = replay.t.data;
  const ef = replay.effect.data;
  const sp = replay.srcPool.data;
  const dp = replay.dstPool.data;
  const grids = replay.gridCount;
  // One sample per time stamp (the last move at that t wins): at most one per move.
  const ts = new Float64Array(n);
  const vs = Array.from({ length: grids }, () => new Float64Array(n));
  let k = 0;
  const c = new Array<number>(grids).fill(0);
  for (let i = 0; i < n; i++) {
    const e = ef[i]!;
    if (e & 1) c[sp[i]!]!--;
    if (e & 2) c[dp[i]!]!++;
    if (i + 1 === n || t[i + 1] !== t[i]) {
      ts[k] = t[i]!;
      for (let g = 0; g < grids; g++) vs[g]![k] = c[g]!;
      k++;
    }
  }
  const times = ts.slice(0, k);
  // The track's top is the pool's capacity, unless the pool is far larger than the run ever used
  // (a 55 GB host pool of small blocks): then the peak, so the line is not flat at the bottom.
  const top = (pool: string, seen: Float64Array): Pick<CounterTrack, 'max' | 'scale'> => {
    const peak = seen.reduce((m, x) => (x > m ? x : m), 0);
    const c = replay.pools[pool]?.capacity_blocks ?? 0;
    return c > 0 && c <= 4 * peak ? { max: c, scale: 'capacity' } : { max: Math.max(1, peak), scale: 'peak' };
  };
  return replay.gridsByTier().map((g) => {
    const pool = replay.gridPools[g]!;
    const v = vs[g]!.slice(0, k);
    return { key: `${pool}_pool` as const, label: poolTitle(pool), unit: 'blocks' as const, t: g === 0 ? times : times.slice(), v, length: k, ...top(pool, v), step: true };
  });
}

/** Indices [i0, i1) of a lane's copies that may overlap [a, b]. */
export function laneWindow(lane: XferLane, a: number, b: number): [number, number] {
  const i0 = lowerBound(lane.start, lane.length, a - lane.maxDur);
  const i1 = lowerBound(lane.start, lane.length, b + 1e-9);
  return [i0, Math.max(i0, i1)];
}

/** What a click on a request highlights: its blocks' moves and the copies that carried them. */
export interface RequestLinks {
  user: number;
  round: number;
  /** Move rows of the replay model (per block) tagged with this request. */
  moves: number[];
  /** Times of those moves' blocks lines, by op. */
  moveTimes: Record<BlockOp, number[]>;
  /** Copy indices per lane direction. */
  xfers: Record<string, number[]>;
  /** Bytes of this request's moves those copies carried, per lane direction. */
  carriedBytes: Record<string, number>;
  /** The trace source the lanes show (each source is a full account of the same bytes). */
  source: 'cupti' | 'engine';
}

/**
 * Links a request (user, round) to the copies that carried its block moves, by the matching rule
 * the trace exports use (shared/copy-matching.ts, run by the replay model as lines arrive): the
 * copies of the source the lanes show that carry some bytes of the request's offload and onboard
 * lines.
 */
export function linkRequest(model: TimelineModel, replay: ReplayModel, user: number, round: number): RequestLinks {
  const moves: number[] = [];
  const moveTimes: RequestLinks['moveTimes'] = { store: [], offload: [], onboard: [], evict: [], hit: [], move: [] };
  // One entry per blocks line (its moves share a seq).
  const lines = new Set<number>();
  for (let i = 0; i < replay.moveCount; i++) {
    if (replay.user.data[i] !== user || replay.round.data[i] !== round) continue;
    moves.push(i);
    const seq = replay.seq.data[i]!;
    if (!lines.has(seq)) {
      lines.add(seq);
      moveTimes[OP_BY_CODE[replay.op.data[i]!]!].push(replay.t.data[i]!);
    }
  }
  const xfers: Record<string, number[]> = {};
  const carriedBytes: Record<string, number> = {};
  const shown = replay.shownSource;
  const pairs = replay.copyPairs();
  const picked = new Map<string, Set<number>>();
  for (let k = 0; k < pairs.length; k++) {
    if (!lines.has(pairs.move[k]!)) continue;
    const c = decodeCopyRef(pairs.copy[k]!);
    if (c.source !== shown) continue;
    const lane = model.lanes.find((l) => l.dir === c.dir);
    if (!lane || c.index >= lane.length) continue;
    const at = lane.laneOfColumn ? lane.laneOfColumn[c.index]! : c.index;
    let set = picked.get(c.dir);
    if (!set) picked.set(c.dir, (set = new Set()));
    set.add(at);
    carriedBytes[c.dir] = (carriedBytes[c.dir] ?? 0) + pairs.bytes[k]!;
  }
  for (const [dir, set] of picked) xfers[dir] = [...set].sort((a, b) => a - b);
  return { user, round, moves, moveTimes, xfers, carriedBytes, source: shown };
}
