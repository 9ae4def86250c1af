/**
 * The block ledger: replays a run's events in `seq` order and reports every docs/protocol.md rule
 * that breaks ("Keys on every line", "Rules every reader checks"). Used by `kvscope validate`, the
 * run loader and the replay model. It applies each move even when a rule broke (best effort), so
 * one bad line yields one violation rather than a cascade.
 *
 * The rule codes and their text are resources/agent/kvscope_agent/protocol/protocol.json's, the
 * ones the agent's ledger (kvscope_agent/ledger.py) reports too; test/fixtures/protocol/ holds a
 * log per rule with the verdict both must give.
 */
import protocolDoc from '../../resources/agent/kvscope_agent/protocol/protocol.json';
import { blockMove, DEFAULT_TIER, isCopyDir, poolWord, type BlockOp, type BlocksEvent, type CopyDir, type KvEvent, type PoolEvent, type PoolName, type ReqEvent } from './protocol';

export type RuleCode = keyof typeof protocolDoc.rules;

/** What each rule asks, by code (protocol.json `rules`). */
export const RULE_TEXT: Readonly<Record<RuleCode, string>> = protocolDoc.rules;

export interface Violation {
  rule: RuleCode;
  /** The seq of the line where the rule broke (null for whole-run rules). */
  seq: number | null;
  message: string;
  blockId?: string | number;
}

export interface PoolInfo {
  capacity_blocks: number;
  block_tokens: number;
  block_bytes: number;
  /** Its line's tier, or DEFAULT_TIER's (gpu 0, host 1). */
  tier: number | null;
}

export interface LedgerStats {
  /** Blocks named by each op's lines (offload and onboard as written, not as moves). */
  ops: Record<BlockOp, number>;
  /** Blocks moved from one pool to another, keyed `${from}>${to}` (an offload counts as gpu>host, an onboard as host>gpu). */
  moves: Record<string, number>;
  /** Most blocks each pool held: gpu and host always, any other pool once declared or used. */
  peak: Record<PoolName, number>;
  distinctBlocks: number;
}

/** Most violations kept in full; the rest are only counted (`violationCounts`). */
const KEEP_VIOLATIONS = 1000;
/** Rule ttft_parts_sum: the parts add up to the TTFT within this (protocol.json). */
export const TTFT_PARTS_TOLERANCE_NS: number = protocolDoc.ttft_parts_tolerance_ns;
const NOT_IN_SOURCE = { offload: 'offload_not_on_gpu', onboard: 'onboard_not_on_host', move: 'move_not_in_source' } as const;
const VERB = { offload: 'offloaded', onboard: 'onboarded', move: 'moved' } as const;
/** The run.end summary counts rule summary_mismatch compares, and what they count (null: evictions). */
const SUMMARY_MOVES = [
  ['blocks_offloaded', 'gpu>host', 'offload (move gpu -> host)'],
  ['blocks_onboarded', 'host>gpu', 'onboard (move host -> gpu)'],
  ['blocks_evicted', null, 'evict'],
  ['blocks_spilled', 'host>disk', 'move host -> disk'],
  ['blocks_promoted', 'disk>host', 'move disk -> host'],
] as const;

type Found = { rule: RuleCode; message: string; blockId?: string | number };
type BlockId = string | number;

/** Everything a ledger holds, as plain data (JSON): `BlockLedger.state` and `fromState`. */
export interface BlockLedgerState {
  /** Each pool's blocks, gpu and host first. */
  held: Array<[PoolName, BlockId[]]>;
  /** Every block ever stored or moved. */
  seen: BlockId[];
  pools: Partial<Record<PoolName, PoolInfo>>;
  violations: Violation[];
  violationCounts: Partial<Record<RuleCode, number>>;
  stats: LedgerStats;
  overCapacity: Array<[PoolName, boolean]>;
  roundsMoves: { 'gpu>host': number; 'host>gpu': number };
  /** Without the late copies (`lateXfers`), which roundsXferBytes() adds. */
  roundsXfer: Record<CopyDir, number>;
  lateXfers: Array<{ dir: CopyDir; bytes: number; start: number }>;
  queuedAt: Array<[string, number]>;
  lastSeq: number;
  blocksSeen: boolean;
  inRounds: boolean;
  roundsWindow: { begin: number | null; end: number | null };
  cuptiSeen: boolean;
  runEnd: Extract<KvEvent, { type: 'run.end' }> | null;
}

/** A deep copy of plain data (JSON: what a state is). */
export const copied = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

export class BlockLedger {
  readonly gpu = new Set<BlockId>();
  readonly host = new Set<BlockId>();
  /** Every pool's blocks: gpu and host first, then the others in the order first declared or used. */
  private readonly held = new Map<PoolName, Set<BlockId>>([
    ['gpu', this.gpu],
    ['host', this.host],
  ]);
  readonly pools: Partial<Record<PoolName, PoolInfo>> = {};
  readonly violations: Violation[] = [];
  readonly violationCounts: Partial<Record<RuleCode, number>> = {};
  readonly stats: LedgerStats = {
    ops: { store: 0, move: 0, evict: 0, hit: 0, offload: 0, onboard: 0 },
    moves: {},
    peak: { gpu: 0, host: 0 },
    distinctBlocks: 0,
  };
  private readonly seen = new Set<BlockId>();
  private lastSeq = -1;
  private blocksSeen = false;
  private readonly overCapacity = new Map<PoolName, boolean>();
  /** The rounds phase, for the rule that CUPTI's copies cover the blocks moved in it. */
  private inRounds = false;
  private roundsWindow: { begin: number | null; end: number | null } = { begin: null, end: null };
  private readonly roundsMoves = { 'gpu>host': 0, 'host>gpu': 0 };
  private readonly roundsXfer: Record<CopyDir, number> = { h2d: 0, d2h: 0, d2d: 0, h2h: 0 };
  /** cupti xfer lines may arrive after the phase line that bounds them: kept until the end. */
  private readonly lateXfers: Array<{ dir: CopyDir; bytes: number; start: number }> = [];
  private cuptiSeen = false;
  /** When each request (user/round) was queued, for rule ttft_parts_sum. */
  private readonly queuedAt = new Map<string, number>();
  private runEnd: Extract<KvEvent, { type: 'run.end' }> | null = null;

  get violationTotal(): number {
    let n = 0;
    for (const v of Object.values(this.violationCounts)) n += v ?? 0;
    return n;
  }

  /** What the ledger holds (a copy: later lines do not change it). */
  get state(): BlockLedgerState {
    return copied({
      held: [...this.held].map(([pool, ids]): [PoolName, BlockId[]] => [pool, [...ids]]),
      seen: [...this.seen],
      pools: this.pools,
      violations: this.violations,
      violationCounts: this.violationCounts,
      stats: this.stats,
      overCapacity: [...this.overCapacity],
      roundsMoves: this.roundsMoves,
      roundsXfer: this.roundsXfer,
      lateXfers: this.lateXfers,
      queuedAt: [...this.queuedAt],
      lastSeq: this.lastSeq,
      blocksSeen: this.blocksSeen,
      inRounds: this.inRounds,
      roundsWindow: this.roundsWindow,
      cuptiSeen: this.cuptiSeen,
      runEnd: this.runEnd,
    });
  }

  /** The ledger a state describes: it applies later lines exactly as the ledger the state came from. */
  static fromState(state: BlockLedgerState): BlockLedger {
    const { held, seen, pools, violations, violationCounts, stats, overCapacity, roundsMoves, roundsXfer, lateXfers, queuedAt, ...scalars } = copied(state);
    const l = new BlockLedger();
    for (const [pool, ids] of held) for (const id of ids) l.poolSet(pool).add(id);
    for (const id of seen) l.seen.add(id);
    Object.assign(l.pools, pools);
    l.violations.push(...violations);
    Object.assign(l.violationCounts, violationCounts);
    Object.assign(l.stats, stats);
    for (const [pool, over] of overCapacity) l.overCapacity.set(pool, over);
    Object.assign(l.roundsMoves, roundsMoves);
    Object.assign(l.roundsXfer, roundsXfer);
    l.lateXfers.push(...lateXfers);
    for (const [key, t] of queuedAt) l.queuedAt.set(key, t);
    // lastSeq, blocksSeen, the rounds window, cuptiSeen, runEnd.
    return Object.assign(l, scalars);
  }

  /** The blocks a pool holds (undefined for a pool the ledger has not seen). */
  holding(pool: PoolName): ReadonlySet<BlockId> | undefined {
    return this.held.get(pool);
  }

  /** Blocks moved from one pool to another so far. */
  moved(from: PoolName, to: PoolName): number {
    return this.stats.moves[`${from}>${to}`] ?? 0;
  }

  /** Applies one event (any type; seq, pool, blocks, phase, xfer, req and run.end lines matter here). */
  apply(event: KvEvent): void {
    // A repeated or out-of-order line is reported and not applied again (it would double-count).
    if (!this.checkSeq(event.seq)) return;
    switch (event.type) {
      case 'pool':
        this.applyPool(event);
        break;
      case 'blocks':
        this.applyBlocks(event);
        break;
      case 'phase':
        if (event.name === 'rounds') {
          this.inRounds = event.state === 'begin';
          if (this.inRounds) this.roundsWindow.begin = event.t;
          else this.roundsWindow.end = event.t;
        }
        break;
      case 'xfer':
        if (event.source === 'cupti' && isCopyDir(event.dir)) {
          this.cuptiSeen = true;
          if (this.inRounds) this.roundsXfer[event.dir] += event.bytes;
          else if (this.roundsWindow.begin !== null && event.start >= this.roundsWindow.begin) {
            // Flushed after `rounds end`: counted by its own start time.
            this.lateXfers.push({ dir: event.dir, bytes: event.bytes, start: event.start });
          }
        }
        break;
      case 'req':
        this.applyReq(event);
        break;
      case 'run.end':
        this.runEnd = event;
        break;
      default:
        break;
    }
  }

  /**
   * Bytes of CUPTI copies inside the rounds phase, per direction (docs/protocol.md "Transfers and
   * blocks agree"): the lines written while it was open, and those written after it whose copy
   * started inside it.
   */
  roundsXferBytes(): Record<CopyDir, number> {
    const out = { ...this.roundsXfer };
    const w = this.roundsWindow;
    for (const x of this.lateXfers) {
      if (w.begin !== null && x.start >= w.begin && (w.end === null || x.start <= w.end)) out[x.dir] += x.bytes;
    }
    return out;
  }

  /** Whole-run rules, checked once the log is complete. */
  finish(): void {
    const gpu = this.pools.gpu;
    const ops = this.stats.ops;
    let movedOut = 0;
    for (const [key, n] of Object.entries(this.stats.moves)) if (key.startsWith('gpu>')) movedOut += n;
    if (gpu && this.stats.distinctBlocks <= gpu.capacity_blocks && movedOut + ops.evict > 0) {
      this.violate(
        'ample_pool_moved',
        null,
        `the GPU pool holds ${gpu.capacity_blocks} blocks and the run used ${this.stats.distinctBlocks}, ` + `yet ${movedOut} were offloaded and ${ops.evict} evicted`,
      );
    }
    if (this.cuptiSeen && gpu && this.roundsWindow.begin !== null) {
      const xfer = this.roundsXferBytes();
      for (const [op, dir, key] of [['onboard', 'h2d', 'host>gpu'], ['offload', 'd2h', 'gpu>host']] as const) {
        const n = this.roundsMoves[key];
        const need = n * gpu.block_bytes;
        if (xfer[dir] < need) {
          this.violate('xfer_short', null, `CUPTI ${dir} bytes during the rounds phase are ${xfer[dir]}, fewer than the ${n} ${op}ed blocks × ${gpu.block_bytes} bytes = ${need}`);
        }
      }
    }
    if (this.runEnd) {
      const summary = this.runEnd.summary;
      for (const [key, move, verb] of SUMMARY_MOVES) {
        const have = move === null ? ops.evict : (this.stats.moves[move] ?? 0);
        if (key in summary && summary[key] !== have) {
          this.violate('summary_mismatch', this.runEnd.seq, `summary.${key} is ${String(summary[key])} but the blocks lines ${verb} ${have}`);
        }
      }
    }
  }

  /** @returns false when the line must not be applied (a repeat or out of order). */
  private checkSeq(seq: number): boolean {
    if (seq === this.lastSeq + 1) {
      this.lastSeq = seq;
      return true;
    }
    if (seq > this.lastSeq + 1) {
      this.violate('seq_gap', seq, `seq jumps from ${this.lastSeq} to ${seq}: ${seq - this.lastSeq - 1} line(s) missing`);
      this.lastSeq = seq;
      return true;
    }
    if (seq === this.lastSeq) this.violate('seq_duplicate', seq, `seq ${seq} appears twice`);
    else this.violate('seq_out_of_order', seq, `seq ${seq} comes after seq ${this.lastSeq}`);
    return false;
  }

  private applyPool(e: PoolEvent): void {
    const name = e.pool;
    if (this.pools[name]) this.violate('pool_redefined', e.seq, `pool "${name}" declared again`);
    if (this.blocksSeen) this.violate('pool_after_blocks', e.seq, `pool "${name}" declared after the first blocks line`);
    const tier = e.tier ?? DEFAULT_TIER[name] ?? null;
    if ((name === 'gpu') !== (tier === 0)) this.violate('tier_zero_not_gpu', e.seq, `pool "${name}" is tier ${tier}: tier 0 is the gpu pool's and only its`);
    const same = Object.entries(this.pools).find(([p, info]) => p !== name && info?.tier === tier);
    if (same) this.violate('tier_not_unique', e.seq, `pool "${name}" is tier ${tier}, as pool "${same[0]}" is`);
    this.pools[name] = { capacity_blocks: e.capacity_blocks, block_tokens: e.block_tokens, block_bytes: e.block_bytes, tier };
    this.poolSet(name);
  }

  private poolSet(name: PoolName): Set<BlockId> {
    let set = this.held.get(name);
    if (!set) {
      set = new Set();
      this.held.set(name, set);
      this.stats.peak[name] ??= 0;
    }
    return set;
  }

  private applyReq(e: ReqEvent): void {
    const key = `${e.user}/${e.round}`;
    if (e.phase === 'queued') this.queuedAt.set(key, e.t);
    else if (e.phase === 'first_token' && e.ttft_parts) {
      const queued = this.queuedAt.get(key);
      if (queued === undefined) return;
      const p = e.ttft_parts;
      const total = p.queued_ns + p.other_ns + (p.host_reload?.ns ?? 0) + (p.disk_promote?.ns ?? 0) + (p.recompute?.ns ?? 0);
      const ttft = e.t - queued;
      if (Math.abs(total - ttft) > TTFT_PARTS_TOLERANCE_NS) {
        this.violate('ttft_parts_sum', e.seq, `user ${e.user} round ${e.round}: ttft_parts add up to ${total} ns, the TTFT is ${ttft} ns`);
      }
    }
  }

  private usable(pool: PoolName): boolean {
    return (this.pools[pool]?.capacity_blocks ?? 0) > 0;
  }

  /**
   * One blocks line: every rule it breaks is found, then the move is applied best effort (a move
   * whose source lacks the block still puts it in the destination, an add the pool already holds
   * changes nothing).
   */
  private applyBlocks(e: BlocksEvent): void {
    const found: Found[] = [];
    const n = e.ids.length;
    this.stats.ops[e.op] += n;
    this.blocksSeen = true;
    if (!this.pools.gpu) found.push({ rule: 'pool_missing', message: `blocks ${e.op} before the "gpu" pool line` });
    const mv = blockMove(e);
    if (mv) {
      const { from, to } = mv;
      const op = e.op as 'offload' | 'onboard' | 'move';
      if (from === to) found.push({ rule: 'move_to_self', message: `move of ${n} block(s) from pool "${from}" to itself` });
      else {
        const key = `${from}>${to}`;
        this.stats.moves[key] = (this.stats.moves[key] ?? 0) + n;
        if (this.inRounds && (key === 'gpu>host' || key === 'host>gpu')) this.roundsMoves[key] += n;
        if (op !== 'move') {
          if (!this.usable('host')) found.push({ rule: 'move_without_host_pool', message: `${op} of ${n} block(s) with no host pool` });
        } else {
          for (const p of [from, to]) {
            if (p !== 'gpu' && !this.usable(p)) found.push({ rule: 'move_without_pool', message: `move of ${n} block(s) ${p === from ? 'from' : 'to'} pool "${p}", which has no line or capacity 0` });
          }
        }
        const src = this.poolSet(from);
        const dst = this.poolSet(to);
        const keep = e.keep_source === true;
        for (const id of e.ids) {
          if (!src.has(id)) found.push({ rule: NOT_IN_SOURCE[op], message: `block ${id} ${VERB[op]} but not in the ${poolWord(from)} pool`, blockId: id });
          if (!keep) src.delete(id);
          dst.add(id);
          this.markSeen(id);
        }
      }
    } else {
      const pool = e.pool ?? 'gpu';
      if (pool !== 'gpu' && !this.pools[pool]) found.push({ rule: 'unknown_pool', message: `blocks ${e.op} in pool "${pool}", which no pool line declares` });
      // Only a store makes a pool hold blocks; an evict or hit reads it.
      const set = e.op === 'store' ? this.poolSet(pool) : (this.held.get(pool) ?? new Set<BlockId>());
      if (e.op === 'store') {
        const rule = pool === 'gpu' ? 'store_already_on_gpu' : 'store_already_in_pool';
        for (const id of e.ids) {
          if (set.has(id)) found.push({ rule, message: `block ${id} stored but already in the ${poolWord(pool)} pool`, blockId: id });
          set.add(id);
          this.markSeen(id);
        }
      } else if (e.op === 'evict') {
        for (const id of e.ids) {
          if (!set.delete(id)) found.push({ rule: 'evict_not_in_pool', message: `block ${id} evicted from the ${pool} pool but not in it`, blockId: id });
        }
      } else {
        const rule = pool === 'gpu' ? 'hit_not_on_gpu' : 'hit_not_in_pool';
        for (const id of e.ids) {
          if (!set.has(id)) found.push({ rule, message: `block ${id} hit but not in the ${poolWord(pool)} pool`, blockId: id });
        }
      }
    }
    for (const pool of this.held.keys()) this.checkCapacity(pool, found);
    for (const f of found) this.violate(f.rule, e.seq, f.message, f.blockId);
  }

  private markSeen(id: BlockId): void {
    if (!this.seen.has(id)) {
      this.seen.add(id);
      this.stats.distinctBlocks++;
    }
  }

  private checkCapacity(pool: PoolName, found: Found[]): void {
    const size = this.held.get(pool)!.size;
    if (size > (this.stats.peak[pool] ?? 0)) this.stats.peak[pool] = size;
    const info = this.pools[pool];
    const cap = info?.capacity_blocks ?? 0;
    // A pool with no line (pool_missing, unknown_pool, move_without_pool) or a non-GPU pool of
    // capacity 0 (move_without_host_pool, move_without_pool) is no pool to be over.
    const over = info !== undefined && (pool === 'gpu' || cap > 0) && size > cap;
    // Report each excursion over capacity once, where it starts.
    if (over && !this.overCapacity.get(pool)) found.push({ rule: 'over_capacity', message: `the ${pool} pool holds ${size} blocks, over its capacity of ${cap}` });
    this.overCapacity.set(pool, over);
  }

  private violate(rule: RuleCode, seq: number | null, message: string, blockId?: BlockId): void {
    this.violationCounts[rule] = (this.violationCounts[rule] ?? 0) + 1;
    if (this.violations.length < KEEP_VIOLATIONS) {
      this.violations.push(blockId === undefined ? { rule, seq, message } : { rule, seq, message, blockId });
    }
  }
}
