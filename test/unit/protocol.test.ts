import { describe, expect, it } from 'vitest';
import { validateEvent } from '../../src/shared/protocol';
import { syntheticRun } from '../helpers/synthetic-run';

describe('protocol v1 validation', () => {
  it('accepts every line of a run that follows PROTOCOL.md', () => {
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
});
