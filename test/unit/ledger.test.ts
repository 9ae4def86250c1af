import { describe, expect, it } from 'vitest';
import { BlockLedger } from '../../src/shared/ledger';
import type { KvEvent } from '../../src/shared/protocol';
import { syntheticRun } from '../helpers/synthetic-run';

function replay(events: KvEvent[]): BlockLedger {
  const l = new BlockLedger();
  for (const e of events) l.apply(e);
  l.finish();
  return l;
}

/** Renumbers seq so a derived log breaks only the rule under test. */
const renumber = (events: KvEvent[]) => events.map((e, i) => ({ ...e, seq: i }) as KvEvent);

describe('BlockLedger', () => {
  const run = syntheticRun();

  it('finds no violation in a run that follows the rules, and tracks peaks', () => {
    const l = replay(run);
    expect(l.violations).toEqual([]);
    expect(l.stats.ops.offload).toBeGreaterThan(0);
    expect(l.stats.ops.onboard).toBeGreaterThan(0);
    expect(l.stats.peak.gpu).toBe(6);
  });

  it('names the seq of a gap', () => {
    const broken = run.filter((e) => e.seq !== 10);
    expect(replay(broken).violations).toEqual([expect.objectContaining({ rule: 'seq_gap', seq: 11 })]);
  });

  it('names the seq of a duplicate', () => {
    const broken = [...run.slice(0, 8), run[7]!, ...run.slice(8)];
    expect(replay(broken).violations).toEqual([expect.objectContaining({ rule: 'seq_duplicate', seq: 7 })]);
  });

  it('names the seq of an offload of a block that is not on the GPU', () => {
    const i = run.findIndex((e) => e.type === 'blocks' && e.op === 'offload');
    const broken = renumber([...run.slice(0, i), { ...run[i]!, ids: ['never-stored'] } as KvEvent, ...run.slice(i + 1)]);
    const v = replay(broken).violations;
    expect(v).toContainEqual(expect.objectContaining({ rule: 'offload_not_on_gpu', seq: i, blockId: 'never-stored' }));
  });

  it('names the seq where a pool goes over capacity', () => {
    const i = run.findIndex((e) => e.type === 'blocks' && e.op === 'store');
    const extra = { seq: 0, t: 0, type: 'blocks', op: 'store', ids: ['x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'x7'] } as KvEvent;
    const broken = renumber([...run.slice(0, i + 1), extra, ...run.slice(i + 1)]);
    const v = replay(broken).violations;
    expect(v[0]).toMatchObject({ rule: 'over_capacity', seq: i + 1 });
  });

  it('forbids offload and onboard with no host pool', () => {
    const noHost = renumber(run.filter((e) => !(e.type === 'pool' && e.pool === 'host')));
    const rules = new Set(replay(noHost).violations.map((v) => v.rule));
    expect(rules.has('move_without_host_pool')).toBe(true);
  });

  it('forbids offload when the GPU pool could hold every block', () => {
    const ample = run.map((e) => (e.type === 'pool' && e.pool === 'gpu' ? { ...e, capacity_blocks: 1000 } : e));
    expect(replay(ample).violations.map((v) => v.rule)).toContain('ample_pool_moved');
  });

  it('checks store, onboard, evict and hit against pool contents', () => {
    const ev = (fields: Record<string, unknown>) => ({ t: 0, type: 'blocks', ...fields }) as unknown as KvEvent;
    const events = renumber([
      run[1]!,
      run[2]!,
      ev({ op: 'store', ids: ['a'] }),
      ev({ op: 'store', ids: ['a'] }),
      ev({ op: 'onboard', ids: ['b'] }),
      ev({ op: 'evict', pool: 'host', ids: ['c'] }),
      ev({ op: 'hit', ids: ['d'] }),
    ]);
    const rules = replay(events).violations.map((v) => [v.rule, v.seq]);
    expect(rules).toEqual([
      ['store_already_on_gpu', 3],
      ['onboard_not_on_host', 4],
      ['evict_not_in_pool', 5],
      ['hit_not_on_gpu', 6],
      // the failed evict still counts as a move, and two blocks fit the 6-block pool
      ['ample_pool_moved', null],
    ]);
  });
});
