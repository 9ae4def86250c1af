/**
 * The timeline model: everything on one run clock, in columns a canvas renderer can walk without
 * allocating — request rows per user (queued → scheduled → first token → done, TTFT), one lane per
 * transfer direction (each copy a bar; sorted by start with the longest copy's duration kept so a
 * view window finds every copy that overlaps it by binary search), counter tracks (pool occupancy,
 * GPU memory, utilisation, PCIe rx/tx) and round boundaries. Pure; built once per run (or appended
 * to on a live tail by rebuilding lanes lazily).
 */
import type { KvEvent, RequestPhaseTimes, XferDir } from './protocol';
import { compileReplay, lowerBound, OP_CODE, POOL_GPU, POOL_HOST, type ReplayModel } from './replay';

export interface XferLane {
  dir: XferDir;
  start: Float64Array;
  end: Float64Array;
  bytes: Float64Array;
  length: number;
  /** Longest copy in the lane (ns): a window [a, b] needs copies with start ≥ a − maxDur. */
  maxDur: number;
  totalBytes: number;
}

export interface CounterTrack {
  key: 'gpu_pool' | 'host_pool' | 'gpu_mem' | 'gpu_util' | 'pcie_rx' | 'pcie_tx';
  label: string;
  unit: 'blocks' | 'bytes' | 'pct' | 'bytes/s';
  t: Float64Array;
  v: Float64Array;
  length: number;
  /** Top of the track's scale (capacity for pools, 100 for %, max seen otherwise). */
  max: number;
  /** Values hold until the next sample (pool sizes) rather than being points on a line. */
  step: boolean;
}

export interface RequestBar extends RequestPhaseTimes {
  ttft_ns: number | null;
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
}

function laneFrom(dir: XferDir, starts: Float64Array, ends: Float64Array, bytes: Float64Array, n: number): XferLane {
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) if (starts[i]! < starts[i - 1]!) sorted = false;
  let order: Uint32Array | null = null;
  if (!sorted) {
    // CUPTI flushes per stream, so copies of two streams interleave out of start order.
    order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => starts[a]! - starts[b]!);
  }
  const lane: XferLane = { dir, start: new Float64Array(n), end: new Float64Array(n), bytes: new Float64Array(n), length: n, maxDur: 0, totalBytes: 0 };
  let maxDur = 0;
  let total = 0;
  for (let k = 0; k < n; k++) {
    const i = order ? order[k]! : k;
    const s = starts[i]!;
    const e0 = ends[i]!;
    const e = e0 > s ? e0 : s;
    lane.start[k] = s;
    lane.end[k] = e;
    lane.bytes[k] = bytes[i]!;
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
  const laneOrder: XferDir[] = ['h2d', 'd2h', 'd2d', 'h2h'];
  const lanes = laneOrder
    .filter((d) => d === 'h2d' || d === 'd2h' || r.xfer[d].start.length > 0)
    .map((d) => {
      const x = r.xfer[d];
      return laneFrom(d, x.start.data, x.end.data, x.bytes.data, x.start.length);
    });
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
  counters.push({ key: 'gpu_mem', label: 'GPU memory', unit: 'bytes', ...mem, max: r.gpuMemoryTotal ?? Math.max(1, maxOf(mem.v)), step: false });
  counters.push({ key: 'gpu_util', label: 'GPU utilisation', unit: 'pct', ...series(1), max: 100, step: false });
  const rx = series(2);
  const tx = series(3);
  counters.push({ key: 'pcie_rx', label: 'PCIe rx', unit: 'bytes/s', ...rx, max: Math.max(1, maxOf(rx.v)), step: false });
  counters.push({ key: 'pcie_tx', label: 'PCIe tx', unit: 'bytes/s', ...tx, max: Math.max(1, maxOf(tx.v)), step: false });
  return { t0, t1, users, requests, lanes, counters, rounds, blockBytes: r.pools.gpu?.block_bytes ?? null };
}

/** GPU-pool and host-pool block counts after each blocks line (a step series per pool). */
export function occupancyTracks(replay: ReplayModel): CounterTrack[] {
  const n = replay.moveCount;
  const t = replay.t.data;
  const ef = replay.effect.data;
  const sp = replay.srcPool.data;
  const dp = replay.dstPool.data;
  const out = [0, 1].map(() => ({ t: [] as number[], v: [] as number[] }));
  const c = [0, 0];
  for (let i = 0; i < n; i++) {
    const e = ef[i]!;
    if (e & 1) c[sp[i]!]!--;
    if (e & 2) c[dp[i]!]!++;
    // One sample per time stamp (the last move at that t wins).
    if (i + 1 === n || t[i + 1] !== t[i]) {
      for (const p of [POOL_GPU, POOL_HOST]) {
        out[p]!.t.push(t[i]!);
        out[p]!.v.push(c[p]!);
      }
    }
  }
  // The track's top is the pool's capacity, unless the pool is far larger than the run ever used
  // (a 55 GB host pool of small blocks): then the peak, so the line is not flat at the bottom.
  const cap = (p: 'gpu' | 'host', seen: number[]) => {
    const peak = seen.reduce((m, x) => (x > m ? x : m), 0);
    const c = replay.pools[p]?.capacity_blocks ?? 0;
    return Math.max(1, c > 0 && c <= 4 * peak ? c : peak);
  };
  return [
    { key: 'gpu_pool', label: 'GPU pool', unit: 'blocks', t: Float64Array.from(out[0]!.t), v: Float64Array.from(out[0]!.v), length: out[0]!.t.length, max: cap('gpu', out[0]!.v), step: true },
    { key: 'host_pool', label: 'Host pool', unit: 'blocks', t: Float64Array.from(out[1]!.t), v: Float64Array.from(out[1]!.v), length: out[1]!.t.length, max: cap('host', out[1]!.v), step: true },
  ];
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
  moveTimes: Record<'store' | 'offload' | 'onboard' | 'evict' | 'hit', number[]>;
  /** Copy indices per lane direction. */
  xfers: Record<string, number[]>;
}

/**
 * Links a request (user, round) to the copies that carried its block moves. The protocol gives no
 * copy ↔ block key, so this follows its "transfers and blocks agree" rule: each onboard (offload)
 * line of the request is matched to the h2d (d2h) copies nearest its time, nearest first, until
 * their bytes cover the line's blocks × block_bytes; copies more than `windowNs` away are never
 * taken.
 */
export function linkRequest(model: TimelineModel, replay: ReplayModel, user: number, round: number, windowNs = 50e6): RequestLinks {
  const moves: number[] = [];
  const moveTimes: RequestLinks['moveTimes'] = { store: [], offload: [], onboard: [], evict: [], hit: [] };
  const names = ['store', 'offload', 'onboard', 'evict', 'hit'] as const;
  // Group moves of one blocks line (same seq) so a line is matched once with all its bytes.
  const lines = new Map<number, { t: number; op: number; n: number }>();
  for (let i = 0; i < replay.moveCount; i++) {
    if (replay.user.data[i] !== user || replay.round.data[i] !== round) continue;
    moves.push(i);
    const seq = replay.seq.data[i]!;
    const l = lines.get(seq);
    if (l) l.n++;
    else {
      lines.set(seq, { t: replay.t.data[i]!, op: replay.op.data[i]!, n: 1 });
      moveTimes[names[replay.op.data[i]!]!].push(replay.t.data[i]!);
    }
  }
  const xfers: Record<string, number[]> = {};
  const bb = model.blockBytes ?? replay.pools.gpu?.block_bytes ?? 0;
  for (const l of lines.values()) {
    const dir = l.op === OP_CODE.onboard ? 'h2d' : l.op === OP_CODE.offload ? 'd2h' : null;
    if (!dir) continue;
    const lane = model.lanes.find((x) => x.dir === dir);
    if (!lane || lane.length === 0) continue;
    const [i0, i1] = laneWindow(lane, l.t - windowNs, l.t + windowNs);
    const cands: Array<[number, number]> = [];
    for (let i = i0; i < i1; i++) {
      const mid = (lane.start[i]! + lane.end[i]!) / 2;
      const d = Math.abs(mid - l.t);
      if (d <= windowNs) cands.push([d, i]);
    }
    cands.sort((a, b) => a[0] - b[0]);
    const need = l.n * bb;
    let got = 0;
    const picked = (xfers[dir] ??= []);
    for (const [, i] of cands) {
      if (need > 0 && got >= need) break;
      if (!picked.includes(i)) picked.push(i);
      got += lane.bytes[i]!;
      if (need === 0) break;
    }
  }
  for (const k of Object.keys(xfers)) xfers[k]!.sort((a, b) => a - b);
  return { user, round, moves, moveTimes, xfers };
}
