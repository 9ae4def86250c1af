/**
 * The block ledger: replays a run's events in `seq` order and reports every docs/protocol.md rule
 * that breaks ("Keys on every line", "Rules every reader checks"). Used by `kvscope validate`, the
 * run loader and the replay model. It applies each move even when a rule broke (best effort), so
 * one bad line yields one violation rather than a cascade.
 */
import type { BlocksEvent, KvEvent, PoolName } from './protocol';

export type RuleCode =
  | 'seq_gap'
  | 'seq_duplicate'
  | 'seq_out_of_order'
  | 'pool_missing'
  | 'pool_redefined'
  | 'store_already_on_gpu'
  | 'offload_not_on_gpu'
  | 'onboard_not_on_host'
  | 'evict_not_in_pool'
  | 'hit_not_on_gpu'
  | 'over_capacity'
  | 'move_without_host_pool'
  | 'ample_pool_moved';

export const RULE_TEXT: Record<RuleCode, string> = {
  seq_gap: 'seq must rise by 1 on every line (a gap means lost lines)',
  seq_duplicate: 'a seq must appear once (a repeat means duplicated lines)',
  seq_out_of_order: 'lines must be in seq order',
  pool_missing: 'a pool line must come before any blocks line that uses the pool',
  pool_redefined: 'each pool is declared once',
  store_already_on_gpu: 'store: the block must not already be in the GPU pool',
  offload_not_on_gpu: 'offload: the block must be in the GPU pool',
  onboard_not_on_host: 'onboard: the block must be in the host pool',
  evict_not_in_pool: 'evict: the block must be in the named pool',
  hit_not_on_gpu: 'hit: the block must be in the GPU pool',
  over_capacity: 'a pool never holds more blocks than its capacity_blocks',
  move_without_host_pool: 'with no host pool there is no offload or onboard',
  ample_pool_moved: 'if the GPU pool can hold every block the run needs, nothing is offloaded or evicted',
};

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
  private overCapacity: Record<PoolName, boolean> = { gpu: false, host: false };

  get violationTotal(): number {
    let n = 0;
    for (const v of Object.values(this.violationCounts)) n += v ?? 0;
    return n;
  }

  /** Applies one event (any type; only seq, pool and blocks lines matter here). */
  apply(event: KvEvent): void {
    // A repeated or out-of-order line is reported and not applied again (it would double-count).
    if (!this.checkSeq(event.seq)) return;
    if (event.type === 'pool') {
      if (this.pools[event.pool]) {
        this.violate('pool_redefined', event.seq, `pool "${event.pool}" declared again`);
      }
      this.pools[event.pool] = {
        capacity_blocks: event.capacity_blocks,
        block_tokens: event.block_tokens,
        block_bytes: event.block_bytes,
      };
    } else if (event.type === 'blocks') {
      this.applyBlocks(event);
    }
  }

  /** Whole-run rules, checked once the log is complete. */
  finish(): void {
    const gpu = this.pools.gpu;
    if (gpu && this.stats.distinctBlocks <= gpu.capacity_blocks) {
      const moved = this.stats.ops.offload + this.stats.ops.evict;
      if (moved > 0) {
        this.violate(
          'ample_pool_moved',
          null,
          `the GPU pool holds ${gpu.capacity_blocks} blocks and the run used ${this.stats.distinctBlocks}, ` +
            `yet ${this.stats.ops.offload} were offloaded and ${this.stats.ops.evict} evicted`,
        );
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

  private applyBlocks(e: BlocksEvent): void {
    this.stats.ops[e.op] += e.ids.length;
    if (!this.pools.gpu) {
      this.violate('pool_missing', e.seq, `blocks ${e.op} before the "gpu" pool line`);
    }
    const keep = e.keep_source === true;
    switch (e.op) {
      case 'store':
        for (const id of e.ids) {
          if (this.gpu.has(id)) this.violate('store_already_on_gpu', e.seq, `block ${id} stored but already in the GPU pool`, id);
          this.gpu.add(id);
          this.markSeen(id);
        }
        break;
      case 'offload':
        if (!this.hasHostPool()) this.violate('move_without_host_pool', e.seq, `offload of ${e.ids.length} block(s) with no host pool`);
        for (const id of e.ids) {
          if (!this.gpu.has(id)) this.violate('offload_not_on_gpu', e.seq, `block ${id} offloaded but not in the GPU pool`, id);
          if (!keep) this.gpu.delete(id);
          this.host.add(id);
          this.markSeen(id);
        }
        break;
      case 'onboard':
        if (!this.hasHostPool()) this.violate('move_without_host_pool', e.seq, `onboard of ${e.ids.length} block(s) with no host pool`);
        for (const id of e.ids) {
          if (!this.host.has(id)) this.violate('onboard_not_on_host', e.seq, `block ${id} onboarded but not in the host pool`, id);
          if (!keep) this.host.delete(id);
          this.gpu.add(id);
          this.markSeen(id);
        }
        break;
      case 'evict': {
        const pool = e.pool ?? 'gpu';
        const set = pool === 'gpu' ? this.gpu : this.host;
        for (const id of e.ids) {
          if (!set.delete(id)) this.violate('evict_not_in_pool', e.seq, `block ${id} evicted from the ${pool} pool but not in it`, id);
        }
        break;
      }
      case 'hit':
        for (const id of e.ids) {
          if (!this.gpu.has(id)) this.violate('hit_not_on_gpu', e.seq, `block ${id} hit but not in the GPU pool`, id);
        }
        break;
    }
    this.checkCapacity('gpu', e.seq);
    this.checkCapacity('host', e.seq);
  }

  private markSeen(id: string | number): void {
    if (!this.seen.has(id)) {
      this.seen.add(id);
      this.stats.distinctBlocks++;
    }
  }

  private checkCapacity(pool: PoolName, seq: number): void {
    const size = pool === 'gpu' ? this.gpu.size : this.host.size;
    if (size > this.stats.peak[pool]) this.stats.peak[pool] = size;
    const cap = this.pools[pool]?.capacity_blocks ?? 0;
    const over = size > cap && (pool === 'gpu' || size > 0);
    // Report each excursion over capacity once, where it starts.
    if (over && !this.overCapacity[pool]) {
      this.violate('over_capacity', seq, `the ${pool} pool holds ${size} blocks, over its capacity of ${cap}`);
    }
    this.overCapacity[pool] = over;
  }

  private violate(rule: RuleCode, seq: number | null, message: string, blockId?: string | number): void {
    this.violationCounts[rule] = (this.violationCounts[rule] ?? 0) + 1;
    if (this.violations.length < KEEP_VIOLATIONS) {
      this.violations.push(blockId === undefined ? { rule, seq, message } : { rule, seq, message, blockId });
    }
  }
}
