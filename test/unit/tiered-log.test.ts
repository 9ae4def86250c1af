/**
 * A protocol v2 log with a third pool (test/fixtures/protocol/v2-three-tiers.jsonl: gpu, host and
 * disk, moves between any two, disk I/O, ttft_parts) through everything in the app that reads a
 * log today: the run analysis, the replay model and its cursor, the timeline model, the Pools
 * captions and the Perfetto export. Every pool has its grid and occupancy track; nothing may
 * count the disk tier's traffic as copies.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { writePerfettoTrace } from '../../src/main/core/export/perfetto';
import { BlockLedger } from '../../src/shared/ledger';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { compileReplay, OP_BY_CODE, ReplayCursor } from '../../src/shared/replay';
import { buildTimelineModel, linkRequest } from '../../src/shared/timeline-model';
import { captionAt, describeLine, moveLine } from '../../src/renderer/viz/pools-explain';

const bytes = readFileSync('test/fixtures/protocol/v2-three-tiers.jsonl');
const { events, bad } = decodeAll(bytes);

describe('a v2 log with a disk tier', () => {
  it('decodes whole', () => {
    expect(bad).toEqual([]);
    expect(events.filter((e) => e.type === 'pool').map((e) => e.type === 'pool' && e.pool)).toEqual(['gpu', 'host', 'disk']);
  });

  it('analyses: moves between gpu and host count as offloads and onboards, the disk pool and its I/O apart', () => {
    const a = analyzeEvents(events);
    expect(a.blocks).toEqual({ stored: 5, offloaded: 2, onboarded: 2, evicted: 4, hit: 2 });
    expect(a.peakOccupancy).toEqual({ gpu: 2, host: 2, disk: 2 });
    expect(a.pools.disk).toMatchObject({ capacity_blocks: 4, tier: 2 });
    expect(a.diskXferBytes).toEqual({ h2f: 200, f2h: 200 });
    expect(Object.keys(a.xferBytes)).toEqual(['h2d', 'd2h', 'd2d', 'h2h']);
    expect(a.xferBytes).toMatchObject({ h2d: 200, d2h: 200 });
    expect(a.ttft.count).toBe(2);
  });

  it('replays a grid per pool (gpu, host, disk) as the ledger holds them at every line', () => {
    const m = compileReplay(events);
    expect(m.gridPools).toEqual(['gpu', 'host', 'disk']);
    expect(m.gridsByTier()).toEqual([0, 1, 2]);
    const c = new ReplayCursor(m);
    for (const e of events.filter((x) => x.type === 'blocks')) {
      c.seek(e.t);
      const l = new BlockLedger();
      for (const x of events) if (x.t <= e.t || x.type !== 'blocks') l.apply(x);
      const ids = (pool: number) => new Set([...c.cells[pool]!].filter((b) => b >= 0).map((b) => m.blockIds[b]));
      m.gridPools.forEach((pool, g) => {
        expect(ids(g), `${pool} at seq ${e.seq}`).toEqual(new Set(l.holding(pool) ?? []));
        expect(c.counts[g], `${pool} at seq ${e.seq}`).toBe(l.holding(pool)?.size ?? 0);
      });
    }
    // The spill and the promotion are moves between the host grid and the disk grid.
    const ops = Array.from(m.op.data.subarray(0, m.moveCount), (o) => OP_BY_CODE[o]);
    expect(ops.filter((o) => o === 'move').length).toBe(4);
    const spill = ops.indexOf('move');
    expect(describeLine(moveLine(m, spill))).toBe('user 0 R1: 2 blocks moved from the host pool to the disk pool');
    expect(describeLine(moveLine(m, ops.indexOf('move', spill + 2)))).toBe('user 0 R1: 2 blocks moved from the disk pool to the host pool');
    // The last line stores into the disk pool.
    expect(captionAt(m, c, m.endT)).toMatch(/1 block stored in the disk pool$/);
  });

  it('builds the timeline (copy lanes, then the disk reads and writes; an occupancy track per pool) and links a request to its moves', () => {
    const m = compileReplay(events);
    const model = buildTimelineModel(events, m);
    expect(model.lanes.map((l) => l.dir)).toEqual(['h2d', 'd2h', 'f2h', 'h2f']);
    expect(model.lanes.slice(2).map((l) => [l.length, l.totalBytes])).toEqual([
      [1, 200],
      [1, 200],
    ]);
    const pools = model.counters.filter((c) => c.key.endsWith('_pool'));
    expect(pools.map((c) => [c.key, c.label, c.max])).toEqual([
      ['gpu_pool', 'GPU pool', 2],
      ['host_pool', 'Host pool', 2],
      ['disk_pool', 'Disk pool', 4],
    ]);
    // The disk pool's track holds what the ledger's disk pool holds at each of its samples.
    const disk = pools[2]!;
    expect(Array.from(disk.v.subarray(0, disk.length))).toEqual(Array.from(disk.t.subarray(0, disk.length), (t) => {
      const l = new BlockLedger();
      for (const x of events) if (x.t <= t || x.type !== 'blocks') l.apply(x);
      return l.holding('disk')?.size ?? 0;
    }));
    const links = linkRequest(model, m, 0, 1);
    expect(links.moveTimes.move.length).toBe(2);
    expect(links.moveTimes.onboard.length).toBe(1);
  });

  it('exports to Perfetto: every pool occupancy (the disk pool in a process of its own), the disk I/O on its own tracks, never as copies', async () => {
    const chunks: Buffer[] = [];
    const out = new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk);
        done();
      },
    });
    const report = await writePerfettoTrace((async function* () {
      yield bytes;
    })(), out);
    const trace = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { traceEvents: Array<{ ph: string; name: string; pid?: number; cat?: string; args?: Record<string, unknown> }> };
    const occupancy = (name: string) => trace.traceEvents.filter((e) => e.ph === 'C' && e.name === name).map((e) => e.args!.blocks);
    expect(occupancy('GPU pool occupancy').length).toBeGreaterThan(0);
    // The disk pool's occupancy after each line that touched it, as the ledger counts it.
    const want: number[] = [];
    const l = new BlockLedger();
    for (const e of events) {
      const before = l.holding('disk')?.size ?? 0;
      l.apply(e);
      const touches = e.type === 'blocks' && ((e.op === 'move' && (e.from === 'disk' || e.to === 'disk')) || e.pool === 'disk');
      if (touches) want.push(l.holding('disk')?.size ?? before);
    }
    expect(occupancy('Disk pool occupancy')).toEqual(want);
    expect(occupancy('Disk pool capacity')).toEqual([4]);
    const names = trace.traceEvents.filter((e) => e.ph === 'M' && e.name === 'process_name').map((e) => e.args!.name);
    expect(names).toContain('Disk pool (tier 2, file)');
    const disk = trace.traceEvents.filter((e) => e.ph === 'X' && e.cat === 'xfer.disk');
    expect(disk.map((e) => [e.name, e.args!.bytes, e.args!.from_pool, e.args!.to_pool])).toEqual([
      ['disk write 200 B', 200, 'host', 'disk'],
      ['disk read 200 B', 200, 'disk', 'host'],
    ]);
    expect(report.diskIo).toEqual({ count: 2, bytes: { f2h: 200, h2f: 200 } });
    expect(report.copies.total).toBe(2);
    expect(report.moves.total).toBe(2);
  });
});
