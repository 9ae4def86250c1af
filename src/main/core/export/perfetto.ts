/**
 * A run's event log → a trace for Perfetto, Chrome's DevTools and chrome://tracing, on one clock
 * with what KV Scope shows. `PerfettoTraceBuilder` decides what the trace holds; a `TraceSink`
 * writes it in one format: Chrome Trace Event JSON here (`JsonTraceSink`), Perfetto's native
 * protobuf in perfetto-proto.ts. docs/export.md describes both for readers.
 *
 * - Tracks: process "Run" (phases, rounds, warnings), "Requests" (one thread per user; each
 *   request's TTFT breakdown in its args, shared/ttft-breakdown.ts), "GPU pool" (offload moves,
 *   evictions, occupancy), "Host pool" (onboard moves, evictions, occupancy), one process per
 *   further tier (a disk pool: evictions, occupancy), "Copies" (H2D/D2H/D2D/H2H lanes per trace
 *   source, bytes in flight, the start-up copy check apart, and a disk tier's reads and writes),
 *   "GPU <i>" (nvidia-smi / NVML counters). Every process and thread used is named, with sort
 *   indices.
 * - Slices on one thread nest strictly: overlapping intervals go to separate lanes
 *   (shared/trace-lanes.ts), because importers move overlaps to an overflow track (Perfetto #4280)
 *   or drop them (DevTools' tree). A parent is handed to the sink before its children, and closed
 *   after them.
 * - Flows from each block move to the copies that carried it (shared/copy-matching.ts, the rule
 *   the timeline uses too). A copy carrying several moves gets one child slice per move ("part",
 *   proportional to the bytes), each ending that move's flow; the flow starts on a child of the
 *   move slice that ends where its first copy starts, so viewers that draw a flow from the end of
 *   its slice point forward in time.
 * - Counters have one value each, one name per quantity and direction (chrome://tracing keeps one
 *   key set per counter name).
 *
 * Streaming: one pass over the log through the shared decoder; output goes through a bounded
 * buffer to a stream with backpressure. State is bounded: open requests and phases, one number per
 * lane, and the moves/copies waiting to be matched inside the matching window.
 */
import type { Writable } from 'node:stream';
import { CopyMatcher, type MatchSink, type MatchSource } from '../../../shared/copy-matching';
import { EventLineDecoder, type BadLine } from '../../../shared/events-reader';
import { blockMove, isCopy, poolTitle, type BlocksEvent, type CopyDir, type CopyEvent, type DiskDir, type GpuSampleEvent, type KvEvent, type PoolName, type ReqEvent, type RequestPhaseTimes, type TtftParts, type XferEvent } from '../../../shared/protocol';
import { StartupCopyRule } from '../../../shared/startup-copies';
import { LaneAssigner } from '../../../shared/trace-lanes';
import { breakdownFields, ttftBreakdown } from '../../../shared/ttft-breakdown';

export interface PerfettoOptions {
  /** A copy may carry a move when the copy starts no earlier than this before the move's line (ns). */
  matchBeforeNs?: number;
  /** ... and no later than this after it (ns). */
  matchAfterNs?: number;
  /** How long after a copy started its `xfer` line may still be written (ns of run time; CUPTI flushes late). */
  lateNs?: number;
  /** Bad lines kept in full in the report (the rest are counted). */
  keepBadLines?: number;
}

export interface PerfettoReport {
  /** Valid log events read. */
  events: number;
  /** Trace events written (metadata included; for the protobuf format, TrackEvent and descriptor packets). */
  traceEvents: number;
  badLines: number;
  badLineSamples: BadLine[];
  requests: number;
  /**
   * Block moves (offload/onboard lines). matched: carried by at least one copy; partial: matched,
   * but no single trace source carried all its bytes; unmatched: no copy at all. Samples are seqs.
   */
  moves: { total: number; matched: number; unmatched: number; unmatchedSample: number[]; partial: number; partialSample: number[] };
  /** `startup`: the start-up copy check (shared/startup-copies.ts), on its own track, in no KV figure. */
  copies: { total: number; carrying: number; blockSized: number; bytes: Record<CopyDir, number>; startup: { count: number; bytes: Record<CopyDir, number> } };
  /** A disk tier's reads (f2h) and writes (h2f): no memory copy, on tracks of their own, in no copy figure. */
  diskIo: { count: number; bytes: Record<DiskDir, number> };
  flows: { out: number; in: number };
  /** Timestamps below 0 (before run start) written as 0. */
  clampedTimestamps: number;
  /** Copies whose start was earlier than one already placed on the bytes-in-flight counter. */
  lateCopies: number;
  matching: { beforeNs: number; afterNs: number; lateNs: number };
}

/** A counter track: its name (one per quantity and direction) and unit. */
export interface CounterSpec {
  name: string;
  /** The JSON arg key its value is written under. */
  key: string;
  unit: 'blocks' | 'bytes' | 'percent' | 'bytes_per_s' | 'watts' | 'mhz';
}

/** Where a slice's flow arrows start or end. */
export type SliceFlow =
  /** Arrows start here: `bind` is the move's seq (JSON flows v2), `ids` one id per copy part. */
  | { out: true; bind: number; ids: readonly number[] }
  /** An arrow ends here: `bind` as above, `id` the part's own id. */
  | { out: false; bind: number; id: number };

/**
 * One output format. Times are integer ns ≥ 0 on the run clock. `args` is a JSON object's text
 * (the hot paths build it by hand). Slice names are built from numbers and protocol enums (no
 * escaping needed); instant names may hold log text.
 */
export interface TraceSink {
  processName(pid: number, name: string, sortIndex: number): void;
  threadName(pid: number, tid: number, name: string, sortIndex: number): void;
  /** Opens a slice [start, end] on a thread; its children follow, then `closeSlice`. */
  openSlice(pid: number, tid: number, name: string, cat: string, start: number, end: number, args: string, flow: SliceFlow | null): void;
  closeSlice(pid: number, tid: number, end: number): void;
  /** An instant on a thread, or on the whole trace (`tid` null). */
  instant(pid: number, tid: number | null, name: string, cat: string, t: number, args: string): void;
  counter(pid: number, spec: CounterSpec, t: number, value: number): void;
}

const DEFAULTS = { matchBeforeNs: 50e6, matchAfterNs: 5e9, lateNs: 30e9, keepBadLines: 20 };

/** Pools beyond gpu and host get processes from `tierBase` + their tier (after the GPUs' 10 + index). */
const PID = { run: 1, requests: 2, gpuPool: 3, hostPool: 4, copies: 5, gpuBase: 10, tierBase: 100 } as const;
type Source = MatchSource;
const DIR_NAME: Record<CopyDir, string> = { h2d: 'H2D', d2h: 'D2H', d2d: 'D2D', h2h: 'H2H' };
const DISK_TRACK: Record<DiskDir, string> = { f2h: 'Disk reads (file → host, engine)', h2f: 'Disk writes (host → file, engine)' };

/** The counters, one value each. */
const COUNTERS = {
  gpuOccupancy: { name: 'GPU pool occupancy', key: 'blocks', unit: 'blocks' },
  hostOccupancy: { name: 'Host pool occupancy', key: 'blocks', unit: 'blocks' },
  gpuCapacity: { name: 'GPU pool capacity', key: 'blocks', unit: 'blocks' },
  hostCapacity: { name: 'Host pool capacity', key: 'blocks', unit: 'blocks' },
  memUsed: { name: 'memory used', key: 'bytes', unit: 'bytes' },
  gpuUtil: { name: 'GPU utilisation', key: 'percent', unit: 'percent' },
  memUtil: { name: 'memory utilisation', key: 'percent', unit: 'percent' },
  pcieRx: { name: 'PCIe rx', key: 'bytes_per_s', unit: 'bytes_per_s' },
  pcieTx: { name: 'PCIe tx', key: 'bytes_per_s', unit: 'bytes_per_s' },
  power: { name: 'power', key: 'watts', unit: 'watts' },
  smClock: { name: 'SM clock', key: 'mhz', unit: 'mhz' },
} as const satisfies Record<string, CounterSpec>;

/** "Disk pool occupancy", "Disk pool capacity": a further tier's counters, one name each. */
const poolCounters = new Map<string, CounterSpec>();
function poolCounter(pool: PoolName, what: 'occupancy' | 'capacity'): CounterSpec {
  const key = `${pool}/${what}`;
  let s = poolCounters.get(key);
  if (!s) poolCounters.set(key, (s = { name: `${poolTitle(pool)} ${what}`, key: 'blocks', unit: 'blocks' }));
  return s;
}

/** "H2D bytes in flight (cupti)": one counter per direction and source. */
const inFlightSpecs = new Map<string, CounterSpec>();
function inFlightSpec(dir: CopyDir, source: string): CounterSpec {
  const key = `${dir}/${source}`;
  let s = inFlightSpecs.get(key);
  if (!s) inFlightSpecs.set(key, (s = { name: `${DIR_NAME[dir]} bytes in flight (${source})`, key: 'bytes', unit: 'bytes' }));
  return s;
}

interface Move {
  seq: number;
  op: 'offload' | 'onboard';
  t: number;
  blocks: number;
  bytes: number;
  user: number | null;
  round: number | null;
  carried: Record<Source, number>;
  /** Copies carrying some of its bytes, per source. */
  copies: Record<Source, number>;
  firstStart: number;
  lastEnd: number;
  /** Flow ids, one per copy part that carries some of its bytes. */
  flowIds: number[];
}

interface PendingCopy {
  ev: CopyEvent;
  blockSized: boolean;
  parts: Array<{ move: Move; bytes: number; flowId: number }>;
}

/** A logical track (a user, a copy direction, a pool's moves) and the threads of its lanes. */
class LaneTrack {
  readonly lanes = new LaneAssigner();
  readonly tids: number[] = [];
  constructor(
    readonly pid: number,
    readonly name: string,
    readonly sortBase: number,
  ) {}
}

interface OpenRequest extends RequestPhaseTimes {
  last: number;
  doneEvent: ReqEvent | null;
  /** The first_token line's ttft_parts, when it has them. */
  ttftParts: TtftParts | null;
}

/** Integer ns ≥ 0 (before run start clamps to 0). */
const clampNs = (ns: number): number => (ns > 0 ? Math.round(ns) : 0);

/**
 * Turns events (in seq order) into trace content handed to a `TraceSink`. Pure: no I/O, usable on
 * an in-memory run (tests) and by the streaming exporters.
 */
export class PerfettoTraceBuilder {
  private readonly o: typeof DEFAULTS;
  private readonly tracks = new Map<string, LaneTrack>();
  private readonly userTracks: LaneTrack[] = [];
  private readonly moveTracks: Partial<Record<'offload' | 'onboard', LaneTrack>> = {};
  private readonly copyTracks = new Map<string, LaneTrack>();
  private nextTid = 1;
  private nextFlowId = 1;
  private readonly requests = new Map<string, OpenRequest>();
  private readonly phases = new Map<string, number>();
  private readonly matcher: CopyMatcher<Move, PendingCopy>;
  private readonly startupRule = new StartupCopyRule();
  private readonly inFlight = new Map<string, { value: number; ends: number[]; lastTs: number; spec: CounterSpec }>();
  /** Blocks in each pool, and each pool's process (gpu and host: theirs; another tier's once its line comes). */
  private readonly occupancy = new Map<PoolName, number>([
    ['gpu', 0],
    ['host', 0],
  ]);
  private readonly poolPid = new Map<PoolName, number>([
    ['gpu', PID.gpuPool],
    ['host', PID.hostPool],
  ]);
  /** The GPU pool's block size: the bytes of a request's derived host reload. */
  private gpuBlockBytes: number | null = null;
  /** Blocks moved host → GPU per request (`user/round`) not yet written. */
  private readonly onboardedFor = new Map<string, number>();
  private readonly gpusNamed = new Set<number>();
  private now = 0;
  private lastSeqSeen = -1;
  readonly report: PerfettoReport;

  constructor(
    private readonly sink: TraceSink,
    options: PerfettoOptions = {},
  ) {
    this.o = { ...DEFAULTS, ...options };
    this.report = {
      events: 0,
      traceEvents: 0,
      badLines: 0,
      badLineSamples: [],
      requests: 0,
      moves: { total: 0, matched: 0, unmatched: 0, unmatchedSample: [], partial: 0, partialSample: [] },
      copies: { total: 0, carrying: 0, blockSized: 0, bytes: { h2d: 0, d2h: 0, d2d: 0, h2h: 0 }, startup: { count: 0, bytes: { h2d: 0, d2h: 0, d2d: 0, h2h: 0 } } },
      diskIo: { count: 0, bytes: { f2h: 0, h2f: 0 } },
      flows: { out: 0, in: 0 },
      clampedTimestamps: 0,
      lateCopies: 0,
      matching: { beforeNs: this.o.matchBeforeNs, afterNs: this.o.matchAfterNs, lateNs: this.o.lateNs },
    };
    const matchSink: MatchSink<Move, PendingCopy> = {
      pair: (m, c, bytes, source) => {
        const flowId = this.nextFlowId++;
        c.parts.push({ move: m, bytes, flowId });
        m.flowIds.push(flowId);
        m.carried[source] += bytes;
        m.copies[source]++;
        if (c.ev.start < m.firstStart) m.firstStart = c.ev.start;
        if (c.ev.end > m.lastEnd) m.lastEnd = c.ev.end;
      },
      moveDone: (m) => this.releaseMove(m),
      copyDone: (c, source) => this.releaseCopy(c, source),
    };
    this.matcher = new CopyMatcher(matchSink, { beforeNs: this.o.matchBeforeNs, afterNs: this.o.matchAfterNs, lateNs: this.o.lateNs });
    const processes: Array<[number, string]> = [
      [PID.run, 'Run'],
      [PID.requests, 'Requests (one track per user)'],
      [PID.gpuPool, 'GPU pool'],
      [PID.hostPool, 'Host pool'],
      [PID.copies, 'Copies (H2D / D2H lanes)'],
    ];
    for (const [pid, name] of processes) this.nameProcess(pid, name, pid);
  }

  /** Every trace event handed to the sink is counted here. */
  private counted(): void {
    this.report.traceEvents++;
  }

  private ns(t: number): number {
    if (t < 0) this.report.clampedTimestamps++;
    return clampNs(t);
  }

  private nameProcess(pid: number, name: string, sortIndex: number): void {
    this.report.traceEvents += 2;
    this.sink.processName(pid, name, sortIndex);
  }

  /** The logical track `name` of a process (created on first use). */
  private track(pid: number, name: string, sortBase: number): LaneTrack {
    const key = `${pid}/${name}`;
    let t = this.tracks.get(key);
    if (!t) {
      t = new LaneTrack(pid, name, sortBase);
      this.tracks.set(key, t);
    }
    return t;
  }

  /** The tid of a lane of a track, naming the thread on first use. */
  private laneThread(t: LaneTrack, lane: number): number {
    let tid = t.tids[lane];
    if (tid === undefined) {
      tid = this.nextTid++;
      t.tids[lane] = tid;
      this.report.traceEvents += 2;
      this.sink.threadName(t.pid, tid, lane === 0 ? t.name : `${t.name} (lane ${lane + 1})`, t.sortBase * 100 + lane);
    }
    return tid;
  }

  /** Places [start, end] on the first free lane of a track (shared/trace-lanes.ts); returns its tid. */
  private placeOn(t: LaneTrack, start: number, end: number): number {
    return this.laneThread(t, t.lanes.place(Math.max(0, start), Math.max(0, end)).lane);
  }

  private tidFor(pid: number, name: string, lane: number, sortBase: number): number {
    return this.laneThread(this.track(pid, name, sortBase), lane);
  }

  private laneTid(pid: number, name: string, sortBase: number, start: number, end: number): number {
    return this.placeOn(this.track(pid, name, sortBase), start, end);
  }

  /** Opens a slice (integer ns on both ends, so a child computed from a parent never pokes out). */
  private open(pid: number, tid: number, name: string, cat: string, start: number, end: number, args: string, flow: SliceFlow | null = null): number {
    const s = this.ns(start);
    const e = Math.max(s, clampNs(end));
    this.counted();
    this.sink.openSlice(pid, tid, name, cat, s, e, args, flow);
    return e;
  }

  /** A slice with no children. */
  private leaf(pid: number, tid: number, name: string, cat: string, start: number, end: number, args: string, flow: SliceFlow | null = null): void {
    this.sink.closeSlice(pid, tid, this.open(pid, tid, name, cat, start, end, args, flow));
  }

  private counter(pid: number, spec: CounterSpec, t: number, value: number): void {
    this.counted();
    this.sink.counter(pid, spec, this.ns(t), value);
  }

  /** A bad line from the decoder: counted, a few kept for the report. */
  badLine(b: BadLine): void {
    this.report.badLines++;
    if (this.report.badLineSamples.length < this.o.keepBadLines) this.report.badLineSamples.push(b);
  }

  push(e: KvEvent): void {
    this.report.events++;
    // Repeated or out-of-order lines (a duplicated tail) would double slices: skip them as the ledger does.
    if (e.seq <= this.lastSeqSeen) {
      this.badLine({ reason: 'schema', offset: -1, line: -1, seq: e.seq, message: `seq ${e.seq} after seq ${this.lastSeqSeen}: repeated or out of order, not exported` });
      return;
    }
    this.lastSeqSeen = e.seq;
    if (e.t > this.now) this.now = e.t;
    this.matcher.clock(e.t);
    this.startupRule.observe(e);
    switch (e.type) {
      case 'pool':
        if (e.pool === 'gpu' || e.pool === 'host') {
          this.matcher.pool(e.pool, e.block_bytes);
          if (e.pool === 'gpu') this.gpuBlockBytes = e.block_bytes;
          this.counter(e.pool === 'gpu' ? PID.gpuPool : PID.hostPool, e.pool === 'gpu' ? COUNTERS.gpuCapacity : COUNTERS.hostCapacity, e.t, e.capacity_blocks);
        } else if (!this.poolPid.has(e.pool) && e.tier !== undefined) {
          // A tier below the host (a disk): its own process, its capacity and occupancy.
          const pid = PID.tierBase + e.tier;
          this.poolPid.set(e.pool, pid);
          this.occupancy.set(e.pool, 0);
          this.nameProcess(pid, `${poolTitle(e.pool)} (tier ${e.tier}${e.medium ? `, ${e.medium}` : ''})`, pid);
          this.counter(pid, poolCounter(e.pool, 'capacity'), e.t, e.capacity_blocks);
        }
        break;
      case 'blocks':
        this.onBlocks(e);
        break;
      case 'xfer':
        // A disk tier's I/O (h2f, f2h) is no memory copy: its own tracks, no copy figure.
        if (isCopy(e)) this.onXfer(e);
        else this.onDiskXfer(e);
        break;
      case 'req':
        this.onReq(e);
        break;
      case 'round': {
        const tid = this.laneTid(PID.run, 'rounds', 2, e.t - e.e2e_ns, e.t);
        this.leaf(PID.run, tid, `round ${e.round}`, 'round', e.t - e.e2e_ns, e.t, JSON.stringify({ round: e.round, e2e_ns: e.e2e_ns, ttft_ns: e.ttft_ns }));
        break;
      }
      case 'gpu':
        this.onGpu(e);
        break;
      case 'phase':
        if (e.state === 'begin') this.phases.set(e.name, e.t);
        else {
          const begin = this.phases.get(e.name);
          this.phases.delete(e.name);
          const start = begin ?? 0;
          const tid = this.laneTid(PID.run, 'phases', 1, start, e.t);
          this.leaf(PID.run, tid, e.name, 'phase', start, e.t, begin === undefined ? '{"begin_missing":true}' : '{}');
        }
        break;
      case 'log':
        if (e.level === 'warn' || e.level === 'error') {
          const tid = this.tidFor(PID.run, 'warnings and errors', 0, 3);
          this.counted();
          this.sink.instant(PID.run, tid, `${e.level}: ${e.msg.slice(0, 120)}`, 'log', this.ns(e.t), JSON.stringify({ level: e.level, msg: e.msg, seq: e.seq }));
        }
        break;
      case 'run.start':
        this.nameProcess(PID.run, `Run ${e.run_id} (${e.engine.name}, ${e.host.hostname})`, PID.run);
        for (const g of e.host.gpus) this.nameGpu(g.index, g.name);
        break;
      default:
        break;
    }
    this.matcher.settle();
  }

  private nameGpu(index: number, name?: string): void {
    if (this.gpusNamed.has(index) && !name) return;
    this.gpusNamed.add(index);
    this.nameProcess(PID.gpuBase + index, `GPU ${index}${name ? ` (${name})` : ''} counters`, PID.gpuBase + index);
  }

  private onGpu(e: GpuSampleEvent): void {
    this.nameGpu(e.index);
    const pid = PID.gpuBase + e.index;
    const num = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);
    if (num(e.mem_used_bytes)) this.counter(pid, COUNTERS.memUsed, e.t, e.mem_used_bytes);
    if (num(e.util_pct)) this.counter(pid, COUNTERS.gpuUtil, e.t, e.util_pct);
    if (num(e.mem_util_pct)) this.counter(pid, COUNTERS.memUtil, e.t, e.mem_util_pct);
    if (num(e.pcie_rx_bytes_per_s)) this.counter(pid, COUNTERS.pcieRx, e.t, e.pcie_rx_bytes_per_s);
    if (num(e.pcie_tx_bytes_per_s)) this.counter(pid, COUNTERS.pcieTx, e.t, e.pcie_tx_bytes_per_s);
    if (num(e.power_w)) this.counter(pid, COUNTERS.power, e.t, e.power_w);
    if (num(e.sm_clock_mhz)) this.counter(pid, COUNTERS.smClock, e.t, e.sm_clock_mhz);
  }

  private onBlocks(e: BlocksEvent): void {
    if (e.op === 'hit') return;
    const n = e.ids.length;
    const keep = e.keep_source === true;
    const occ = this.occupancy;
    // Every declared pool's occupancy; a move between gpu and host is also an offload or an onboard slice.
    const touched = new Set<PoolName>();
    const mv = blockMove(e);
    if (mv) {
      if (mv.from === mv.to) return;
      if (occ.has(mv.from)) {
        if (!keep) occ.set(mv.from, occ.get(mv.from)! - n);
        touched.add(mv.from);
      }
      if (occ.has(mv.to)) {
        occ.set(mv.to, occ.get(mv.to)! + n);
        touched.add(mv.to);
      }
      if (mv.from === 'host' && mv.to === 'gpu' && e.user !== undefined && e.round !== undefined) {
        const key = `${e.user}/${e.round}`;
        this.onboardedFor.set(key, (this.onboardedFor.get(key) ?? 0) + n);
      }
    } else {
      const pool = e.pool ?? 'gpu';
      if (!occ.has(pool)) return;
      occ.set(pool, occ.get(pool)! + (e.op === 'store' ? n : -n));
      touched.add(pool);
      if (e.op === 'evict') {
        const pid = this.poolPid.get(pool)!;
        const tid = this.tidFor(pid, 'evictions', 0, 2);
        const args = { blocks: n, user: e.user ?? null, round: e.round ?? null, seq: e.seq, ids: e.ids.slice(0, 16) };
        this.counted();
        this.sink.instant(pid, tid, `evict ${n} block${n === 1 ? '' : 's'}`, 'kv', this.ns(e.t), JSON.stringify(args));
      }
    }
    if (touched.has('gpu')) this.counter(PID.gpuPool, COUNTERS.gpuOccupancy, e.t, occ.get('gpu')!);
    if (touched.has('host')) this.counter(PID.hostPool, COUNTERS.hostOccupancy, e.t, occ.get('host')!);
    for (const pool of touched) if (pool !== 'gpu' && pool !== 'host') this.counter(this.poolPid.get(pool)!, poolCounter(pool, 'occupancy'), e.t, occ.get(pool)!);
    const op = mv?.from === 'gpu' && mv.to === 'host' ? 'offload' : mv?.from === 'host' && mv.to === 'gpu' ? 'onboard' : null;
    if (op) {
      const move: Move = {
        seq: e.seq,
        op,
        t: e.t,
        blocks: n,
        bytes: 0,
        user: e.user ?? null,
        round: e.round ?? null,
        carried: { engine: 0, cupti: 0 },
        copies: { engine: 0, cupti: 0 },
        firstStart: Infinity,
        lastEnd: -Infinity,
        flowIds: [],
      };
      this.report.moves.total++;
      move.bytes = this.matcher.addMove(move, op, e.t, n);
    }
  }

  private onXfer(e: CopyEvent): void {
    const c = this.report.copies;
    c.total++;
    c.bytes[e.dir] += e.bytes;
    if (this.startupRule.isStartup(e)) {
      c.startup.count++;
      c.startup.bytes[e.dir] += e.bytes;
      this.writeCopy({ ev: e, blockSized: false, parts: [] }, e.source, true);
      return;
    }
    const copy: PendingCopy = { ev: e, blockSized: false, parts: [] };
    if (!this.matcher.addCopy(copy, e.dir, e.source, e.start, e.bytes)) this.releaseCopy(copy, e.source);
  }

  /** A disk tier's read or write: a slice on its direction's track of the Copies process (bytes and bandwidth in its args). */
  private onDiskXfer(e: XferEvent): void {
    const dir = e.dir as DiskDir;
    this.report.diskIo.count++;
    this.report.diskIo.bytes[dir] += e.bytes;
    const track = this.track(PID.copies, DISK_TRACK[dir], dir === 'f2h' ? 30 : 31);
    const tid = this.placeOn(track, e.start, e.end);
    const durNs = Math.max(0, e.end - e.start);
    const args = { seq: e.seq, bytes: e.bytes, bandwidth_gb_per_s: durNs > 0 ? e.bytes / durNs : null, from_pool: e.from_pool ?? null, to_pool: e.to_pool ?? null, source: e.source };
    this.leaf(PID.copies, tid, `${dir === 'f2h' ? 'disk read' : 'disk write'} ${formatMiB(e.bytes)}`, 'xfer.disk', e.start, e.end, JSON.stringify(args));
  }

  /** Called once every trace source is done with a move: writes its slice. */
  private releaseMove(move: Move): void {
    const matched = move.flowIds.length > 0;
    if (matched) {
      this.report.moves.matched++;
      if (Math.max(move.carried.engine, move.carried.cupti) < move.bytes) {
        this.report.moves.partial++;
        if (this.report.moves.partialSample.length < 20) this.report.moves.partialSample.push(move.seq);
      }
    } else {
      this.report.moves.unmatched++;
      if (this.report.moves.unmatchedSample.length < 20) this.report.moves.unmatchedSample.push(move.seq);
    }
    // The move spans from its line — or from 1 ns before its first copy, when that started
    // earlier — to the end of its last copy; its flow starts on a child that ends where the first
    // copy starts, so an arrow drawn from a slice's end runs forward to each copy.
    const firstStart = Math.round(move.firstStart);
    const start = matched ? Math.min(move.t, firstStart - 1) : move.t;
    const end = matched ? Math.max(move.t, move.lastEnd) : move.t;
    const pid = move.op === 'offload' ? PID.gpuPool : PID.hostPool;
    const track = move.op === 'offload' ? 'offloads (GPU → host)' : 'onboards (host → GPU)';
    const mt = this.moveTracks[move.op] ?? (this.moveTracks[move.op] = this.track(pid, track, 1));
    const tid = this.placeOn(mt, start, end);
    const c = move.carried;
    // Built by hand (hot path); every value is a number, null or boolean.
    const args = `{"seq":${move.seq},"blocks":${move.blocks},"bytes":${move.bytes},"user":${move.user},"round":${move.round},"line_t_ns":${move.t},"carried_bytes":{"engine":${c.engine},"cupti":${c.cupti}},"copies":{"engine":${move.copies.engine},"cupti":${move.copies.cupti}},"matched":${matched}}`;
    const closeAt = this.open(pid, tid, `${move.op} ${move.blocks} block${move.blocks === 1 ? '' : 's'}`, 'kv', start, end, args);
    if (matched) {
      this.report.flows.out++;
      this.leaf(pid, tid, 'until its first copy', 'kv.flow', start, firstStart, `{"move_seq":${move.seq}}`, { out: true, bind: move.seq, ids: move.flowIds });
    }
    this.sink.closeSlice(pid, tid, closeAt);
  }

  /** Called once a copy's matching is final: writes it on its lane. */
  private releaseCopy(c: PendingCopy, source: string): void {
    this.writeCopy(c, source, false);
  }

  private writeCopy(c: PendingCopy, source: string, startup: boolean): void {
    const e = c.ev;
    if (c.blockSized) this.report.copies.blockSized++;
    if (c.parts.length) this.report.copies.carrying++;
    const dirName = DIR_NAME[e.dir];
    const key = `${e.dir}${source}${startup ? '/startup' : ''}`;
    let ct = this.copyTracks.get(key);
    if (!ct) {
      const sortBase = { h2d: 1, d2h: 2, d2d: 3, h2h: 4 }[e.dir] * 2 + (source === 'cupti' ? 0 : 1) + (startup ? 10 : 0);
      ct = this.track(PID.copies, startup ? `${dirName} start-up copy check (${source}, not KV)` : `${dirName} copies (${source})`, sortBase);
      this.copyTracks.set(key, ct);
    }
    const tid = this.placeOn(ct, e.start, e.end);
    const durNs = Math.max(0, e.end - e.start);
    const bw = durNs > 0 ? e.bytes / durNs : null;
    // dir, source and the memory kinds are protocol enums (validated): safe to write unescaped.
    const str = (v: string | undefined) => (v === undefined ? 'null' : `"${v}"`);
    const num = (v: number | undefined) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    const carried = c.parts.length ? c.parts.map((p) => p.move.seq).join(',') : '';
    // Built by hand (hot path).
    const args = `{"bytes":${e.bytes},"bandwidth_gb_per_s":${bw},"dir":"${e.dir}","source":"${e.source}","src_mem":${str(e.src_mem)},"dst_mem":${str(e.dst_mem)},"device":${num(e.device)},"stream":${num(e.stream)},"seq":${e.seq},"carries_blocks_of_moves":[${carried}]${startup ? ',"startup_copy_check":true' : ''}}`;
    const closeAt = this.open(PID.copies, tid, `${dirName} ${formatMiB(e.bytes)}`, startup ? 'xfer.startup' : 'xfer', e.start, e.end, args);
    // One child per carried move, in byte order and proportional to bytes, each ending that move's flow.
    let done = 0;
    for (const p of c.parts) {
      const a = Math.round(e.start + (durNs * done) / e.bytes);
      done += p.bytes;
      const b = Math.min(e.end, Math.round(e.start + (durNs * done) / e.bytes));
      this.report.flows.in++;
      this.leaf(
        PID.copies,
        tid,
        `blocks of ${p.move.op} seq ${p.move.seq}`,
        'xfer.part',
        a,
        b,
        `{"move_seq":${p.move.seq},"bytes":${p.bytes},"blocks":${p.move.bytes > 0 ? (p.bytes / p.move.bytes) * p.move.blocks : 0}}`,
        { out: false, bind: p.move.seq, id: p.flowId },
      );
    }
    this.sink.closeSlice(PID.copies, tid, closeAt);
    if (!startup) this.bytesInFlight(e, source);
  }

  /** Bytes in flight per direction and source: +bytes at each copy's start, −bytes at its end. */
  private bytesInFlight(e: CopyEvent, source: string): void {
    const key = `${e.dir}/${source}`;
    let s = this.inFlight.get(key);
    if (!s) {
      s = { value: 0, ends: [], lastTs: -Infinity, spec: inFlightSpec(e.dir, source) };
      this.inFlight.set(key, s);
    }
    this.drainEnds(s, e.start);
    if (e.start < s.lastTs) this.report.lateCopies++;
    s.value += e.bytes;
    s.lastTs = Math.max(s.lastTs, e.start);
    this.counter(PID.copies, s.spec, e.start, s.value);
    // Insert the end keeping `ends` sorted ascending by time (value pairs interleaved: [t, bytes]).
    let i = s.ends.length;
    while (i >= 2 && s.ends[i - 2]! > e.end) i -= 2;
    s.ends.splice(i, 0, e.end, e.bytes);
  }

  private drainEnds(s: { value: number; ends: number[]; lastTs: number; spec: CounterSpec }, upTo: number): void {
    while (s.ends.length && s.ends[0]! <= upTo) {
      const t = s.ends[0]!;
      s.value -= s.ends[1]!;
      s.ends.splice(0, 2);
      s.lastTs = Math.max(s.lastTs, t);
      this.counter(PID.copies, s.spec, t, s.value);
    }
  }

  private onReq(e: ReqEvent): void {
    const key = `${e.user}/${e.round}`;
    let r = this.requests.get(key);
    if (!r) {
      r = { user: e.user, round: e.round, queued: null, scheduled: null, first_token: null, done: null, last: e.t, doneEvent: null, ttftParts: null };
      this.requests.set(key, r);
    }
    r[e.phase] = e.t;
    if (e.phase === 'first_token' && e.ttft_parts) r.ttftParts = e.ttft_parts;
    r.last = Math.max(r.last, e.t);
    if (e.phase === 'done') {
      r.doneEvent = e;
      this.requests.delete(key);
      this.writeRequest(r, false);
    }
  }

  private writeRequest(r: OpenRequest, incomplete: boolean): void {
    this.report.requests++;
    let start = r.last;
    let end = r.last;
    for (const v of [r.queued, r.scheduled, r.first_token, r.done]) {
      if (v === null) continue;
      if (v < start) start = v;
      if (v > end) end = v;
    }
    const ut = this.userTracks[r.user] ?? (this.userTracks[r.user] = this.track(PID.requests, `user ${r.user}`, r.user + 1));
    const tid = this.placeOn(ut, start, end);
    const d = r.doneEvent;
    const key = `${r.user}/${r.round}`;
    const breakdown = ttftBreakdown(
      {
        ...r,
        ttft_parts: r.ttftParts,
        reused_gpu_tokens: d?.reused_gpu_tokens ?? null,
        reused_host_tokens: d?.reused_host_tokens ?? null,
        reused_disk_tokens: d?.reused_disk_tokens ?? null,
        computed_tokens: d?.computed_tokens ?? null,
        blocks_onboarded: this.onboardedFor.get(key) ?? 0,
      },
      this.gpuBlockBytes,
    );
    this.onboardedFor.delete(key);
    const args = {
      user: r.user,
      round: r.round,
      ttft_ns: r.queued !== null && r.first_token !== null ? r.first_token - r.queued : null,
      e2e_ns: r.queued !== null && r.done !== null ? r.done - r.queued : null,
      prompt_tokens: d?.prompt_tokens ?? null,
      output_tokens: d?.output_tokens ?? null,
      reused_gpu_tokens: d?.reused_gpu_tokens ?? null,
      reused_host_tokens: d?.reused_host_tokens ?? null,
      computed_tokens: d?.computed_tokens ?? null,
      incomplete,
      ttft_breakdown: breakdownFields(breakdown),
    };
    const closeAt = this.open(PID.requests, tid, `user ${r.user} round ${r.round}${incomplete ? ' (incomplete)' : ''}`, 'request', start, end, JSON.stringify(args));
    // Phases tile the request: queued → scheduled → first token → done.
    const steps: Array<[string, number | null, number | null]> = [
      ['queued', r.queued, r.scheduled],
      ['prefill', r.scheduled, r.first_token],
      ['decode', r.first_token, r.done],
    ];
    for (const [name, a, b] of steps) {
      if (a !== null && b !== null && b >= a) this.leaf(PID.requests, tid, name, 'request.phase', a, b, '{}');
    }
    this.sink.closeSlice(PID.requests, tid, closeAt);
  }

  /** How much state is held now (tests check it stays bounded as a run gets longer). */
  stateSize(): { pendingMoves: number; pendingCopies: number; openRequests: number; openPhases: number; lanes: number; inFlightEnds: number } {
    const w = this.matcher.waiting();
    let lanes = 0;
    for (const t of this.tracks.values()) lanes += t.lanes.laneCount;
    let inFlightEnds = 0;
    for (const f of this.inFlight.values()) inFlightEnds += f.ends.length / 2;
    return { pendingMoves: w.moves, pendingCopies: w.copies, openRequests: this.requests.size, openPhases: this.phases.size, lanes, inFlightEnds };
  }

  /** The log is over: flush everything waiting, then the report event. */
  finish(): PerfettoReport {
    this.matcher.finish();
    for (const s of this.inFlight.values()) this.drainEnds(s, Infinity);
    for (const r of this.requests.values()) this.writeRequest(r, true);
    this.requests.clear();
    for (const [name, begin] of this.phases) {
      const tid = this.laneTid(PID.run, 'phases', 1, begin, this.now);
      this.leaf(PID.run, tid, name, 'phase', begin, this.now, '{"end_missing":true}');
    }
    this.phases.clear();
    // Visible in Perfetto's UI (a global instant at 0) and in the JSON file's top-level metadata.
    this.counted();
    this.sink.instant(PID.run, null, 'kvscope export report', 'kvscope', 0, JSON.stringify(this.reportArgs()));
    return this.report;
  }

  reportArgs(): Record<string, unknown> {
    const r = this.report;
    return {
      events_read: r.events,
      bad_lines_skipped: r.badLines,
      bad_line_samples: r.badLineSamples.map((b) => `line ${b.line}${b.seq !== null ? ` seq ${b.seq}` : ''}: ${b.reason}: ${b.message}`),
      requests: r.requests,
      moves: r.moves,
      copies: r.copies,
      ...(r.diskIo.count > 0 ? { disk_io: r.diskIo } : {}),
      flows: r.flows,
      clamped_timestamps: r.clampedTimestamps,
      late_copies: r.lateCopies,
      matching_rule:
        'a copy carries a block move of the same direction (offload=d2h, onboard=h2d) and trace source when its size is a whole number of blocks ' +
        `and it starts within [t-${r.matching.beforeNs}ns, t+${r.matching.afterNs}ns] of the move's line; bytes are matched first in first out`,
    };
  }
}

/** A short size for slice names ("1.5 MiB"); integer arithmetic, as toFixed is slow on the hot path. */
function formatMiB(bytes: number): string {
  const tenths = (unit: number, name: string) => {
    const t = Math.round((bytes * 10) / unit);
    return `${Math.floor(t / 10)}.${t % 10} ${name}`;
  };
  if (bytes >= 1 << 20) return tenths(1 << 20, 'MiB');
  if (bytes >= 1 << 10) return tenths(1 << 10, 'KiB');
  return `${bytes} B`;
}

/**
 * The JSON format's microseconds: an integer ns time as the nearest multiple of 2⁻¹¹ µs
 * (0.48828125 ns), written exactly. Binary floating point holds such values exactly, so a viewer
 * that adds `ts + dur` in floating-point µs (DevTools' trace engine, speedscope, chrome://tracing)
 * lands exactly on the next slice's `ts` and touching slices meet; and the grid is fine enough that
 * µs × 1000 rounded to the nearest integer (Perfetto's importer) gives back the integer ns, for a
 * time (error ≤ 0.25 ns) and for a duration between two of them (≤ 0.49 ns).
 */
export function usGrid(ns: number): number {
  // round(ns × 2048 / 1000) = round(ns × 256 / 125), in integers while they are exact (≈ 4.9 h).
  return ns < 1.7e13 ? Math.floor((ns * 512 + 125) / 250) : Math.round(ns * 2.048);
}

/** ".00048828125" … ".99951171875": the exact decimals of k/2048 µs, k = 1..2047 ("" for 0), trailing zeros dropped. */
const GRID_FRACTIONS: readonly string[] = Array.from({ length: 2048 }, (_, k) => (k === 0 ? '' : `.${String(k * 48828125).padStart(11, '0').replace(/0+$/, '')}`));

/** Grid units (2⁻¹¹ µs) as exact decimal µs (units < 2⁵³). */
export function gridText(units: number): string {
  const int = Math.floor(units / 2048);
  return `${int}${GRID_FRACTIONS[units - int * 2048]}`;
}

/**
 * Chrome Trace Event JSON (`X` slices with `ts`/`dur`, `C` counters, `I` instants, `M` names,
 * flows v2 by `bind_id`), one event's text per call of `emit`.
 */
export class JsonTraceSink implements TraceSink {
  /** Per pid, per counter name: the JSON of a counter event up to its `ts` value. */
  private readonly counterHeads: Array<Map<string, string>> = [];
  private lastTsNs = -1;
  private lastTs = '';

  constructor(private readonly emit: (json: string, ascii: boolean) => void) {}

  private ts(ns: number): string {
    // Events often share a time (a GPU sample's counters, both pools' occupancy): format once.
    if (ns === this.lastTsNs) return this.lastTs;
    this.lastTsNs = ns;
    return (this.lastTs = gridText(usGrid(ns)));
  }

  processName(pid: number, name: string, sortIndex: number): void {
    this.emit(`{"ph":"M","name":"process_name","pid":${pid},"args":{"name":${JSON.stringify(name)}}}`, false);
    this.emit(`{"ph":"M","name":"process_sort_index","pid":${pid},"args":{"sort_index":${sortIndex}}}`, true);
  }

  threadName(pid: number, tid: number, name: string, sortIndex: number): void {
    this.emit(`{"ph":"M","name":"thread_name","pid":${pid},"tid":${tid},"args":{"name":${JSON.stringify(name)}}}`, false);
    this.emit(`{"ph":"M","name":"thread_sort_index","pid":${pid},"tid":${tid},"args":{"sort_index":${sortIndex}}}`, true);
  }

  openSlice(pid: number, tid: number, name: string, cat: string, start: number, end: number, args: string, flow: SliceFlow | null): void {
    const a = usGrid(start);
    const f = flow === null ? '' : `,"bind_id":${flow.bind},"${flow.out ? 'flow_out' : 'flow_in'}":true`;
    this.emit(`{"ph":"X","name":"${name}","cat":"${cat}","pid":${pid},"tid":${tid},"ts":${this.ts(start)},"dur":${gridText(usGrid(end) - a)}${f},"args":${args}}`, true);
  }

  closeSlice(): void {}

  instant(pid: number, tid: number | null, name: string, cat: string, t: number, args: string): void {
    const where = tid === null ? `"s":"g","pid":${pid}` : `"s":"t","pid":${pid},"tid":${tid}`;
    this.emit(`{"ph":"I",${where},"name":${JSON.stringify(name)},"cat":"${cat}","ts":${this.ts(t)},"args":${args}}`, false);
  }

  counter(pid: number, spec: CounterSpec, t: number, value: number): void {
    // The fixed part comes from a cache: counters are over half the trace events, and each piece
    // joined per event is one more string to allocate and to flatten when the event is encoded.
    let heads = this.counterHeads[pid];
    if (!heads) heads = this.counterHeads[pid] = new Map<string, string>();
    let head = heads.get(spec.name);
    if (head === undefined) heads.set(spec.name, (head = `{"ph":"C","name":"${spec.name}","pid":${pid},"ts":`));
    this.emit(`${head}${this.ts(t)},"args":{"${spec.key}":${value}}}`, true);
  }
}

export interface StreamProgress {
  bytesRead: number;
  totalBytes: number | null;
  events: number;
}

export type TraceStreamOptions = PerfettoOptions & { onProgress?: (p: StreamProgress) => void; totalBytes?: number | null; sourceBytes?: () => number; title?: string };

/**
 * Buffer's per-encoding writers, which `buf.write(s, at, encoding)` calls after checking its
 * arguments; called directly they save that on ~2 million small writes per million events.
 * Not in Node's typings, so used only when present (plain `write` otherwise).
 */
interface FastWrite {
  latin1Write(s: string, at: number): number;
  utf8Write(s: string, at: number): number;
}
const FAST_WRITE = typeof (Buffer.prototype as unknown as Partial<FastWrite>).latin1Write === 'function' && typeof (Buffer.prototype as unknown as Partial<FastWrite>).utf8Write === 'function';

/**
 * Writes strings and bytes to a stream in batches and waits for 'drain' when the stream is full
 * (Node's backpressure contract), so memory stays bounded however fast events are produced.
 */
export class BatchedWriter {
  // Each string is encoded into a preallocated buffer as soon as it comes, so it dies young (cheap
  // to collect) and is never joined with others first: gathering strings (`acc += s`) built deep
  // ropes that V8 then had to flatten, and holding megabytes of them made the GC most of the time.
  private buf: Buffer;
  private pos = 0;
  private full: Buffer[] = [];
  private fullBytes = 0;
  constructor(
    private readonly out: Writable,
    private readonly batchBytes = 4 << 20,
  ) {
    this.buf = Buffer.allocUnsafe(batchBytes);
  }

  /** `ascii` true when the caller knows `s` is ASCII: then latin1 encodes it (a plain copy), else UTF-8. */
  write(s: string, ascii = false): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    const most = ascii ? s.length : s.length * 3;
    if (this.pos + most > this.buf.length) {
      this.rotate();
      if (most > this.buf.length) {
        const big = Buffer.from(s, ascii ? 'latin1' : 'utf8');
        this.full.push(big);
        this.fullBytes += big.length;
        return;
      }
    }
    this.pos += FAST_WRITE ? (ascii ? (this.buf as unknown as FastWrite).latin1Write(s, this.pos) : (this.buf as unknown as FastWrite).utf8Write(s, this.pos)) : this.buf.write(s, this.pos, ascii ? 'latin1' : 'utf8');
  }

  /** Writes bytes (copied: the caller may reuse its array). */
  bytes(b: Uint8Array): void {
    if (this.pos + b.length > this.buf.length) {
      this.rotate();
      if (b.length > this.buf.length) {
        const big = Buffer.from(b);
        this.full.push(big);
        this.fullBytes += big.length;
        return;
      }
    }
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** Writes one ASCII byte (separators between events: no string needed). */
  byte(b: number): void {
    if (this.pos >= this.buf.length) this.rotate();
    this.buf[this.pos++] = b;
  }

  private rotate(): void {
    if (this.pos === 0) return;
    this.full.push(this.buf.subarray(0, this.pos));
    this.fullBytes += this.pos;
    this.buf = Buffer.allocUnsafe(this.batchBytes);
    this.pos = 0;
  }

  get pendingBytes(): number {
    return this.fullBytes + this.pos;
  }

  /** Hands full batches to the stream (all of it with `force`), waiting for 'drain' when it is full. */
  async flush(force = false): Promise<void> {
    if (force) this.rotate();
    while (this.full.length) {
      const chunk = this.full.shift()!;
      this.fullBytes -= chunk.length;
      if (!this.out.write(chunk)) await this.drained();
    }
  }

  private drained(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        this.out.off('error', onError);
        resolve();
      };
      const onError = (err: Error) => {
        this.out.off('drain', onDrain);
        reject(err);
      };
      this.out.once('drain', onDrain);
      this.out.once('error', onError);
    });
  }

  async end(): Promise<void> {
    await this.flush(true);
    await new Promise<void>((resolve, reject) => {
      this.out.once('error', reject);
      this.out.end(() => resolve());
    });
  }
}

/**
 * Reads a log (its decompressed bytes) into a builder, handing what it produced to `writer` before
 * reading on, so memory stays bounded; a cut-off or damaged source ends the read with a bad line
 * saying so, and everything readable is exported.
 */
export async function streamIntoBuilder(source: AsyncIterable<Uint8Array>, builder: PerfettoTraceBuilder, writer: BatchedWriter, options: TraceStreamOptions): Promise<PerfettoReport> {
  const decoder = new EventLineDecoder({ onEvent: (e) => builder.push(e), onBadLine: (b) => builder.badLine(b) });
  let bytesRead = 0;
  let lastProgress = 0;
  const progress = () => {
    options.onProgress?.({ bytesRead: options.sourceBytes ? options.sourceBytes() : bytesRead, totalBytes: options.totalBytes ?? null, events: builder.report.events });
  };
  try {
    for await (const chunk of source) {
      bytesRead += chunk.length;
      decoder.push(chunk);
      await writer.flush();
      const now = Date.now();
      if (now - lastProgress > 250) {
        lastProgress = now;
        progress();
      }
    }
  } catch (e) {
    const code = (e as { code?: string }).code;
    // A cut-off .gz, or a damaged .kvscope (its reader throws bad_run after yielding what it could):
    // export every event that was readable, and say so.
    if (code !== 'Z_BUF_ERROR' && code !== 'Z_DATA_ERROR' && code !== 'bad_run') throw e;
    decoder.end();
    const what = code === 'bad_run' ? (e as Error).message : `compressed log is damaged or cut off after ${bytesRead} bytes (${(e as Error).message})`;
    builder.badLine({ reason: 'truncated', offset: bytesRead, line: decoder.lines + 1, seq: null, message: what });
  }
  decoder.end();
  const report = builder.finish();
  progress();
  return report;
}

/** Streams a log into a Chrome Trace Event JSON file on `out`. */
export async function writePerfettoTrace(source: AsyncIterable<Uint8Array>, out: Writable, options: TraceStreamOptions = {}): Promise<PerfettoReport> {
  const writer = new BatchedWriter(out);
  let first = true;
  writer.write('{"traceEvents":[\n');
  const sink = new JsonTraceSink((json, ascii) => {
    if (first) first = false;
    else {
      writer.byte(0x2c); // ,
      writer.byte(0x0a); // \n
    }
    writer.write(json, ascii);
  });
  const builder = new PerfettoTraceBuilder(sink, options);
  const report = await streamIntoBuilder(source, builder, writer, options);
  const meta = { kvscope: { format: 'kvscope-perfetto', version: 2, title: options.title ?? null, ...builder.reportArgs() } };
  writer.write(`\n],\n"metadata":${JSON.stringify(meta)}}\n`);
  await writer.end();
  return report;
}
