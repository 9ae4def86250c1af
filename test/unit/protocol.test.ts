import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { jsonDeeperThan, MAX_POOL_BLOCKS, validateEvent } from '../../src/shared/protocol';
import { syntheticRun } from '../helpers/synthetic-run';

describe('protocol v1 validation', () => {
  it('accepts every line of a run that follows docs/protocol.md', () => {
    for (const e of syntheticRun()) {
      const r = validateEvent(e);
      expect(r.ok, JSON.stringify(e)).toBe(true);
    }
  });

  it('rejects an unknown type, naming it', () => {
    const r = validateEvent({ seq: 0, t: 0, type: 'blocks.moved' });
    expect(r).toEqual({ ok: false, reason: { kind: 'unknown_type', type: 'blocks.moved' } });
  });

  it('rejects wrong field types with the path of the field', () => {
    const r = validateEvent({ seq: 3, t: 10, type: 'xfer', dir: 'h2d', bytes: '4096', start: 0, end: 1, source: 'cupti' });
    expect(r.ok).toBe(false);
    if (!r.ok && r.reason.kind === 'schema') expect(r.reason.path).toBe('/bytes');
    else throw new Error('expected a schema error');
  });

  it('requires `pool` on evict lines only', () => {
    expect(validateEvent({ seq: 1, t: 1, type: 'blocks', op: 'evict', ids: [1] }).ok).toBe(false);
    expect(validateEvent({ seq: 1, t: 1, type: 'blocks', op: 'evict', pool: 'host', ids: [1] }).ok).toBe(true);
    expect(validateEvent({ seq: 1, t: 1, type: 'blocks', op: 'store', ids: [1, 'a'] }).ok).toBe(true);
  });

  it('rejects a negative seq, a fractional t, and a non-object', () => {
    expect(validateEvent({ seq: -1, t: 0, type: 'log', level: 'info', msg: 'x' }).ok).toBe(false);
    expect(validateEvent({ seq: 0, t: 0.5, type: 'log', level: 'info', msg: 'x' }).ok).toBe(false);
    expect(validateEvent([1, 2])).toEqual({ ok: false, reason: { kind: 'not_object' } });
  });

  it('keeps unknown extra keys (compatible extension)', () => {
    const r = validateEvent({ seq: 0, t: 0, type: 'log', level: 'info', msg: 'x', new_key: { a: 1 } });
    expect(r.ok).toBe(true);
  });

  it('refuses a pool of impossibly many blocks with a clear message, and keeps the largest real one', () => {
    const pool = (capacity_blocks: number) => ({ seq: 6, t: 1, type: 'pool', pool: 'host', capacity_blocks, block_tokens: 32, block_bytes: 16384 });
    const r = validateEvent(pool(2_000_000_000));
    expect(r.ok).toBe(false);
    if (r.ok || r.reason.kind !== 'schema') throw new Error('expected a schema error');
    expect(r.reason.message).toBe(`/capacity_blocks must be <= ${MAX_POOL_BLOCKS} (2000000000): no engine allocates a pool of more blocks`);
    expect(validateEvent(pool(MAX_POOL_BLOCKS + 1)).ok).toBe(false);
    expect(validateEvent(pool(MAX_POOL_BLOCKS)).ok).toBe(true);
    // The largest pool recorded (a 55 GB host pool of 16 KiB blocks on CPU) stays valid.
    const real = readFileSync('test/fixtures/runs/cpu-tiny-4users-offload/events.jsonl', 'utf8').split('\n').filter((l) => l.includes('"pool"')).map((l) => JSON.parse(l) as { capacity_blocks: number });
    expect(Math.max(...real.map((p) => p.capacity_blocks))).toBe(3_356_933);
    for (const p of real) expect(validateEvent(p).ok).toBe(true);
  });

  it('measures nesting depth outside strings only', () => {
    const nest = (n: number) => '['.repeat(n) + ']'.repeat(n);
    expect(jsonDeeperThan(nest(64))).toBe(false);
    expect(jsonDeeperThan(nest(65))).toBe(true);
    // Brackets inside strings (escaped quotes included) are text, not nesting.
    expect(jsonDeeperThan(JSON.stringify({ msg: '{'.repeat(500) + '\\"[[[' }))).toBe(false);
    expect(jsonDeeperThan(`{"a":"\\\\",${'"b":{'.repeat(70)}${'}'.repeat(71)}`)).toBe(true);
  });
});
