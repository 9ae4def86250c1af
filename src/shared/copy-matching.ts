/**
 * Which CUDA copies carried a block move: the one rule, used by the timeline ("Trace its blocks",
 * through the replay model) and by the trace exports (flows from a move to its copies), so both
 * always name the same copies. docs/export.md "Matching rule" states it for readers.
 *
 * The protocol has no copy ↔ block key (docs/protocol.md "Transfers and blocks agree"), so the
 * rule works on bytes. Per direction (offload ↔ d2h, onboard ↔ h2d) and per trace source (engine,
 * cupti: each a full account of the same bytes, matched separately):
 *
 * 1. Only copies whose size is a whole number of blocks carry blocks (the engine's small copies of
 *    token ids and sampled tokens do not).
 * 2. Moves (in line order) and copies (in start order) are matched first in, first out by bytes: a
 *    move of n blocks needs n × block_bytes of its source pool; a copy gives its bytes to the
 *    oldest waiting moves. One copy may carry several moves, one move may ride several copies.
 * 3. A copy carries a move only if it starts within [t − before, t + after] of the move's line.
 *    A copy too early for the oldest waiting move carries nothing; a move with no copy in its
 *    window is unmatched for that source.
 * 4. `xfer` lines may be written after later lines (CUPTI flushes late), so a move waits until the
 *    log's clock passes t + after + late before it is given up. A source that wrote no copy for
 *    after + late since the first move is taken to be absent (tracing off) until its first copy.
 *
 * The rule is defined on the log read once in seq order, as a stream: `CopyMatcher` is fed every
 * line (`clock`, then `addMove`/`addCopy`, then `settle`) and reports pairs as it decides them, so
 * memory stays bounded by the matching window. `finish` decides what still waits at the end of the
 * log; `snapshot` does that on a copy, for a live run that goes on.
 */
import type { CopyDir } from './protocol';

export interface MatchOptions {
  /** A copy may carry a move when it starts no earlier than this before the move's line (ns). */
  beforeNs: number;
  /** ... and no later than this after it (ns). */
  afterNs: number;
  /** How long after a copy started its `xfer` line may still be written (ns of log time). */
  lateNs: number;
}

export const MATCH_DEFAULTS: Readonly<MatchOptions> = { beforeNs: 50e6, afterNs: 5e9, lateNs: 30e9 };

/** The trace sources, each matched on its own. */
export const MATCH_SOURCES = ['engine', 'cupti'] as const;
export type MatchSource = (typeof MATCH_SOURCES)[number];
export type MoveOp = 'offload' | 'onboard';

/** The copy direction a move's blocks travel in. */
export const MOVE_DIR: Readonly<Record<MoveOp, 'd2h' | 'h2d'>> = { offload: 'd2h', onboard: 'h2d' };

/** What the matcher tells its user. M and C are the user's handles for a move and a copy. */
export interface MatchSink<M, C> {
  /** `bytes` of copy `c` carry part of move `m` (in byte order, per copy and per move). */
  pair(m: M, c: C, bytes: number, source: MatchSource): void;
  /** Every source is done with this move: its pairs are final. */
  moveDone(m: M): void;
  /** This copy's pairs are final. */
  copyDone(c: C, source: MatchSource): void;
}

/** A move as the conveyors of its direction share it. */
interface MoveRec<M> {
  ref: M;
  t: number;
  bytes: number;
  /** Conveyors (one per source) not yet done with it. */
  pending: number;
}

interface MoveEntry<M> {
  rec: MoveRec<M>;
  rem: number;
}

interface CopyEntry<C> {
  ref: C;
  start: number;
  rem: number;
  blockSized: boolean;
}

/** A first-in first-out queue with O(1) shift (Array.shift is O(n) on the long queues a window holds). */
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

  /** The waiting items, oldest first. */
  live(): T[] {
    return this.items.slice(this.head);
  }
}

/** CopyMatcher.state(): the clock, block sizes, waiting moves (once each) and each conveyor's queues. */
export interface MatcherState<M, C> {
  now: number;
  blockBytes: { gpu: number; host: number };
  moves: Array<{ ref: M; t: number; bytes: number; pending: number }>;
  /** Per conveyor (engine h2d, engine d2h, cupti h2d, cupti d2h): moves as [index in `moves`, bytes left], copies as [ref, start, bytes left, block-sized]. */
  conveyors: Array<{ seenCopy: boolean; firstMoveT: number | null; moves: Array<[number, number]>; copies: Array<[C, number, number, boolean]> }>;
}

/** The rule for one direction and one source. */
class Conveyor<M, C> {
  moves = new Fifo<MoveEntry<M>>();
  copies = new Fifo<CopyEntry<C>>();
  /** Whether any copy of this direction and source was read, and when the first move was. */
  seenCopy = false;
  firstMoveT: number | null = null;

  constructor(
    private readonly owner: CopyMatcher<M, C>,
    readonly source: MatchSource,
    private readonly blockBytes: () => number,
  ) {}

  /**
   * Queues a move. A source that has written no copy for `after + late` of log time since the
   * first move is taken to be absent (no CUPTI on a CPU run, tracing off): its moves are released
   * at once instead of each waiting out the window. The source turns back on with its first copy.
   */
  addMove(rec: MoveRec<M>, now: number, o: MatchOptions): void {
    if (this.firstMoveT === null) this.firstMoveT = rec.t;
    if (!this.seenCopy && now - this.firstMoveT > o.afterNs + o.lateNs && this.moves.length === 0) {
      this.owner.releaseMove(rec);
      return;
    }
    this.moves.push({ rec, rem: rec.bytes });
  }

  addCopy(ref: C, start: number, bytes: number): void {
    this.seenCopy = true;
    const bb = this.blockBytes();
    // Kept in start order; they arrive nearly sorted, so this walks back a step or two.
    this.copies.insertSorted({ ref, start, rem: bytes, blockSized: bb > 0 && bytes > 0 && bytes % bb === 0 }, (x) => x.start);
  }

  /**
   * Matches what can be matched now; `now` is the latest `t` read, `final` at the end of the log.
   * @returns the log time after which waiting items could be released by the clock alone
   *   (Infinity when nothing waits on the clock), so the caller steps again only then or on input.
   */
  step(now: number, final: boolean, o: MatchOptions, sink: MatchSink<M, C>): number {
    for (;;) {
      const m = this.moves.first();
      const c = this.copies.first();
      if (c && !c.blockSized) {
        this.copies.shift();
        sink.copyDone(c.ref, this.source);
        continue;
      }
      if (!m) {
        if (!c) return Infinity;
        // A copy can carry only moves written before start + before; lines come in time order.
        const deadline = c.start + o.beforeNs;
        if (final || now > deadline) {
          this.copies.shift();
          sink.copyDone(c.ref, this.source);
          continue;
        }
        return deadline;
      }
      if (c && c.start < m.rec.t - o.beforeNs) {
        this.copies.shift();
        sink.copyDone(c.ref, this.source);
        continue;
      }
      if (!c || c.start > m.rec.t + o.afterNs) {
        // No copy yet, or the next one starts past this move's window: an earlier-starting copy
        // may still be written late, so wait for the clock unless at the end.
        const deadline = m.rec.t + o.afterNs + o.lateNs;
        if (final || now > deadline) {
          this.moves.shift();
          this.owner.releaseMove(m.rec);
          continue;
        }
        return deadline;
      }
      const k = Math.min(m.rem, c.rem);
      if (k > 0) {
        m.rem -= k;
        c.rem -= k;
        sink.pair(m.rec.ref, c.ref, k, this.source);
      }
      if (m.rem <= 0) {
        this.moves.shift();
        this.owner.releaseMove(m.rec);
      }
      if (c.rem <= 0) {
        this.copies.shift();
        sink.copyDone(c.ref, this.source);
      }
    }
  }
}

/**
 * The matching rule over a whole log, fed line by line. Per line, in seq order (repeated lines
 * skipped): `clock(t)`; `pool`, `addMove` or `addCopy` for pool, offload/onboard and xfer lines;
 * then `settle()`. At the end of the log, `finish()`.
 */
export class CopyMatcher<M, C> {
  private readonly o: MatchOptions;
  /** engine h2d, engine d2h, cupti h2d, cupti d2h (see `index`). */
  private conveyors: Array<Conveyor<M, C>> = [];
  /** Per conveyor, the log time at which its waiting items may be released by the clock. */
  private deadlines: number[] = [];
  /** Per conveyor, whether it got a move or copy since it was last stepped. */
  private dirty: boolean[] = [];
  private nextDeadline = Infinity;
  private now = 0;
  private readonly blockBytes = { gpu: 0, host: 0 };

  constructor(
    private sink: MatchSink<M, C>,
    options: Partial<MatchOptions> = {},
  ) {
    this.o = { ...MATCH_DEFAULTS, ...options };
    for (const source of MATCH_SOURCES) {
      for (const dir of ['h2d', 'd2h'] as const) {
        // d2h copies move GPU-pool blocks out, h2d copies host-pool blocks in.
        this.conveyors.push(new Conveyor(this, source, () => this.blockBytes[dir === 'd2h' ? 'gpu' : 'host']));
        this.deadlines.push(Infinity);
        this.dirty.push(false);
      }
    }
  }

  get options(): Readonly<MatchOptions> {
    return this.o;
  }

  /** Index of the conveyor of a direction and source, or -1 (d2d, h2h: blocks never move in them). */
  private index(dir: CopyDir, source: MatchSource): number {
    const d = dir === 'h2d' ? 0 : dir === 'd2h' ? 1 : -1;
    return d < 0 ? -1 : (source === 'engine' ? 0 : 2) + d;
  }

  /** The log's clock: every line's `t`, before the line is added. */
  clock(t: number): void {
    if (t > this.now) this.now = t;
  }

  /** A pool line: the block size its moves and copies are counted in. */
  pool(pool: 'gpu' | 'host', blockBytes: number): void {
    this.blockBytes[pool] = blockBytes;
  }

  /** Bytes a move of `blocks` blocks needs: blocks × block_bytes of the pool they leave. */
  moveBytes(op: MoveOp, blocks: number): number {
    return blocks * this.blockBytes[op === 'offload' ? 'gpu' : 'host'];
  }

  /** An offload or onboard line. @returns the bytes it needs. */
  addMove(ref: M, op: MoveOp, t: number, blocks: number): number {
    const rec: MoveRec<M> = { ref, t, bytes: this.moveBytes(op, blocks), pending: MATCH_SOURCES.length };
    for (const source of MATCH_SOURCES) {
      const i = this.index(MOVE_DIR[op], source);
      this.dirty[i] = true;
      this.conveyors[i]!.addMove(rec, this.now, this.o);
    }
    return rec.bytes;
  }

  /**
   * An xfer line. @returns false for a direction blocks never move in (d2d, h2h): the caller is
   * done with that copy at once.
   */
  addCopy(ref: C, dir: CopyDir, source: MatchSource, start: number, bytes: number): boolean {
    const i = this.index(dir, source);
    if (i < 0) return false;
    this.dirty[i] = true;
    this.conveyors[i]!.addCopy(ref, start, bytes);
    return true;
  }

  /** After every line: steps the conveyors that got input, or whose deadline the clock passed. */
  settle(): void {
    if (this.now > this.nextDeadline || this.dirty.some(Boolean)) this.step(false);
  }

  /** The log is over: decides everything still waiting. */
  finish(): void {
    this.step(true);
  }

  /**
   * What `finish` would decide now, told to `sink`, without changing this matcher (a live run goes
   * on). Costs a copy of what waits inside the matching window.
   */
  snapshot(sink: MatchSink<M, C>): void {
    const twin = new CopyMatcher<M, C>(sink, this.o);
    twin.now = this.now;
    twin.blockBytes.gpu = this.blockBytes.gpu;
    twin.blockBytes.host = this.blockBytes.host;
    const recs = new Map<MoveRec<M>, MoveRec<M>>();
    const recOf = (r: MoveRec<M>) => {
      let n = recs.get(r);
      if (!n) recs.set(r, (n = { ...r }));
      return n;
    };
    this.conveyors.forEach((c, i) => {
      const t = twin.conveyors[i]!;
      t.seenCopy = c.seenCopy;
      t.firstMoveT = c.firstMoveT;
      for (const m of c.moves.live()) t.moves.push({ rec: recOf(m.rec), rem: m.rem });
      for (const x of c.copies.live()) t.copies.push({ ...x });
    });
    twin.finish();
  }

  private step(final: boolean): void {
    let next = Infinity;
    for (let i = 0; i < this.conveyors.length; i++) {
      let d = this.deadlines[i]!;
      // One with neither input nor a passed deadline is as its last step left it: skipping it
      // changes nothing.
      if (final || this.dirty[i] || this.now > d) {
        d = this.conveyors[i]!.step(this.now, final, this.o, this.sink);
        this.deadlines[i] = d;
        this.dirty[i] = false;
      }
      if (d < next) next = d;
    }
    this.nextDeadline = next;
  }

  /** A conveyor is done with a move; the last one hands it to the sink. */
  releaseMove(rec: MoveRec<M>): void {
    if (--rec.pending === 0) this.sink.moveDone(rec.ref);
  }

  /**
   * What waits inside the matching window, as plain data (JSON when M and C are): a run index
   * keeps it, so a model read back from one goes on matching as the model it was taken from.
   */
  state(): MatcherState<M, C> {
    const moves: MatcherState<M, C>['moves'] = [];
    const ids = new Map<MoveRec<M>, number>();
    const idOf = (r: MoveRec<M>) => {
      let i = ids.get(r);
      if (i === undefined) {
        ids.set(r, (i = moves.length));
        moves.push({ ref: r.ref, t: r.t, bytes: r.bytes, pending: r.pending });
      }
      return i;
    };
    return {
      now: this.now,
      blockBytes: { ...this.blockBytes },
      moves,
      conveyors: this.conveyors.map((c) => ({
        seenCopy: c.seenCopy,
        firstMoveT: c.firstMoveT,
        moves: c.moves.live().map((m) => [idOf(m.rec), m.rem] as [number, number]),
        copies: c.copies.live().map((x) => [x.ref, x.start, x.rem, x.blockSized] as [C, number, number, boolean]),
      })),
    };
  }

  /** Takes back a `state()` into this (new) matcher: it then goes on as the one it came from. */
  restore(s: MatcherState<M, C>): void {
    this.now = s.now;
    this.blockBytes.gpu = s.blockBytes.gpu;
    this.blockBytes.host = s.blockBytes.host;
    const recs = s.moves.map((m) => ({ ...m }));
    s.conveyors.forEach((c, i) => {
      const t = this.conveyors[i]!;
      t.seenCopy = c.seenCopy;
      t.firstMoveT = c.firstMoveT;
      for (const [id, rem] of c.moves) t.moves.push({ rec: recs[id]!, rem });
      for (const [ref, start, rem, blockSized] of c.copies) t.copies.push({ ref, start, rem, blockSized });
    });
    // Each conveyor was left by its last step with the clock inside its deadline: stepping again
    // decides nothing and gives back that deadline.
    this.dirty.fill(true);
    this.step(false);
  }

  /** How much waits inside the matching window (tests check it stays bounded). */
  waiting(): { moves: number; copies: number } {
    let moves = 0;
    let copies = 0;
    for (const c of this.conveyors) {
      moves += c.moves.length;
      copies += c.copies.length;
    }
    return { moves, copies };
  }
}
