/**
 * A run's event log → a Chrome Trace Event JSON file that Perfetto (ui.perfetto.dev) opens, on one
 * clock with what KV Scope shows. Format as Perfetto's JSON importer reads it
 * (shared/reference/profilers.md §2, json_trace_parser_impl.cc):
 *
 * - `ts`/`dur` in microseconds with fractions (the log's integer ns / 1000, see `us`), relative
 *   to run start (the log's `t` already is). No `displayTimeUnit`: old importers took it as the unit.
 * - Tracks: process "Run" (phases, rounds, warnings), "Requests" (one thread per user), "GPU pool"
 *   (offload moves, evictions, occupancy), "Host pool" (onboard moves, evictions, occupancy),
 *   "Copies" (H2D/D2H/D2D/H2H lanes per trace source, bytes in flight), "GPU <i>" (nvidia-smi /
 *   NVML counters). Every pid and (pid, tid) used is named, with sort indices.
 * - `X` slices on one thread nest strictly: overlapping intervals go to separate lanes
 *   (shared/trace-lanes.ts), because the importer moves overlaps to an overflow track (#4280).
 * - Flows v2 (`bind_id` = the move's seq, with `flow_out`/`flow_in`) from each block move to the
 *   copies that carried it. The importer binds a flow end to the slice it is set on, keeps a flow id open after its first
 *   `flow_in` (so one move may end on several copies), and takes one `bind_id` per slice; so a copy
 *   carrying several moves gets one child slice per move ("part", proportional to the bytes), each
 *   ending that move's flow. Matching rule: see `CopyConveyor` and docs/export.md.
 *
 * - Parents are written before their children: the importer sorts by `ts` and a parent and its
 *   first child share one.
 *
 * Streaming: one pass over the log through the shared decoder; output goes through a bounded
 * buffer to a stream with backpressure. State is bounded: open requests and phases, one number per
 * lane, and the moves/copies waiting to be matched inside the matching window.
 */
import type { Writable } from 'node:stream';
import { EventLineDecoder, type BadLine } from '../../../shared/events-reader';
import type { BlocksEvent, GpuSampleEvent, KvEvent, ReqEvent, RequestPhaseTimes, XferDir, XferEvent } from '../../../shared/protocol';
import { LaneAssigner } from '../../../shared/trace-lanes';

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
  /** Trace events written (metadata included). */
  traceEvents: number;
  badLines: number;
  badLineSamples: BadLine[];
  requests: number;
  /**
   * Block moves (offload/onboard lines). matched: carried by at least one copy; partial: matched,
   * but no single trace source carried all its bytes; unmatched: no copy at all. Samples are seqs.
   */
  moves: { total: number; matched: number; unmatched: number; unmatchedSample: number[]; partial: number; partialSample: number[] };
  copies: { total: number; carrying: number; blockSized: number; bytes: Record<XferDir, number> };
  flows: { out: number; in: number };
  /** Timestamps below 0 (before run start) written as 0. */
  clampedTimestamps: number;
  /** Copies whose start was earlier than one already placed on the bytes-in-flight counter. */
  lateCopies: number;
  matching: { beforeNs: number; afterNs: number; lateNs: number };
}

const DEFAULTS = { matchBeforeNs: 50e6, matchAfterNs: 5e9, lateNs: 30e9, keepBadLines: 20 };

const PID = { run: 1, requests: 2, gpuPool: 3, hostPool: 4, copies: 5, gpuBase: 10 } as const;
const SOURCES = ['engine', 'cupti'] as const;
type Source = (typeof SOURCES)[number];
/** Counter names of bytes in flight, one string per source (not rebuilt per copy). */
const IN_FLIGHT: Record<Source, string> = { engine: 'bytes in flight (engine)', cupti: 'bytes in flight (cupti)' };
const MOVE_DIR: Record<'offload' | 'onboard', XferDir> = { offload: 'd2h', onboard: 'h2d' };

interface Move {
  seq: number;
  op: 'offload' | 'onboard';
  t: number;
  blocks: number;
  bytes: number;
  user: number | null;
  round: number | null;
  /** Conveyors (one per trace source) that have not finished with this move. */
  pending: number;
  carried: Record<Source, number>;
  firstStart: number;
  lastEnd: number;
  copies: number;
}

interface PendingCopy {
  ev: XferEvent;
  rem: number;
  blockSized: boolean;
  parts: Array<{ move: Move; bytes: number }>;
}

/**
 * The matching rule for one direction and one trace source. Moves (blocks lines) and copies (xfer
 * lines) each form a byte stream in order (moves by line order, copies by start time); a copy
 * carries the moves whose bytes its bytes cover, first in first out, under two conditions:
 * only copies whose size is a whole number of blocks carry blocks (the engine's other small copies
 * of token ids and sampled tokens do not, PROTOCOL.md "Transfers and blocks agree"), and a copy
 * carries a move only if it starts within [t − before, t + after] of the move's line. A copy too
 * early for the oldest waiting move carries nothing; a move with no copy in its window is
 * unmatched for this source. Since xfer lines may be written up to `late` after the copy started,
 * a move waits until the log's clock passes t + after + late before it is given up.
 */
/** A first-in first-out queue with O(1) shift (Array.shift is O(n) on the long queues a matching window holds). */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  first(): T | undefined {
    return this.items[this.head];
  }

  push(x: T): void {
    this.items.push(x);
  }

  shift(): T | undefined {
    const x = this.items[this.head];
    this.items[this.head++] = undefined as T;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  /** Inserts keeping `key` ascending, walking back from the tail (items arrive nearly sorted). */
  insertSorted(x: T, key: (v: T) => number): void {
    const k = key(x);
    let i = this.items.length;
    while (i > this.head && key(this.items[i - 1]!) > k) i--;
    if (i === this.items.length) this.items.push(x);
    else this.items.splice(i, 0, x);
  }
}

class CopyConveyor {
  readonly moves = new Fifo<{ move: Move; rem: number }>();
  readonly copies = new Fifo<PendingCopy>();

  constructor(
    private readonly exporter: PerfettoTraceBuilder,
    readonly dir: XferDir,
    readonly source: Source,
    private readonly blockBytes: () => number,
  ) {}

  /** Whether any copy of this direction and source was read, and when the first move was. */
  private seenCopy = false;
  private firstMoveT: number | null = null;

  /**
   * Queues a move. A source that has written no copy for `after + late` of log time since the
   * first move is taken to be absent (no CUPTI on a CPU run, tracing off): its moves are released
   * at once instead of each waiting out the window, which would hold every recent move in memory.
   * The source turns back on with its first copy.
   */
  addMove(move: Move, now: number, o: Required<PerfettoOptions>): void {
    if (this.firstMoveT === null) this.firstMoveT = move.t;
    if (!this.seenCopy && now - this.firstMoveT > o.matchAfterNs + o.lateNs && this.moves.length === 0) {
      this.exporter.releaseMove(move);
      return;
    }
    this.moves.push({ move, rem: move.bytes });
  }

  addCopy(ev: XferEvent): void {
    this.seenCopy = true;
    const bb = this.blockBytes();
    const c: PendingCopy = { ev, rem: ev.bytes, blockSized: bb > 0 && ev.bytes > 0 && ev.bytes % bb === 0, parts: [] };
    // Keep copies in start order; they arrive nearly sorted, so this walks back a step or two.
    this.copies.insertSorted(c, (x) => x.ev.start);
  }

  /**
   * Matches what can be matched now; `now` is the latest `t` read, `final` at end of log.
   * @returns the log time after which waiting items could be released by the clock alone
   *   (Infinity when nothing waits on the clock), so the caller steps again only then or on new input.
   */
  step(now: number, final: boolean, o: Required<PerfettoOptions>): number {
    if (this.moves.length === 0 && this.copies.length === 0) return Infinity;
    for (;;) {
      const m = this.moves.first();
      const c = this.copies.first();
      if (c && !c.blockSized) {
        this.copies.shift();
        this.exporter.releaseCopy(c, this.source);
        continue;
      }
      if (!m) {
        if (!c) return Infinity;
        // A copy can carry only moves written before start + before; lines come in time order.
        const deadline = c.ev.start + o.matchBeforeNs;
        if (final || now > deadline) {
          this.copies.shift();
          this.exporter.releaseCopy(c, this.source);
          continue;
        }
        return deadline;
      }
      if (c && c.ev.start < m.move.t - o.matchBeforeNs) {
        this.copies.shift();
        this.exporter.releaseCopy(c, this.source);
        continue;
      }
      if (!c || c.ev.start > m.move.t + o.matchAfterNs) {
        // No copy yet, or the next one starts past this move's window: an earlier-starting copy
        // may still be written late, so wait for the clock unless at the end.
        const deadline = m.move.t + o.matchAfterNs + o.lateNs;
        if (final || now > deadline) {
          this.moves.shift();
          this.exporter.releaseMove(m.move);
          continue;
        }
        return deadline;
      }
      const k = Math.min(m.rem, c.rem);
      if (k > 0) {
        c.parts.push({ move: m.move, bytes: k });
        m.rem -= k;
        c.rem -= k;
        m.move.carried[this.source] += k;
        m.move.copies++;
        if (c.ev.start < m.move.firstStart) m.move.firstStart = c.ev.start;
        if (c.ev.end > m.move.lastEnd) m.move.lastEnd = c.ev.end;
      }
      if (m.rem <= 0) {
        this.moves.shift();
        this.exporter.releaseMove(m.move);
      }
      if (c.rem <= 0) {
        this.copies.shift();
        this.exporter.releaseCopy(c, this.source);
      }
    }
  }
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
}

/**
 * Microseconds from integer ns. Perfetto turns µs back into integer ns by truncating `µs * 1000`
 * (older json_utils.cc) or by rounding it (newer, std::llround); n/1000 as a double can land just
 * below n, and truncation then loses 1 ns and breaks exact nesting of touching slices. Writing
 * n + 0.4 ns reads back as n under both rules.
 */
const us = (ns: number): string => {
  const n = Math.round(ns);
  if (n < 0 || !Number.isSafeInteger(n)) return String((n + 0.4) / 1000);
  // Integer arithmetic and concatenation: number-to-string of fractions is the exporter's hot spot.
  const int = Math.floor(n / 1000);
  const frac = n - int * 1000;
  return `${int}${frac < 10 ? '.00' : frac < 100 ? '.0' : '.'}${frac}4`;
};


/**
 * Turns events (in seq order) into trace-event JSON strings handed to `emit`, one per trace event.
 * Pure: no I/O, usable on an in-memory run (tests) and by the streaming exporter.
 */
export class PerfettoTraceBuilder {
  private readonly o: Required<PerfettoOptions>;
  private readonly namedThreads = new Set<string>();
  private readonly tracks = new Map<string, LaneTrack>();
  private readonly userTracks: LaneTrack[] = [];
  private readonly moveTracks: Partial<Record<'offload' | 'onboard', LaneTrack>> = {};
  private readonly copyTracks = new Map<string, LaneTrack>();
  private nextTid = 1;
  private readonly requests = new Map<string, OpenRequest>();
  private readonly phases = new Map<string, number>();
  /** engine h2d, engine d2h, cupti h2d, cupti d2h (see `conveyorIndex`): the directions blocks move in. */
  private readonly conveyorList: CopyConveyor[] = [];
  /** Per conveyor, the log time at which its waiting items may be released by the clock. */
  private readonly deadlines: number[] = [];
  private nextDeadline = Infinity;
  /** Per conveyor, whether it got a move or copy since it was last stepped. */
  private readonly dirty: boolean[] = [];
  private readonly inFlight = new Map<string, { value: number; ends: number[]; lastTs: number }>();
  private readonly occupancy = { gpu: 0, host: 0 };
  private readonly blockBytes = { gpu: 0, host: 0 };
  private readonly gpusNamed = new Set<number>();
  /** Per pid, per counter name: the JSON of a counter event up to its `ts` value. */
  private readonly counterHeads: Array<Map<string, string>> = [];
  /** Per counter key: `,"args":{"key":`. */
  private readonly counterArgHeads = new Map<string, string>();
  private now = 0;
  private lastSeqSeen = -1;
  readonly report: PerfettoReport;

  constructor(
    private readonly emit: (json: string, ascii: boolean) => void,
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
      copies: { total: 0, carrying: 0, blockSized: 0, bytes: { h2d: 0, d2h: 0, d2d: 0, h2h: 0 } },
      flows: { out: 0, in: 0 },
      clampedTimestamps: 0,
      lateCopies: 0,
      matching: { beforeNs: this.o.matchBeforeNs, afterNs: this.o.matchAfterNs, lateNs: this.o.lateNs },
    };
    const processes: Array<[number, string]> = [
      [PID.run, 'Run'],
      [PID.requests, 'Requests (one track per user)'],
      [PID.gpuPool, 'GPU pool'],
      [PID.hostPool, 'Host pool'],
      [PID.copies, 'Copies (H2D / D2H lanes)'],
    ];
    for (const [pid, name] of processes) this.nameProcess(pid, name, pid);
    for (const source of SOURCES) {
      for (const dir of ['h2d', 'd2h'] as const) {
        const c = new CopyConveyor(this, dir, source, () => this.blockBytes[dir === 'd2h' ? 'gpu' : 'host']);
        this.conveyorList.push(c);
        this.deadlines.push(Infinity);
        this.dirty.push(false);
      }
    }
  }

  /** Hands one trace event on; `ascii` false when it may hold text from the log (names, messages, ids). */
  private out(json: string, ascii = true): void {
    this.report.traceEvents++;
    this.emit(json, ascii);
  }

  private ts(ns: number): string {
    if (ns < 0) {
      this.report.clampedTimestamps++;
      return us(0);
    }
    // Events often share a time (a GPU sample's five counters, both pools' occupancy): format once.
    if (ns === this.lastTsNs) return this.lastTs;
    this.lastTsNs = ns;
    return (this.lastTs = us(ns));
  }

  private lastTsNs = -1;
  private lastTs = '';

  private nameProcess(pid: number, name: string, sortIndex: number): void {
    this.out(`{"ph":"M","name":"process_name","pid":${pid},"args":{"name":${JSON.stringify(name)}}}`, false);
    this.out(`{"ph":"M","name":"process_sort_index","pid":${pid},"args":{"sort_index":${sortIndex}}}`);
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
      const name = lane === 0 ? t.name : `${t.name} (lane ${lane + 1})`;
      this.out(`{"ph":"M","name":"thread_name","pid":${t.pid},"tid":${tid},"args":{"name":${JSON.stringify(name)}}}`, false);
      this.out(`{"ph":"M","name":"thread_sort_index","pid":${t.pid},"tid":${tid},"args":{"sort_index":${t.sortBase * 100 + lane}}}`);
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

  /**
   * An X slice; `args` is an object, or its JSON already built (the hot paths build it by hand).
   * `name` is written unescaped: every slice name here is built from numbers and protocol enums.
   */
  private slice(pid: number, tid: number, name: string, cat: string, start: number, end: number, args: Record<string, unknown> | string, flow = ''): void {
    // Integer ns on both ends, so a child computed from a parent never pokes out by rounding.
    const s = Math.max(0, Math.round(start));
    const dur = Math.max(0, Math.round(end) - s);
    this.out(
      `{"ph":"X","name":"${name}","cat":"${cat}","pid":${pid},"tid":${tid},"ts":${this.ts(start)},"dur":${us(dur)}${flow},"args":${typeof args === 'string' ? args : JSON.stringify(args)}}`,
    );
  }

  /** A counter sample; `name` and `key` are plain identifiers chosen here (no escaping needed). */
  private counter(pid: number, name: string, t: number, key: string, value: number, key2?: string, value2?: number): void {
    // The fixed parts come from a cache: counters are over half the trace events, and each piece
    // joined per event is one more string to allocate and to flatten when the event is encoded.
    let heads = this.counterHeads[pid];
    if (!heads) heads = this.counterHeads[pid] = new Map<string, string>();
    let head = heads.get(name);
    if (head === undefined) heads.set(name, (head = `{"ph":"C","name":"${name}","pid":${pid},"ts":`));
    let argHead = this.counterArgHeads.get(key);
    if (argHead === undefined) this.counterArgHeads.set(key, (argHead = `,"args":{"${key}":`));
    if (key2 === undefined) this.out(`${head}${this.ts(t)}${argHead}${value}}}`);
    else this.out(`${head}${this.ts(t)}${argHead}${value},"${key2}":${value2}}}`);
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
    switch (e.type) {
      case 'pool':
        this.blockBytes[e.pool] = e.block_bytes;
        this.counter(e.pool === 'gpu' ? PID.gpuPool : PID.hostPool, `${e.pool === 'gpu' ? 'GPU' : 'Host'} pool capacity`, e.t, 'blocks', e.capacity_blocks);
        break;
      case 'blocks':
        this.onBlocks(e);
        break;
      case 'xfer':
        this.onXfer(e);
        break;
      case 'req':
        this.onReq(e);
        break;
      case 'round': {
        const tid = this.laneTid(PID.run, 'rounds', 2, e.t - e.e2e_ns, e.t);
        this.slice(PID.run, tid, `round ${e.round}`, 'round', e.t - e.e2e_ns, e.t, { round: e.round, e2e_ns: e.e2e_ns, ttft_ns: e.ttft_ns });
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
          this.slice(PID.run, tid, e.name, 'phase', start, e.t, begin === undefined ? { begin_missing: true } : {});
        }
        break;
      case 'log':
        if (e.level === 'warn' || e.level === 'error') {
          const tid = this.tidFor(PID.run, 'warnings and errors', 0, 3);
          this.out(`{"ph":"i","s":"t","name":${JSON.stringify(`${e.level}: ${e.msg.slice(0, 120)}`)},"cat":"log","pid":${PID.run},"tid":${tid},"ts":${this.ts(e.t)},"args":${JSON.stringify({ level: e.level, msg: e.msg, seq: e.seq })}}`, false);
        }
        break;
      case 'run.start':
        this.out(`{"ph":"M","name":"process_name","pid":${PID.run},"args":{"name":${JSON.stringify(`Run ${e.run_id} (${e.engine.name}, ${e.host.hostname})`)}}}`, false);
        for (const g of e.host.gpus) this.nameGpu(g.index, g.name);
        break;
      default:
        break;
    }
    // Step a conveyor when it got input (blocks/xfer lines) or when the clock passed its deadline.
    if (this.now > this.nextDeadline || e.type === 'blocks' || e.type === 'xfer') this.stepConveyors(false);
  }

  /**
   * Steps the conveyors that got input or whose deadline the clock passed. One with neither is in
   * the state its last step left it, waiting on a deadline not yet reached (or on nothing), so
   * stepping it would do nothing and return the same deadline: skipping it changes no output.
   */
  private stepConveyors(final: boolean): void {
    let next = Infinity;
    for (let i = 0; i < this.conveyorList.length; i++) {
      let d = this.deadlines[i]!;
      if (final || this.dirty[i] || this.now > d) {
        d = this.conveyorList[i]!.step(this.now, final, this.o);
        this.deadlines[i] = d;
        this.dirty[i] = false;
      }
      if (d < next) next = d;
    }
    this.nextDeadline = next;
  }

  /** Index of the conveyor for a direction and trace source in `conveyorList`, or -1 (d2d, h2h). */
  private conveyorIndex(dir: XferDir, source: Source): number {
    const d = dir === 'h2d' ? 0 : dir === 'd2h' ? 1 : -1;
    return d < 0 ? -1 : (source === 'engine' ? 0 : 2) + d;
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
    if (num(e.mem_used_bytes)) this.counter(pid, 'memory used', e.t, 'bytes', e.mem_used_bytes);
    if (num(e.util_pct) && num(e.mem_util_pct)) this.counter(pid, 'utilisation', e.t, 'gpu_pct', e.util_pct, 'memory_pct', e.mem_util_pct);
    else if (num(e.util_pct)) this.counter(pid, 'utilisation', e.t, 'gpu_pct', e.util_pct);
    else if (num(e.mem_util_pct)) this.counter(pid, 'utilisation', e.t, 'memory_pct', e.mem_util_pct);
    const rx = e.pcie_rx_bytes_per_s;
    const tx = e.pcie_tx_bytes_per_s;
    if (num(rx) && num(tx)) this.counter(pid, 'PCIe', e.t, 'rx_bytes_per_s', rx, 'tx_bytes_per_s', tx);
    else if (num(rx)) this.counter(pid, 'PCIe', e.t, 'rx_bytes_per_s', rx);
    else if (num(tx)) this.counter(pid, 'PCIe', e.t, 'tx_bytes_per_s', tx);
    if (num(e.power_w)) this.counter(pid, 'power', e.t, 'watts', e.power_w);
    if (num(e.sm_clock_mhz)) this.counter(pid, 'SM clock', e.t, 'mhz', e.sm_clock_mhz);
  }

  private onBlocks(e: BlocksEvent): void {
    const n = e.ids.length;
    const keep = e.keep_source === true;
    const occ = this.occupancy;
    switch (e.op) {
      case 'store':
        occ.gpu += n;
        break;
      case 'offload':
        if (!keep) occ.gpu -= n;
        occ.host += n;
        break;
      case 'onboard':
        if (!keep) occ.host -= n;
        occ.gpu += n;
        break;
      case 'evict': {
        const pool = e.pool ?? 'gpu';
        occ[pool] -= n;
        const pid = pool === 'gpu' ? PID.gpuPool : PID.hostPool;
        const tid = this.tidFor(pid, 'evictions', 0, 2);
        const args = { blocks: n, user: e.user ?? null, round: e.round ?? null, seq: e.seq, ids: e.ids.slice(0, 16) };
        this.out(`{"ph":"i","s":"t","name":"evict ${n} block${n === 1 ? '' : 's'}","cat":"kv","pid":${pid},"tid":${tid},"ts":${this.ts(e.t)},"args":${JSON.stringify(args)}}`, false);
        break;
      }
      case 'hit':
        return;
    }
    if (e.op === 'store' || e.op === 'offload' || e.op === 'onboard' || e.op === 'evict') {
      if (e.op !== 'evict' || e.pool !== 'host') this.counter(PID.gpuPool, 'GPU pool occupancy', e.t, 'blocks', occ.gpu);
      if (e.op === 'offload' || e.op === 'onboard' || e.pool === 'host') this.counter(PID.hostPool, 'Host pool occupancy', e.t, 'blocks', occ.host);
    }
    if (e.op === 'offload' || e.op === 'onboard') {
      const dir = MOVE_DIR[e.op];
      const bb = this.blockBytes[e.op === 'offload' ? 'gpu' : 'host'];
      const move: Move = {
        seq: e.seq,
        op: e.op,
        t: e.t,
        blocks: n,
        bytes: n * bb,
        user: e.user ?? null,
        round: e.round ?? null,
        pending: SOURCES.length,
        carried: { engine: 0, cupti: 0 },
        firstStart: Infinity,
        lastEnd: -Infinity,
        copies: 0,
      };
      this.report.moves.total++;
      for (const source of SOURCES) {
        const i = this.conveyorIndex(dir, source);
        this.dirty[i] = true;
        this.conveyorList[i]!.addMove(move, this.now, this.o);
      }
    }
  }

  private onXfer(e: XferEvent): void {
    this.report.copies.total++;
    this.report.copies.bytes[e.dir] += e.bytes;
    const i = this.conveyorIndex(e.dir, e.source);
    if (i >= 0) {
      this.dirty[i] = true;
      this.conveyorList[i]!.addCopy(e);
    }
    else this.releaseCopy({ ev: e, rem: e.bytes, blockSized: false, parts: [] }, e.source);
  }

  /** Called by a conveyor once a move is done with it. */
  releaseMove(move: Move): void {
    if (--move.pending > 0) return;
    const matched = move.copies > 0;
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
    // Perfetto links a flow only if its start slice is read first (sorted by ts): the move slice
    // starts at its line's time, or 1 ns before its first copy when the copy started earlier.
    const start = matched ? Math.min(move.t, move.firstStart - 1) : move.t;
    const end = matched ? Math.max(move.t, move.lastEnd) : move.t;
    const pid = move.op === 'offload' ? PID.gpuPool : PID.hostPool;
    const track = move.op === 'offload' ? 'offloads (GPU → host)' : 'onboards (host → GPU)';
    const mt = this.moveTracks[move.op] ?? (this.moveTracks[move.op] = this.track(pid, track, 1));
    const tid = this.placeOn(mt, start, end);
    const c = move.carried;
    // Built by hand (hot path); every value is a number, null or boolean.
    const args = `{"seq":${move.seq},"blocks":${move.blocks},"bytes":${move.bytes},"user":${move.user},"round":${move.round},"line_t_ns":${move.t},"carried_bytes":{"engine":${c.engine},"cupti":${c.cupti}},"copies":${move.copies},"matched":${matched}}`;
    const flow = matched ? `,"bind_id":${move.seq},"flow_out":true` : '';
    if (matched) this.report.flows.out++;
    this.slice(pid, tid, `${move.op} ${move.blocks} block${move.blocks === 1 ? '' : 's'}`, 'kv', start, end, args, flow);
  }

  /** Called by a conveyor (or directly) once a copy's matching is final: writes it on its lane. */
  releaseCopy(c: PendingCopy, source: string): void {
    const e = c.ev;
    if (c.blockSized) this.report.copies.blockSized++;
    if (c.parts.length) this.report.copies.carrying++;
    const dirName = e.dir.toUpperCase();
    const key = e.dir + source;
    let ct = this.copyTracks.get(key);
    if (!ct) {
      const sortBase = { h2d: 1, d2h: 2, d2d: 3, h2h: 4 }[e.dir] * 2 + (source === 'cupti' ? 0 : 1);
      ct = this.track(PID.copies, `${dirName} copies (${source})`, sortBase);
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
    const args = `{"bytes":${e.bytes},"bandwidth_gb_per_s":${bw},"dir":"${e.dir}","source":"${e.source}","src_mem":${str(e.src_mem)},"dst_mem":${str(e.dst_mem)},"device":${num(e.device)},"stream":${num(e.stream)},"seq":${e.seq},"carries_blocks_of_moves":[${carried}]}`;
    this.slice(PID.copies, tid, `${dirName} ${formatMiB(e.bytes)}`, 'xfer', e.start, e.end, args);
    // One child per carried move, in byte order and proportional to bytes, each ending that move's flow.
    let done = 0;
    for (const p of c.parts) {
      const a = Math.round(e.start + (durNs * done) / e.bytes);
      done += p.bytes;
      const b = Math.min(e.end, Math.round(e.start + (durNs * done) / e.bytes));
      this.report.flows.in++;
      this.slice(
        PID.copies,
        tid,
        `blocks of ${p.move.op} seq ${p.move.seq}`,
        'xfer.part',
        a,
        b,
        `{"move_seq":${p.move.seq},"bytes":${p.bytes},"blocks":${p.move.bytes > 0 ? (p.bytes / p.move.bytes) * p.move.blocks : 0}}`,
        `,"bind_id":${p.move.seq},"flow_in":true`,
      );
    }
    this.bytesInFlight(e, source);
  }

  /** "bytes in flight" per direction and source: +bytes at each copy's start, −bytes at its end. */
  private bytesInFlight(e: XferEvent, source: string): void {
    const key = `${e.dir}/${source}`;
    let s = this.inFlight.get(key);
    if (!s) {
      s = { value: 0, ends: [], lastTs: -Infinity };
      this.inFlight.set(key, s);
    }
    const name = IN_FLIGHT[source as Source] ?? `bytes in flight (${source})`;
    this.drainEnds(s, e.dir, name, e.start);
    if (e.start < s.lastTs) this.report.lateCopies++;
    s.value += e.bytes;
    s.lastTs = Math.max(s.lastTs, e.start);
    this.counter(PID.copies, name, e.start, e.dir, s.value);
    // Insert the end keeping `ends` sorted ascending by time (value pairs interleaved: [t, bytes]).
    let i = s.ends.length;
    while (i >= 2 && s.ends[i - 2]! > e.end) i -= 2;
    s.ends.splice(i, 0, e.end, e.bytes);
  }

  private drainEnds(s: { value: number; ends: number[]; lastTs: number }, dir: string, name: string, upTo: number): void {
    while (s.ends.length && s.ends[0]! <= upTo) {
      const t = s.ends[0]!;
      s.value -= s.ends[1]!;
      s.ends.splice(0, 2);
      s.lastTs = Math.max(s.lastTs, t);
      this.counter(PID.copies, name, t, dir, s.value);
    }
  }

  private onReq(e: ReqEvent): void {
    const key = `${e.user}/${e.round}`;
    let r = this.requests.get(key);
    if (!r) {
      r = { user: e.user, round: e.round, queued: null, scheduled: null, first_token: null, done: null, last: e.t, doneEvent: null };
      this.requests.set(key, r);
    }
    r[e.phase] = e.t;
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
    };
    this.slice(PID.requests, tid, `user ${r.user} round ${r.round}${incomplete ? ' (incomplete)' : ''}`, 'request', start, end, args);
    // Phases tile the request: queued → scheduled → first token → done.
    const steps: Array<[string, number | null, number | null]> = [
      ['queued', r.queued, r.scheduled],
      ['prefill', r.scheduled, r.first_token],
      ['decode', r.first_token, r.done],
    ];
    for (const [name, a, b] of steps) {
      if (a !== null && b !== null && b >= a) this.slice(PID.requests, tid, name, 'request.phase', a, b, '{}');
    }
  }

  /** How much state is held now (tests check it stays bounded as a run gets longer). */
  stateSize(): { pendingMoves: number; pendingCopies: number; openRequests: number; openPhases: number; lanes: number; inFlightEnds: number } {
    let pendingMoves = 0;
    let pendingCopies = 0;
    for (const c of this.conveyorList) {
      pendingMoves += c.moves.length;
      pendingCopies += c.copies.length;
    }
    let lanes = 0;
    for (const t of this.tracks.values()) lanes += t.lanes.laneCount;
    let inFlightEnds = 0;
    for (const f of this.inFlight.values()) inFlightEnds += f.ends.length / 2;
    return { pendingMoves, pendingCopies, openRequests: this.requests.size, openPhases: this.phases.size, lanes, inFlightEnds };
  }

  /** The log is over: flush everything waiting, then the report event. */
  finish(): PerfettoReport {
    this.stepConveyors(true);
    for (const [key, s] of this.inFlight) {
      const [dir, source] = key.split('/') as [string, string];
      this.drainEnds(s, dir, `bytes in flight (${source})`, Infinity);
    }
    for (const r of this.requests.values()) this.writeRequest(r, true);
    this.requests.clear();
    for (const [name, begin] of this.phases) {
      const tid = this.laneTid(PID.run, 'phases', 1, begin, this.now);
      this.slice(PID.run, tid, name, 'phase', begin, this.now, { end_missing: true });
    }
    this.phases.clear();
    // Visible in Perfetto's UI (a global instant at 0) and in the file's top-level metadata.
    this.out(`{"ph":"i","s":"g","name":"kvscope export report","cat":"kvscope","pid":${PID.run},"ts":${us(0)},"args":${JSON.stringify(this.reportArgs())}}`, false);
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

export interface StreamProgress {
  bytesRead: number;
  totalBytes: number | null;
  events: number;
}

/**
 * Writes strings to a stream in batches and waits for 'drain' when the stream is full
 * (Node's backpressure contract), so memory stays bounded however fast events are produced.
 */
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
 * Streams a log (its decompressed bytes) into a trace file on `out`. Reads each chunk, decodes
 * it, and hands the produced JSON to `out` before reading on, so memory stays bounded.
 */
export async function writePerfettoTrace(
  source: AsyncIterable<Uint8Array>,
  out: Writable,
  options: PerfettoOptions & { onProgress?: (p: StreamProgress) => void; totalBytes?: number | null; sourceBytes?: () => number; title?: string } = {},
): Promise<PerfettoReport> {
  const writer = new BatchedWriter(out);
  let first = true;
  writer.write('{"traceEvents":[\n');
  const builder = new PerfettoTraceBuilder((json, ascii) => {
    if (first) first = false;
    else {
      writer.byte(0x2c); // ,
      writer.byte(0x0a); // \n
    }
    writer.write(json, ascii);
  }, options);
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
  const meta = { kvscope: { format: 'kvscope-perfetto', version: 1, title: options.title ?? null, ...builder.reportArgs() } };
  writer.write(`\n],\n"metadata":${JSON.stringify(meta)}}\n`);
  await writer.end();
  return report;
}
