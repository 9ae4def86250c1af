/**
 * The replay model: a run's `blocks` lines compiled into typed arrays of per-block moves, with the
 * pool slot each move vacates and fills (one grid per pool the run declares: gpu, host and any
 * tier below them, a disk), so the pool state at any time t is
 * reached by applying (or undoing) moves from wherever the cursor stands. Pure (no DOM), used by the
 * Live view (replay, scrubber, live tail) and the timeline, and unit-tested against BlockLedger.
 *
 * Why precomputed slots: a block keeps its cell in the pool grid from the move that brought it in
 * until the move that takes it out, so the grid is stable frame to frame and a move is a path from
 * one cell to another. Slots are chosen at compile time (lowest free cell first, as a stack of free
 * cells), which makes every move exactly reversible and scrubbing backwards as cheap as forwards.
 *
 * Rule breaks (docs/protocol.md "Rules every reader checks") are applied best effort as in BlockLedger: a move whose
 * source is absent only adds, an add to a pool that already holds the block only removes; a pool
 * over its capacity grows cells past capacity_blocks (drawn beyond the grid) instead of losing blocks.
 */
import { CopyMatcher, type MatcherState, type MatchSink, type MatchSource } from './copy-matching';
import { blockMove, DEFAULT_TIER, isCopy, type BlockOp, type BlocksEvent, type CopyDir, type CopyEvent, type DiskDir, type KvEvent, type PoolEvent, type PoolName, type XferEvent } from './protocol';
import { StartupCopyRule } from './startup-copies';

/**
 * A move's op: a move between gpu and host is an offload or an onboard (whatever its line calls
 * it), and `move` is one to or from another tier (a disk spill or promotion).
 */
export const OP_CODE: Record<BlockOp, number> = { store: 0, offload: 1, onboard: 2, evict: 3, hit: 4, move: 5 };
/** The ops of v1's two pools, by code (the first five: what the Summary counts per round). */
export const OP_NAMES: readonly BlockOp[] = ['store', 'offload', 'onboard', 'evict', 'hit'];
/** Every op by its code. */
export const OP_BY_CODE: readonly BlockOp[] = [...OP_NAMES, 'move'];
/** The GPU pool's and the host pool's grids are always 0 and 1 (a v1 run's two); other pools follow, in the order their lines come. */
export const POOL_GPU = 0;
export const POOL_HOST = 1;
const NONE = -1;

/** Growable typed column. */
class Column<T extends Float64Array | Int32Array | Int8Array | Uint8Array | Int16Array> {
  length = 0;
  constructor(
    public data: T,
    private readonly make: (n: number) => T,
  ) {}
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = this.make(Math.max(16, this.data.length * 2));
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

const f64 = (n: number) => new Float64Array(n);
const i32 = (n: number) => new Int32Array(n);
const i16 = (n: number) => new Int16Array(n);
const i8 = (n: number) => new Int8Array(n);
const u8 = (n: number) => new Uint8Array(n);

/** Per-pool slot allocation at compile time. */
class SlotAllocator {
  /** Free cells, lowest on top. */
  private free: number[] = [];
  size = 0;
  constructor(public capacity: number) {
    this.setCapacity(capacity);
  }
  setCapacity(capacity: number): void {
    const used = new Set<number>();
    for (let s = 0; s < this.size; s++) if (!this.free.includes(s)) used.add(s);
    this.capacity = Math.max(capacity, this.size);
    this.free = [];
    for (let s = this.capacity - 1; s >= 0; s--) if (!used.has(s)) this.free.push(s);
    this.size = this.capacity;
  }
  take(): number {
    if (this.free.length === 0) {
      // Over capacity (a rule break): grow rather than lose the block.
      return this.size++;
    }
    return this.free.pop()!;
  }
  /** Free cells = every cell below `size` not marked in `used`, lowest on top (see ReplayModel.resume). */
  resetFree(used: Uint8Array): void {
    this.free = [];
    for (let s = this.size - 1; s >= 0; s--) if (!used[s]) this.free.push(s);
  }
  give(slot: number): void {
    // Keep the stack ordered so the lowest free cell is reused first (a compact grid).
    const f = this.free;
    let i = f.length;
    f.push(slot);
    while (i > 0 && f[i - 1]! < slot) {
      f[i] = f[i - 1]!;
      i--;
    }
    f[i] = slot;
  }
}

export interface PoolSpec {
  capacity_blocks: number;
  block_bytes: number;
  block_tokens: number;
  /** The pool line's tier (left out for gpu and host in a v1 log: DEFAULT_TIER), medium, and a disk tier's folder and I/O method. */
  tier?: number;
  medium?: PoolEvent['medium'];
  path?: string;
  io?: PoolEvent['io'];
}

/** Cumulative series of one transfer direction, by end time, for "bytes moved" and bandwidth. */
export interface XferSeries {
  /** End times (ns, run clock), ascending. */
  end: Float64Array;
  /** Bytes completed up to and including entry i. */
  cumBytes: Float64Array;
  length: number;
}

export interface ReplaySample {
  t: number;
  values: Float64Array;
}

type NumberColumn = Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/**
 * Everything a ReplayModel holds, as typed columns (each exactly its length) and a few scalars:
 * what a run index stores (src/shared/run-index) and `ReplayModel.fromState` takes back. Request
 * phase times and GPU sample values are NaN where the model has null or no value.
 */
export interface ReplayState {
  lastSeq: number;
  startT: number | null;
  endT: number;
  /** null when no line was seen (the model's Infinity). */
  minT: number | null;
  ended: boolean;
  gpuMemoryTotal: number | null;
  pools: Partial<Record<PoolName, PoolSpec>>;
  /** The pool of each grid: gpu, host, then the others in the order their lines came. */
  gridPools: PoolName[];
  usedCells: number[];
  slotCounts: number[];
  cuptiSeen: boolean;
  /** Start-up copies counted per source and direction, and what the rule that tells them has seen. */
  startup: Record<MatchSource, Record<CopyDir, StartupCopies>>;
  startupRule: StartupCopyRule['state'];
  /** What waits inside the copy-matching window (its decided pairs are the `pairs.*` columns). */
  matcher: MatcherState<number, number>;
  blockIds: Array<string | number>;
  columns: Record<string, NumberColumn>;
}

const MOVE_COLUMNS = ['t', 'op', 'block', 'user', 'round', 'srcPool', 'srcSlot', 'dstPool', 'dstSlot', 'effect', 'seq'] as const;
const XFER_SOURCES: ReadonlyArray<XferEvent['source']> = ['cupti', 'engine'];
const DISK_DIRS: readonly DiskDir[] = ['f2h', 'h2f'];
const REQ_PHASES = ['queued', 'scheduled', 'first_token', 'done'] as const;

/**
 * The compiled run. Append-only: `append(events)` extends it for a live tail; cursors created
 * earlier stay valid and see the new moves.
 */
export class ReplayModel {
  /** Move columns, one row per (blocks line × id). */
  readonly t = new Column(f64(1024), f64);
  readonly op = new Column(u8(1024), u8);
  readonly block = new Column(i32(1024), i32);
  readonly user = new Column(i16(1024), i16);
  readonly round = new Column(i16(1024), i16);
  /** The grid (pool) the block was in (or, for a hit, where it sits); NONE when it came from nowhere. */
  readonly srcPool = new Column(i8(1024), i8);
  readonly srcSlot = new Column(i32(1024), i32);
  /** Where it went; NONE for evict and hit. */
  readonly dstPool = new Column(i8(1024), i8);
  readonly dstSlot = new Column(i32(1024), i32);
  /** Bit 1: the source cell is vacated; bit 2: the destination cell is filled. */
  readonly effect = new Column(u8(1024), u8);
  /** seq of the blocks line of each move (ties moves to their log line). */
  readonly seq = new Column(f64(1024), f64);

  /** Block id ↔ dense index; the user who first stored or moved each block (colour). */
  readonly blockIndex = new Map<string | number, number>();
  readonly blockIds: Array<string | number> = [];
  readonly blockUser = new Column(i16(1024), i16);

  readonly pools: Partial<Record<PoolName, PoolSpec>> = {};
  /** The pool drawn in each grid: gpu and host always (a v1 run's two), then every other pool line's, as it comes. */
  readonly gridPools: PoolName[] = ['gpu', 'host'];
  private readonly alloc: SlotAllocator[] = [new SlotAllocator(0), new SlotAllocator(0)];
  /** Compile-time location of each block: its slot in each grid, or NONE. */
  private readonly where: Array<Column<Int32Array>> = [new Column(i32(1024), i32), new Column(i32(1024), i32)];

  /** The grid a pool is drawn in, or NONE for a pool no line declared (gpu and host always have theirs). */
  gridOf(pool: PoolName): number {
    return this.gridPools.indexOf(pool);
  }

  /** The grids in tier order (nearest compute first): what the Pools view draws left to right. */
  gridsByTier(): number[] {
    const tier = (g: number) => this.pools[this.gridPools[g]!]?.tier ?? DEFAULT_TIER[this.gridPools[g]!] ?? 8 + g;
    return this.gridPools.map((_, g) => g).sort((a, b) => tier(a) - tier(b) || a - b);
  }

  /**
   * Every copy, per source and direction, as columns in log order. CUPTI's records and the
   * engine's own reports can describe the same bytes (a run with tracing has both), so views read
   * one source through `xfer`: the traced copies when the run has any, else the engine's.
   */
  private readonly xferBySource: Record<XferEvent['source'], XferColumns> = { cupti: xferColumns(), engine: xferColumns() };
  private cuptiSeen = false;

  /** The copies the views show, per direction (the timeline's lanes are built from them). */
  get xfer(): XferColumns {
    return this.xferBySource[this.shownSource];
  }

  /** The trace source the views show: CUPTI's when the run has any, else the engine's. */
  get shownSource(): MatchSource {
    return this.cuptiSeen ? 'cupti' : 'engine';
  }

  /**
   * Start-up copies (the plain-copy check before the workload, shared/startup-copies.ts): never
   * KV traffic, so kept out of `xfer` and every figure built on it, and counted here, per source.
   */
  private readonly startupBySource: Record<MatchSource, Record<CopyDir, StartupCopies>> = { cupti: startupDirs(), engine: startupDirs() };
  private readonly startupRule = new StartupCopyRule();

  /**
   * A disk tier's I/O (xfer h2f: writes, f2h: reads), timed by the engine (CUPTI cannot see file
   * I/O), in log order: no memory copy, so kept out of `xfer`, the copy matching and every copy figure.
   */
  private readonly diskXfer: DiskXferColumns = diskXferColumns();

  /** The disk tier's reads (f2h) and writes (h2f), per direction, in log order. */
  get diskIo(): Readonly<DiskXferColumns> {
    return this.diskXfer;
  }

  /** The start-up copies of the shown source, per direction. */
  get startupCopies(): Readonly<Record<CopyDir, StartupCopies>> {
    return this.startupBySource[this.shownSource];
  }

  /**
   * Which copies carried each block move (shared/copy-matching.ts, the rule the exports use), fed
   * as lines are appended. A move is named by its blocks line's seq, a copy by `copyRef`.
   */
  private readonly pairs = pairColumns();
  private readonly matcher = new CopyMatcher<number, number>(pairSink(this.pairs));
  private linksCache: { lastSeq: number; links: CopyPairs } | null = null;

  /** Earliest time seen on any line or copy (ns). */
  minT = Infinity;
  /** GPU 0's memory, from run.start (the GPU memory track's top). */
  gpuMemoryTotal: number | null = null;
  /** nvidia-smi samples of GPU 0: mem_used_bytes, util_pct, pcie_rx, pcie_tx (NaN when absent). */
  readonly gpuSamples: ReplaySample[] = [];
  /** Request phases for "round and request in progress". */
  readonly requests = new Map<string, { user: number; round: number; queued: number | null; scheduled: number | null; first_token: number | null; done: number | null }>();
  startT: number | null = null;
  endT = 0;
  ended = false;
  private lastSeq = -1;

  /** Highest cell ever filled + 1, per grid: the part of a huge pool the run actually used. */
  readonly usedCells: number[] = [0, 0];

  /** seq of the last line applied (−1 before any). */
  get lastSeqSeen(): number {
    return this.lastSeq;
  }

  get moveCount(): number {
    return this.t.length;
  }

  /** Cells in a grid: its pool's capacity, or more if the log overfilled it. */
  slotCount(grid: number): number {
    return this.alloc[grid]!.size;
  }

  /** How many grids (pools) the model has: 2 for a v1 run. */
  get gridCount(): number {
    return this.gridPools.length;
  }

  /** A grid for a pool line of a pool beyond gpu and host. */
  private addGrid(pool: PoolName): number {
    const g = this.gridPools.length;
    this.gridPools.push(pool);
    this.alloc.push(new SlotAllocator(0));
    const w = new Column(i32(Math.max(1024, this.blockIds.length)), i32);
    w.data.fill(NONE, 0, this.blockIds.length);
    w.length = this.blockIds.length;
    this.where.push(w);
    this.usedCells.push(0);
    return g;
  }

  /** Adds events (seq order); lines already seen (seq ≤ last) are skipped so a resumed tail never double-applies. */
  append(events: readonly KvEvent[]): void {
    if (this.resumePending) this.resume();
    for (const e of events) {
      if (e.seq <= this.lastSeq) continue;
      this.lastSeq = e.seq;
      if (e.t > this.endT) this.endT = e.t;
      if (e.t < this.minT) this.minT = e.t;
      this.matcher.clock(e.t);
      this.startupRule.observe(e);
      switch (e.type) {
        case 'run.start':
          this.startT = e.t;
          this.gpuMemoryTotal = e.host.gpus[0]?.memory_total_bytes ?? null;
          break;
        case 'run.end':
          this.ended = true;
          break;
        case 'pool': {
          this.pools[e.pool] = poolSpec(e);
          let grid = this.gridOf(e.pool);
          if (grid === NONE) grid = this.addGrid(e.pool);
          this.alloc[grid]!.setCapacity(e.capacity_blocks);
          if (e.pool === 'gpu' || e.pool === 'host') this.matcher.pool(e.pool, e.block_bytes);
          break;
        }
        case 'blocks': {
          const op = this.applyBlocks(e);
          if (op === 'offload' || op === 'onboard') this.matcher.addMove(e.seq, op, e.t, e.ids.length);
          break;
        }
        case 'xfer':
          // A disk tier's I/O is no memory copy: kept apart from the copies.
          if (isCopy(e)) this.addXfer(e);
          else this.addDiskXfer(e);
          if (e.end > this.endT) this.endT = e.end;
          if (e.start < this.minT) this.minT = e.start;
          break;
        case 'gpu':
          if (e.index === 0) {
            this.gpuSamples.push({
              t: e.t,
              values: Float64Array.of(e.mem_used_bytes ?? NaN, e.util_pct ?? NaN, e.pcie_rx_bytes_per_s ?? NaN, e.pcie_tx_bytes_per_s ?? NaN),
            });
          }
          break;
        case 'req': {
          const key = `${e.user}/${e.round}`;
          let r = this.requests.get(key);
          if (!r) {
            r = { user: e.user, round: e.round, queued: null, scheduled: null, first_token: null, done: null };
            this.requests.set(key, r);
          }
          r[e.phase] = e.t;
          break;
        }
        default:
          break;
      }
      this.matcher.settle();
    }
    this.linksCache = null;
  }

  /**
   * Every (move, copy, bytes) pair of the matching rule over the lines appended so far: the pairs
   * already final, and what the rule decides for the moves and copies still inside its window if
   * the log ended here (for a live run; a finished log's pairs are then the export's exactly).
   */
  copyPairs(): CopyPairs {
    if (this.linksCache?.lastSeq === this.lastSeq) return this.linksCache.links;
    const tail = pairColumns();
    this.matcher.snapshot(pairSink(tail));
    const join = (a: Column<Float64Array>, b: Column<Float64Array>) => {
      const out = new Float64Array(a.length + b.length);
      out.set(a.data.subarray(0, a.length));
      out.set(b.data.subarray(0, b.length), a.length);
      return out;
    };
    const links: CopyPairs = {
      move: join(this.pairs.move, tail.move),
      copy: join(this.pairs.copy, tail.copy),
      bytes: join(this.pairs.bytes, tail.bytes),
      length: this.pairs.move.length + tail.move.length,
    };
    this.linksCache = { lastSeq: this.lastSeq, links };
    return links;
  }

  /** The xfer line (seq) of a copy named by `copyRef`. */
  copySeq(ref: number): number {
    const c = decodeCopyRef(ref);
    return this.xferBySource[c.source][c.dir].seq.data[c.index]!;
  }

  private indexOf(id: string | number, user: number): number {
    let i = this.blockIndex.get(id);
    if (i === undefined) {
      i = this.blockIds.length;
      this.blockIndex.set(id, i);
      this.blockIds.push(id);
      this.blockUser.push(user);
      for (const w of this.where) w.push(NONE);
    }
    return i;
  }

  private push(seq: number, t: number, op: number, b: number, user: number, round: number, sp: number, ss: number, dp: number, ds: number, effect: number): void {
    this.seq.push(seq);
    this.t.push(t);
    this.op.push(op);
    this.block.push(b);
    this.user.push(user);
    this.round.push(round);
    this.srcPool.push(sp);
    this.srcSlot.push(ss);
    this.dstPool.push(dp);
    this.dstSlot.push(ds);
    this.effect.push(effect);
  }

  /**
   * Compiles one blocks line into moves between the grids.
   * @returns its op as the grids see it (a move gpu → host is an offload, host → gpu an onboard)
   */
  private applyBlocks(e: BlocksEvent): BlockOp {
    const { seq, t, ids } = e;
    const u = e.user ?? -1;
    const r = e.round ?? -1;
    const keep = e.keep_source === true;
    const mv = blockMove(e);
    const op: BlockOp = mv ? (mv.from === 'gpu' && mv.to === 'host' ? 'offload' : mv.from === 'host' && mv.to === 'gpu' ? 'onboard' : 'move') : e.op;
    const code = OP_CODE[op];
    const grid = this.gridOf(e.pool ?? 'gpu');
    const from = mv ? this.gridOf(mv.from) : NONE;
    const to = mv ? this.gridOf(mv.to) : NONE;
    // A line that touches no grid (a pool no line declared: a rule break) has nothing to draw.
    if ((mv && (from === NONE && to === NONE || mv.from === mv.to)) || (!mv && grid === NONE)) return op;
    for (const id of ids) {
      const b = this.indexOf(id, u);
      const at = (p: number) => this.where[p]!.data[b]!;
      const set = (p: number, s: number) => {
        this.where[p]!.data[b] = s;
      };
      const leave = (p: number): number => {
        const s = at(p);
        if (s !== NONE) {
          this.alloc[p]!.give(s);
          set(p, NONE);
        }
        return s;
      };
      const enter = (p: number): [number, boolean] => {
        const s = at(p);
        if (s !== NONE) return [s, false]; // already there (a rule break): nothing to fill
        const ns = this.alloc[p]!.take();
        set(p, ns);
        if (ns + 1 > this.usedCells[p]!) this.usedCells[p] = ns + 1;
        return [ns, true];
      };
      if (this.blockUser.data[b] === -1 && u >= 0) this.blockUser.data[b] = u;
      switch (op) {
        case 'store': {
          const [ds, filled] = enter(grid);
          this.push(seq, t, code, b, u, r, NONE, NONE, grid, ds, filled ? 2 : 0);
          break;
        }
        case 'offload':
        case 'onboard':
        case 'move': {
          const src = from === NONE ? NONE : at(from);
          let vacated = false;
          if (!keep && src !== NONE) {
            leave(from);
            vacated = true;
          }
          const [ds, filled] = to === NONE ? [NONE, false] : enter(to);
          this.push(seq, t, code, b, u, r, src === NONE ? NONE : from, src, to, ds, (vacated ? 1 : 0) | (filled ? 2 : 0));
          break;
        }
        case 'evict': {
          const src = leave(grid);
          this.push(seq, t, code, b, u, r, src === NONE ? NONE : grid, src, NONE, NONE, src === NONE ? 0 : 1);
          break;
        }
        case 'hit': {
          const s = at(grid);
          this.push(seq, t, code, b, u, r, s === NONE ? NONE : grid, s, NONE, NONE, 0);
          break;
        }
      }
    }
    return op;
  }

  private addDiskXfer(e: XferEvent): void {
    const x = this.diskXfer[e.dir as DiskDir];
    x.start.push(e.start);
    x.end.push(e.end);
    x.bytes.push(e.bytes);
    x.seq.push(e.seq);
    x.sorted = null;
  }

  private addXfer(e: CopyEvent): void {
    const source: MatchSource = e.source === 'cupti' ? 'cupti' : 'engine';
    if (source === 'cupti') this.cuptiSeen = true;
    if (this.startupRule.isStartup(e)) {
      const s = this.startupBySource[source][e.dir];
      if (!s) return;
      s.count++;
      s.bytes += e.bytes;
      return;
    }
    const x = this.xferBySource[source][e.dir];
    if (!x) return;
    const col = x.start.length;
    x.start.push(e.start);
    x.end.push(e.end);
    x.bytes.push(e.bytes);
    x.seq.push(e.seq);
    x.sorted = null;
    this.matcher.addCopy(copyRef(source, e.dir, col), e.dir, source, e.start, e.bytes);
  }

  /** The transfers of one direction (a copy's, or the disk tier's reads and writes) ordered by end time with running byte totals. */
  xferSeries(dir: 'h2d' | 'd2h' | DiskDir): XferSeries {
    const x = dir === 'h2d' || dir === 'd2h' ? this.xfer[dir] : this.diskXfer[dir];
    const n = x.end.length;
    if (x.sorted && x.sorted.length === n) return x.sorted;
    const ends = x.end.data;
    const bytes = x.bytes.data;
    let ordered = true;
    for (let i = 1; i < n && ordered; i++) if (ends[i]! < ends[i - 1]!) ordered = false;
    const end = new Float64Array(n);
    const cumBytes = new Float64Array(n);
    let acc = 0;
    if (ordered) {
      for (let i = 0; i < n; i++) {
        end[i] = ends[i]!;
        acc += bytes[i]!;
        cumBytes[i] = acc;
      }
    } else {
      const order = new Uint32Array(n);
      for (let i = 0; i < n; i++) order[i] = i;
      order.sort((a, b) => ends[a]! - ends[b]!);
      for (let k = 0; k < n; k++) {
        const i = order[k]!;
        end[k] = ends[i]!;
        acc += bytes[i]!;
        cumBytes[k] = acc;
      }
    }
    x.sorted = { end, cumBytes, length: n };
    return x.sorted;
  }

  /** Bytes of transfers of `dir` finished by time t. */
  bytesMovedBy(dir: 'h2d' | 'd2h' | DiskDir, t: number): number {
    const s = this.xferSeries(dir);
    const k = upperBound(s.end, s.length, t);
    return k === 0 ? 0 : s.cumBytes[k - 1]!;
  }

  /** Bandwidth of `dir` over the window (t − windowNs, t], bytes/s (transfers counted at their end). */
  bandwidthAt(dir: 'h2d' | 'd2h' | DiskDir, t: number, windowNs: number): number {
    if (windowNs <= 0) return 0;
    return ((this.bytesMovedBy(dir, t) - this.bytesMovedBy(dir, t - windowNs)) / windowNs) * 1e9;
  }

  /** Index of the first move after time t (moves are in log order; t is non-decreasing in a valid log). */
  movesUpTo(t: number): number {
    // Logs are seq-ordered and t rises with seq, so binary search holds; a clock step backwards
    // only shifts which frame shows a move, never its effect.
    return upperBound(this.t.data, this.t.length, t);
  }

  /** The latest round with a queued request at or before t, and requests running at t. */
  progressAt(t: number): { round: number | null; running: Array<{ user: number; round: number; phase: string }> } {
    let round: number | null = null;
    const running: Array<{ user: number; round: number; phase: string }> = [];
    for (const r of this.requests.values()) {
      if (r.queued !== null && r.queued <= t) round = round === null ? r.round : Math.max(round, r.round);
      if (r.queued !== null && r.queued <= t && (r.done === null || r.done > t)) {
        const phase = r.first_token !== null && r.first_token <= t ? 'decode' : r.scheduled !== null && r.scheduled <= t ? 'prefill' : 'queued';
        running.push({ user: r.user, round: r.round, phase });
      }
    }
    running.sort((a, b) => a.round - b.round || a.user - b.user);
    return { round, running };
  }
  /** The model as columns (views of its own arrays, no copy): what a run index stores. */
  toState(): ReplayState {
    const columns: Record<string, NumberColumn> = {};
    for (const k of MOVE_COLUMNS) columns[k] = this[k].data.subarray(0, this[k].length);
    columns.blockUser = this.blockUser.data.subarray(0, this.blockUser.length);
    for (const src of XFER_SOURCES) {
      for (const dir of XFER_DIRS) {
        const x = this.xferBySource[src][dir];
        columns[`xfer.${src}.${dir}.start`] = x.start.data.subarray(0, x.start.length);
        columns[`xfer.${src}.${dir}.end`] = x.end.data.subarray(0, x.end.length);
        columns[`xfer.${src}.${dir}.bytes`] = x.bytes.data.subarray(0, x.bytes.length);
        columns[`xfer.${src}.${dir}.seq`] = x.seq.data.subarray(0, x.seq.length);
      }
    }
    for (const dir of DISK_DIRS) {
      const x = this.diskXfer[dir];
      for (const k of ['start', 'end', 'bytes', 'seq'] as const) columns[`xfer.disk.${dir}.${k}`] = x[k].data.subarray(0, x[k].length);
    }
    for (const k of ['move', 'copy', 'bytes'] as const) columns[`pairs.${k}`] = this.pairs[k].data.subarray(0, this.pairs[k].length);
    const ns = this.gpuSamples.length;
    const gt = new Float64Array(ns);
    const gv = new Float64Array(ns * 4);
    this.gpuSamples.forEach((s, i) => {
      gt[i] = s.t;
      gv.set(s.values, i * 4);
    });
    columns['gpu.t'] = gt;
    columns['gpu.values'] = gv;
    const reqs = [...this.requests.values()];
    columns['req.user'] = Float64Array.from(reqs, (r) => r.user);
    columns['req.round'] = Float64Array.from(reqs, (r) => r.round);
    for (const ph of REQ_PHASES) columns[`req.${ph}`] = Float64Array.from(reqs, (r) => r[ph] ?? NaN);
    return {
      lastSeq: this.lastSeq,
      startT: this.startT,
      endT: this.endT,
      minT: Number.isFinite(this.minT) ? this.minT : null,
      ended: this.ended,
      gpuMemoryTotal: this.gpuMemoryTotal,
      pools: { ...this.pools },
      gridPools: [...this.gridPools],
      usedCells: [...this.usedCells],
      slotCounts: this.alloc.map((a) => a.size),
      cuptiSeen: this.cuptiSeen,
      startup: JSON.parse(JSON.stringify(this.startupBySource)) as ReplayState['startup'],
      startupRule: this.startupRule.state,
      matcher: this.matcher.state(),
      blockIds: this.blockIds,
      columns,
    };
  }

  /**
   * The model a state describes, its columns used in place. It reads exactly as the model the state
   * came from; the bookkeeping that only appending needs (which cell each block holds, the free
   * cells) is rebuilt from the moves on the first `append`.
   */
  static fromState(s: ReplayState): ReplayModel {
    const m = new ReplayModel();
    const col = (name: string): NumberColumn => {
      const c = s.columns[name];
      if (!c) throw new Error(`replay state has no column ${name}`);
      return c;
    };
    const adopt = <T extends NumberColumn>(target: Column<T>, name: string) => {
      const c = col(name);
      target.data = c as T;
      target.length = c.length;
    };
    for (const k of MOVE_COLUMNS) adopt(m[k] as Column<NumberColumn>, k);
    adopt(m.blockUser, 'blockUser');
    for (const src of XFER_SOURCES) {
      for (const dir of XFER_DIRS) {
        const x = m.xferBySource[src][dir];
        adopt(x.start, `xfer.${src}.${dir}.start`);
        adopt(x.end, `xfer.${src}.${dir}.end`);
        adopt(x.bytes, `xfer.${src}.${dir}.bytes`);
        adopt(x.seq, `xfer.${src}.${dir}.seq`);
      }
    }
    for (const dir of DISK_DIRS) for (const k of ['start', 'end', 'bytes', 'seq'] as const) adopt(m.diskXfer[dir][k], `xfer.disk.${dir}.${k}`);
    for (const k of ['move', 'copy', 'bytes'] as const) adopt(m.pairs[k], `pairs.${k}`);
    for (const src of XFER_SOURCES) for (const dir of XFER_DIRS) Object.assign(m.startupBySource[src][dir], s.startup[src][dir]);
    m.startupRule.restore(s.startupRule);
    m.matcher.restore(s.matcher);
    const gt = col('gpu.t');
    const gv = col('gpu.values') as Float64Array;
    for (let i = 0; i < gt.length; i++) m.gpuSamples.push({ t: gt[i]!, values: gv.subarray(i * 4, i * 4 + 4) });
    const ru = col('req.user');
    const rr = col('req.round');
    const phases = REQ_PHASES.map((ph) => col(`req.${ph}`));
    const orNull = (v: number) => (Number.isNaN(v) ? null : v);
    for (let i = 0; i < ru.length; i++) {
      const r = { user: ru[i]!, round: rr[i]!, queued: orNull(phases[0]![i]!), scheduled: orNull(phases[1]![i]!), first_token: orNull(phases[2]![i]!), done: orNull(phases[3]![i]!) };
      m.requests.set(`${r.user}/${r.round}`, r);
    }
    m.blockIds.push(...s.blockIds);
    if (m.blockIds.length !== m.blockUser.length) throw new Error(`replay state: ${m.blockIds.length} block ids for ${m.blockUser.length} blocks`);
    m.lastSeq = s.lastSeq;
    m.startT = s.startT;
    m.endT = s.endT;
    m.minT = s.minT ?? Infinity;
    m.ended = s.ended;
    m.gpuMemoryTotal = s.gpuMemoryTotal;
    Object.assign(m.pools, s.pools);
    for (const pool of s.gridPools.slice(2)) m.addGrid(pool);
    if (s.gridPools.length !== s.slotCounts.length || s.usedCells.length !== s.slotCounts.length) throw new Error(`replay state: ${s.gridPools.length} grids, ${s.slotCounts.length} slot counts, ${s.usedCells.length} used counts`);
    s.usedCells.forEach((n, g) => (m.usedCells[g] = n));
    m.cuptiSeen = s.cuptiSeen;
    s.slotCounts.forEach((n, g) => {
      m.alloc[g]!.capacity = n;
      m.alloc[g]!.size = n;
    });
    m.resumePending = true;
    return m;
  }

  /** True while a model made by fromState has not rebuilt its append bookkeeping. */
  private resumePending = false;

  /**
   * Rebuilds what appending needs from the moves: each block's cell (the moves' effects replayed)
   * and each pool's free cells (every cell below its size that no block holds, lowest on top, as
   * SlotAllocator keeps them), and the block id → index map.
   */
  private resume(): void {
    this.resumePending = false;
    for (let b = 0; b < this.blockIds.length; b++) this.blockIndex.set(this.blockIds[b]!, b);
    const nb = this.blockIds.length;
    for (let p = 0; p < this.gridCount; p++) {
      const w = new Int32Array(Math.max(16, nb)).fill(NONE);
      this.where[p]!.data = w;
      this.where[p]!.length = nb;
    }
    const n = this.moveCount;
    const ef = this.effect.data;
    const bl = this.block.data;
    for (let i = 0; i < n; i++) {
      const e = ef[i]!;
      if (e & 1) this.where[this.srcPool.data[i]!]!.data[bl[i]!] = NONE;
      if (e & 2) this.where[this.dstPool.data[i]!]!.data[bl[i]!] = this.dstSlot.data[i]!;
    }
    for (let p = 0; p < this.gridCount; p++) {
      const a = this.alloc[p]!;
      const used = new Uint8Array(a.size);
      const w = this.where[p]!.data;
      for (let b = 0; b < nb; b++) if (w[b]! !== NONE) used[w[b]!] = 1;
      a.resetFree(used);
    }
  }
}

/** First index in sorted[0..n) whose value is > x. */
export function upperBound(sorted: ArrayLike<number>, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index in sorted[0..n) whose value is ≥ x. */
export function lowerBound(sorted: ArrayLike<number>, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function compileReplay(events: readonly KvEvent[]): ReplayModel {
  const m = new ReplayModel();
  m.append(events);
  return m;
}

/**
 * The pool grids at one point of the replay: which block sits in each cell. Moving the cursor
 * applies moves forwards or undoes them backwards, so playback and scrubbing cost only the moves
 * crossed.
 */
export class ReplayCursor {
  /** Block index in each cell of each grid (the model's `gridPools`), NONE when empty. */
  cells: Int32Array[] = [];
  /** Blocks in each grid. */
  counts: number[] = [];
  /** Moves applied: moves [0, applied) are in effect. */
  applied = 0;

  constructor(readonly model: ReplayModel) {
    this.fit();
  }

  private fit(): void {
    for (let p = 0; p < this.model.gridCount; p++) {
      const have = this.cells[p] ?? new Int32Array(0);
      this.counts[p] ??= 0;
      const need = this.model.slotCount(p);
      if (have.length < need || !this.cells[p]) {
        const next = new Int32Array(Math.max(need, have.length)).fill(NONE);
        next.set(have);
        this.cells[p] = next;
      }
    }
  }

  /** Moves the cursor so that exactly the moves with t ≤ time are in effect. */
  seek(time: number): void {
    this.seekIndex(this.model.movesUpTo(time));
  }

  seekIndex(target: number): void {
    const m = this.model;
    this.fit();
    const sp = m.srcPool.data;
    const ss = m.srcSlot.data;
    const dp = m.dstPool.data;
    const ds = m.dstSlot.data;
    const ef = m.effect.data;
    const bl = m.block.data;
    while (this.applied < target) {
      const i = this.applied++;
      const e = ef[i]!;
      if (e & 1) {
        this.cells[sp[i]!]![ss[i]!] = NONE;
        this.counts[sp[i]!]!--;
      }
      if (e & 2) {
        this.cells[dp[i]!]![ds[i]!] = bl[i]!;
        this.counts[dp[i]!]!++;
      }
    }
    while (this.applied > target) {
      const i = --this.applied;
      const e = ef[i]!;
      if (e & 2) {
        this.cells[dp[i]!]![ds[i]!] = NONE;
        this.counts[dp[i]!]!--;
      }
      if (e & 1) {
        this.cells[sp[i]!]![ss[i]!] = bl[i]!;
        this.counts[sp[i]!]!++;
      }
    }
  }
}

/** Copies of one source per direction, in log order; `seq` is each copy's xfer line. */
type XferColumns = Record<CopyDir, { start: Column<Float64Array>; end: Column<Float64Array>; bytes: Column<Float64Array>; seq: Column<Float64Array>; sorted: XferSeries | null }>;

function xferColumns(): XferColumns {
  const dir = (n: number) => ({ start: new Column(f64(n), f64), end: new Column(f64(n), f64), bytes: new Column(f64(n), f64), seq: new Column(f64(n), f64), sorted: null });
  return { h2d: dir(1024), d2h: dir(1024), d2d: dir(16), h2h: dir(16) };
}

/** A disk tier's transfers per direction, in log order; `seq` is each one's xfer line. */
export type DiskXferColumns = Record<DiskDir, { start: Column<Float64Array>; end: Column<Float64Array>; bytes: Column<Float64Array>; seq: Column<Float64Array>; sorted: XferSeries | null }>;

function diskXferColumns(): DiskXferColumns {
  const dir = () => ({ start: new Column(f64(16), f64), end: new Column(f64(16), f64), bytes: new Column(f64(16), f64), seq: new Column(f64(16), f64), sorted: null });
  return { f2h: dir(), h2f: dir() };
}

/** What the replay keeps of a pool line. */
function poolSpec(e: PoolEvent): PoolSpec {
  const s: PoolSpec = { capacity_blocks: e.capacity_blocks, block_bytes: e.block_bytes, block_tokens: e.block_tokens };
  if (e.tier !== undefined) s.tier = e.tier;
  if (e.medium !== undefined) s.medium = e.medium;
  if (e.path !== undefined) s.path = e.path;
  if (e.io !== undefined) s.io = e.io;
  return s;
}

/** Start-up copies of one direction: how many and their bytes. */
export interface StartupCopies {
  count: number;
  bytes: number;
}

function startupDirs(): Record<CopyDir, StartupCopies> {
  return { h2d: { count: 0, bytes: 0 }, d2h: { count: 0, bytes: 0 }, d2d: { count: 0, bytes: 0 }, h2h: { count: 0, bytes: 0 } };
}

/** The matching rule's pairs: `bytes` of the copy `copy` (see `copyRef`) carry part of the move whose blocks line is `move`. */
export interface CopyPairs {
  move: Float64Array;
  copy: Float64Array;
  bytes: Float64Array;
  length: number;
}

const XFER_DIRS: readonly CopyDir[] = ['h2d', 'd2h', 'd2d', 'h2h'];

/** A copy named by its source, direction and index in that source's columns of the direction (log order). */
export function copyRef(source: MatchSource, dir: CopyDir, index: number): number {
  return index * 8 + (source === 'cupti' ? 4 : 0) + XFER_DIRS.indexOf(dir);
}

export function decodeCopyRef(ref: number): { source: MatchSource; dir: CopyDir; index: number } {
  const low = ref % 8;
  return { source: low & 4 ? 'cupti' : 'engine', dir: XFER_DIRS[low & 3]!, index: (ref - low) / 8 };
}

function pairColumns(): { move: Column<Float64Array>; copy: Column<Float64Array>; bytes: Column<Float64Array> } {
  return { move: new Column(f64(256), f64), copy: new Column(f64(256), f64), bytes: new Column(f64(256), f64) };
}

function pairSink(to: ReturnType<typeof pairColumns>): MatchSink<number, number> {
  return {
    pair(move, copy, bytes) {
      to.move.push(move);
      to.copy.push(copy);
      to.bytes.push(bytes);
    },
    moveDone() {},
    copyDone() {},
  };
}
