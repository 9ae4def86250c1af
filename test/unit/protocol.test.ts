import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  blockMove,
  EVENT_TYPES,
  isCopyDir,
  KNOWN_POOLS,
  jsonDeeperThan,
  MAX_POOL_BLOCKS,
  SCHEMA_DEFS,
  schemaOf,
  validateEvent,
  type BlockOp,
  type BlocksEvent,
  type EventType,
  type KvEvent,
  type LogLevel,
  type MemKind,
  type PhaseName,
  type PoolEvent,
  type ReqPhase,
  type RunStatus,
  type XferDir,
} from '../../src/shared/protocol';
import { syntheticRun } from '../helpers/synthetic-run';

describe('protocol validation', () => {
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

/** The keys of T that are not optional. */
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
/** An event with exactly its interface's required keys (tsc refuses a missing or an extra one). */
type Minimal<K extends EventType> = Pick<Extract<KvEvent, { type: K }>, RequiredKeys<Extract<KvEvent, { type: K }>>>;

const MINIMAL: { [K in EventType]: Minimal<K> } = {
  'run.start': {
    seq: 0,
    t: 0,
    type: 'run.start',
    run_id: 'r',
    protocol: 1,
    agent_version: 'a',
    engine: { name: 'torch', version: '1' },
    config: {},
    host: { hostname: 'h', gpus: [] },
    clock: { unix_ns_at_t0: 0 },
  },
  pool: { seq: 0, t: 0, type: 'pool', pool: 'gpu', capacity_blocks: 1, block_tokens: 1, block_bytes: 1 },
  blocks: { seq: 0, t: 0, type: 'blocks', op: 'store', ids: [] },
  xfer: { seq: 0, t: 0, type: 'xfer', dir: 'h2d', bytes: 1, start: 0, end: 1, source: 'cupti' },
  req: { seq: 0, t: 0, type: 'req', user: 0, round: 0, phase: 'queued' },
  round: { seq: 0, t: 0, type: 'round', round: 1, e2e_ns: 1, ttft_ns: [] },
  gpu: { seq: 0, t: 0, type: 'gpu', index: 0, mem_used_bytes: null, util_pct: null, source: 'nvml' },
  phase: { seq: 0, t: 0, type: 'phase', name: 'setup', state: 'begin' },
  log: { seq: 0, t: 0, type: 'log', level: 'info', msg: 'm' },
  'run.end': {
    seq: 0,
    t: 0,
    type: 'run.end',
    status: 'ok',
    summary: { e2e_ns: null, ttft_ns_mean: null, ttft_ns_p50: null, ttft_ns_p99: null, blocks_offloaded: 0, blocks_onboarded: 0, blocks_evicted: 0, bytes_h2d: 0, bytes_d2h: 0 },
  },
};

/** A property's schema in an event type's schema (the second part of its allOf), `$ref`s resolved. */
function propertySchema(type: EventType, key: string): Record<string, unknown> {
  const parts = schemaOf(type).allOf as Array<{ properties?: Record<string, Record<string, unknown>> }>;
  let s = parts[1]!.properties![key]!;
  if (typeof s.$ref === 'string') s = SCHEMA_DEFS[s.$ref.replace('#/$defs/', '')]!;
  return s;
}

describe('the hand-written event types agree with events.schema.json', () => {
  it('EVENT_TYPES lists every type of the KvEvent union', () => {
    expect([...EVENT_TYPES].sort()).toEqual(Object.keys(MINIMAL).sort());
  });

  it.each(Object.keys(MINIMAL) as EventType[])("%s: the schema requires exactly the interface's required keys", (type) => {
    const minimal = MINIMAL[type] as Record<string, unknown>;
    expect(validateEvent(minimal).ok).toBe(true);
    for (const key of Object.keys(minimal)) {
      const without = { ...minimal };
      delete without[key];
      expect(validateEvent(without).ok, `${type} without ${key}`).toBe(false);
    }
  });

  it('each string union is its schema enum', () => {
    const unions: Array<[EventType, string, Record<string, true>]> = [
      ['blocks', 'op', { store: true, move: true, evict: true, hit: true, offload: true, onboard: true } satisfies Record<BlockOp, true>],
      ['xfer', 'dir', { h2d: true, d2h: true, d2d: true, h2h: true, h2f: true, f2h: true } satisfies Record<XferDir, true>],
      ['xfer', 'src_mem', { pinned: true, pageable: true, device: true, managed: true, unknown: true, file: true } satisfies Record<MemKind, true>],
      ['pool', 'medium', { device: true, pinned: true, pageable: true, file: true, remote: true } satisfies Record<NonNullable<PoolEvent['medium']>, true>],
      ['pool', 'io', { o_direct: true, buffered: true } satisfies Record<NonNullable<PoolEvent['io']>, true>],
      ['req', 'phase', { queued: true, scheduled: true, first_token: true, done: true } satisfies Record<ReqPhase, true>],
      ['run.end', 'status', { ok: true, error: true, cancelled: true } satisfies Record<RunStatus, true>],
      ['phase', 'name', { setup: true, load_model: true, context: true, rounds: true, teardown: true } satisfies Record<PhaseName, true>],
      ['log', 'level', { debug: true, info: true, warn: true, error: true } satisfies Record<LogLevel, true>],
    ];
    for (const [type, key, union] of unions) expect((propertySchema(type, key).enum as string[]).slice().sort(), `${type}.${key}`).toEqual(Object.keys(union).sort());
    expect(isCopyDir('h2d') && !isCopyDir('h2f') && !isCopyDir('f2h')).toBe(true);
  });

  it('pool ids: the known ones fit the schema, and a pool other than gpu and host names its tier', () => {
    const pool = (id: string, extra: Record<string, unknown> = {}) => validateEvent({ seq: 0, t: 0, type: 'pool', pool: id, capacity_blocks: 1, block_tokens: 1, block_bytes: 1, ...extra }).ok;
    for (const id of KNOWN_POOLS) expect(pool(id, { tier: 5 }), id).toBe(true);
    expect([pool('gpu'), pool('host'), pool('disk'), pool('disk', { tier: 2 }), pool('remote_s3', { tier: 3 })]).toEqual([true, true, false, true, true]);
    expect([pool('Disk', { tier: 2 }), pool('2disk', { tier: 2 }), pool('d'.repeat(33), { tier: 2 }), pool('disk', { tier: 8 })]).toEqual([false, false, false, false]);
  });

  it('a move names its pools; v1 offload and onboard are moves gpu → host and host → gpu', () => {
    const blocks = (fields: Record<string, unknown>) => ({ seq: 0, t: 0, type: 'blocks', ids: [1], ...fields });
    expect(validateEvent(blocks({ op: 'move', from: 'host' })).ok).toBe(false);
    expect(validateEvent(blocks({ op: 'move', from: 'host', to: 'disk' })).ok).toBe(true);
    expect(blockMove(blocks({ op: 'move', from: 'host', to: 'disk' }) as BlocksEvent)).toEqual({ from: 'host', to: 'disk' });
    expect(blockMove(blocks({ op: 'offload' }) as BlocksEvent)).toEqual({ from: 'gpu', to: 'host' });
    expect(blockMove(blocks({ op: 'onboard' }) as BlocksEvent)).toEqual({ from: 'host', to: 'gpu' });
    expect(blockMove(blocks({ op: 'evict', pool: 'disk' }) as BlocksEvent)).toBeNull();
  });
});
