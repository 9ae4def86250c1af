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
import type { BlocksEvent, KvEvent, PoolName, XferDir } from './protocol';

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
}

export interface LedgerStats {
  ops: Record<BlocksEvent['op'], number>;
  peak: Record<PoolName, number>;
  distinctBlocks: number;
}

/** Most violations kept in full; the rest are only counted (`violationCounts`). */
const KEEP_VIOLATIONS = 1000;
const POOLS: readonly PoolName[] = ['gpu', 'host'];
const POOL_LABEL: Record<PoolName, string> = { gpu: 'GPU', host: 'host' };

type Found = { rule: RuleCode; message: string; blockId?: string | number };

export class BlockLedger {
  readonly gpu = new Set<string | number>();
  readonly host = new Set<string | number>();
  readonly pools: Partial<Record<PoolName, PoolInfo>> = {};
  readonly violations: Violation[] = [];
  readonly violationCounts: Partial<Record<RuleCode, number>> = {};
  readonly stats: LedgerStats = {
    ops: { store: 0, offload: 0, onboard: 0, evict: 0, hit: 0 },
    peak: { gpu: 0, host: 0 },
    distinctBlocks: 0,
  };
  private readonly seen = new Set<string | number>();
  private lastSeq = -1;
  private blocksSeen = false;
  private overCapacity: Record<PoolName, boolean> = { gpu: false, host: false };
  /** The rounds phase, for the rule that CUPTI's copies cover the blocks moved in it. */
  private inRounds = false;
  private roundsWindow: { begin: number | null; end: number | null } = { begin: null, end: null };
  private readonly roundsBlocks = { offload: 0, onboard: 0 };
  private readonly roundsXfer: Record<XferDir, number> = { h2d: 0, d2h: 0, d2d: 0, h2h: 0 };
  /** cupti xfer lines may arrive after the phase line that bounds them: kept until the end. */
  private readonly lateXfers: Array<{ dir: XferDir; bytes: number; start: number }> = [];
  private cuptiSeen = false;
  private runEnd: Extract<KvEvent, { type: 'run.end' }> | null = null;

  get violationTotal(): number {
    let n = 0;
    for (const v of Object.values(this.violationCounts)) n += v ?? 0;
    return n;
  }

  /** Applies one event (any type; seq, pool, blocks, phase, xfer and run.end lines matter here). */
  apply(event: KvEvent): void {
    // A repeated or out-of-order line is reported and not applied again (it would double-count).
    if (!this.checkSeq(event.seq)) return;
    switch (event.type) {
      case 'pool':
        if (this.pools[event.pool]) this.violate('pool_redefined', event.seq, `pool "${event.pool}" declared again`);
        if (this.blocksSeen) this.violate('pool_after_blocks', event.seq, `pool "${event.pool}" declared after the first blocks line`);
        this.pools[event.pool] = {
          capacity_blocks: event.capacity_blocks,
          block_tokens: event.block_tokens,
          block_bytes: event.block_bytes,
        };
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
        if (event.source === 'cupti') {
          this.cuptiSeen = true;
          if (this.inRounds) this.roundsXfer[event.dir] += event.bytes;
          else if (this.roundsWindow.begin !== null && event.start >= this.roundsWindow.begin) {
            // Flushed after `rounds end`: counted by its own start time.
            this.lateXfers.push({ dir: event.dir, bytes: event.bytes, start: event.start });
          }
        }
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
  roundsXferBytes(): Record<XferDir, number> {
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
    if (gpu && this.stats.distinctBlocks <= gpu.capacity_blocks) {
      const moved = ops.offload + ops.evict;
      if (moved > 0) {
        this.violate(
          'ample_pool_moved',
          null,
          `the GPU pool holds ${gpu.capacity_blocks} blocks and the run used ${this.stats.distinctBlocks}, ` +
            `yet ${ops.offload} were offloaded and ${ops.evict} evicted`,
        );
      }
    }
    if (this.cuptiSeen && gpu && this.roundsWindow.begin !== null) {
      const xfer = this.roundsXferBytes();
      for (const [op, dir] of [['onboard', 'h2d'], ['offload', 'd2h']] as const) {
        const need = this.roundsBlocks[op] * gpu.block_bytes;
        if (xfer[dir] < need) {
          this.violate(
            'xfer_short',
            null,
            `CUPTI ${dir} bytes during the rounds phase are ${xfer[dir]}, fewer than the ${this.roundsBlocks[op]} ${op}ed blocks × ${gpu.block_bytes} bytes = ${need}`,
          );
        }
      }
    }
    if (this.runEnd) {
      const summary = this.runEnd.summary;
      for (const [key, op] of [['blocks_offloaded', 'offload'], ['blocks_onboarded', 'onboard'], ['blocks_evicted', 'evict']] as const) {
        if (summary[key] !== ops[op]) {
          this.violate('summary_mismatch', this.runEnd.seq, `summary.${key} is ${summary[key]} but the blocks lines ${op} ${ops[op]}`);
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

  private hasHostPool(): boolean {
    return (this.pools.host?.capacity_blocks ?? 0) > 0;
  }

  private held(pool: PoolName): Set<string | number> {
    return pool === 'gpu' ? this.gpu : this.host;
  }

  /**
   * One blocks line: every rule it breaks is found, then the move is applied best effort (a move
   * whose source is absent only adds, an add the pool already holds changes nothing).
   */
  private applyBlocks(e: BlocksEvent): void {
    const found: Found[] = [];
    this.stats.ops[e.op] += e.ids.length;
    if (this.inRounds && (e.op === 'offload' || e.op === 'onboard')) this.roundsBlocks[e.op] += e.ids.length;
    this.blocksSeen = true;
    if (!this.pools.gpu) found.push({ rule: 'pool_missing', message: `blocks ${e.op} before the "gpu" pool line` });
    const keep = e.keep_source === true;
    switch (e.op) {
      case 'store':
        for (const id of e.ids) {
          if (this.gpu.has(id)) found.push({ rule: 'store_already_on_gpu', message: `block ${id} stored but already in the GPU pool`, blockId: id });
          this.gpu.add(id);
          this.markSeen(id);
        }
        break;
      case 'offload':
      case 'onboard': {
        const [src, dst] = e.op === 'offload' ? (['gpu', 'host'] as const) : (['host', 'gpu'] as const);
        const rule = e.op === 'offload' ? 'offload_not_on_gpu' : 'onboard_not_on_host';
        if (!this.hasHostPool()) found.push({ rule: 'move_without_host_pool', message: `${e.op} of ${e.ids.length} block(s) with no host pool` });
        for (const id of e.ids) {
          if (!this.held(src).has(id)) found.push({ rule, message: `block ${id} ${e.op}ed but not in the ${POOL_LABEL[src]} pool`, blockId: id });
          if (!keep) this.held(src).delete(id);
          this.held(dst).add(id);
          this.markSeen(id);
        }
        break;
      }
      case 'evict': {
        const pool = e.pool ?? 'gpu';
        for (const id of e.ids) {
          if (!this.held(pool).delete(id)) found.push({ rule: 'evict_not_in_pool', message: `block ${id} evicted from the ${pool} pool but not in it`, blockId: id });
        }
        break;
      }
      case 'hit':
        for (const id of e.ids) {
          if (!this.gpu.has(id)) found.push({ rule: 'hit_not_on_gpu', message: `block ${id} hit but not in the GPU pool`, blockId: id });
        }
        break;
    }
    for (const pool of POOLS) this.checkCapacity(pool, found);
    for (const f of found) this.violate(f.rule, e.seq, f.message, f.blockId);
  }

  private markSeen(id: string | number): void {
    if (!this.seen.has(id)) {
      this.seen.add(id);
      this.stats.distinctBlocks++;
    }
  }

  private checkCapacity(pool: PoolName, found: Found[]): void {
    const size = this.held(pool).size;
    if (size > this.stats.peak[pool]) this.stats.peak[pool] = size;
    const info = this.pools[pool];
    const cap = info?.capacity_blocks ?? 0;
    // A pool with no line (pool_missing, move_without_host_pool), or a host pool of capacity 0
    // (move_without_host_pool), is no pool to be over.
    const over = info !== undefined && (pool === 'gpu' || cap > 0) && size > cap;
    // Report each excursion over capacity once, where it starts.
    if (over && !this.overCapacity[pool]) found.push({ rule: 'over_capacity', message: `the ${pool} pool holds ${size} blocks, over its capacity of ${cap}` });
    this.overCapacity[pool] = over;
  }

  private violate(rule: RuleCode, seq: number | null, message: string, blockId?: string | number): void {
    this.violationCounts[rule] = (this.violationCounts[rule] ?? 0) + 1;
    if (this.violations.length < KEEP_VIOLATIONS) {
      this.violations.push(blockId === undefined ? { rule, seq, message } : { rule, seq, message, blockId });
    }
  }
}
