/**
 * A protocol v2 log with a third pool (test/fixtures/protocol/v2-three-tiers.jsonl: gpu, host and
 * disk, moves between any two, disk I/O, ttft_parts) through everything in the app that reads a
 * log today: the run analysis, the replay model and its cursor, the timeline model, the Pools
 * captions and the Perfetto export. The two-pool views show gpu and host; nothing may crash or
 * count the disk tier's traffic as copies.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { writePerfettoTrace } from '../../src/main/core/export/perfetto';
import { BlockLedger } from '../../src/shared/ledger';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { compileReplay, OP_BY_CODE, POOL_GPU, POOL_HOST, ReplayCursor } from '../../src/shared/replay';
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

  it('replays the gpu and host grids as the ledger holds them at every line', () => {
    const m = compileReplay(events);
    const c = new ReplayCursor(m);
    for (const e of events.filter((x) => x.type === 'blocks')) {
      c.seek(e.t);
      const l = new BlockLedger();
      for (const x of events) if (x.t <= e.t || x.type !== 'blocks') l.apply(x);
      const ids = (pool: number) => new Set([...c.cells[pool]!].filter((b) => b >= 0).map((b) => m.blockIds[b]));
      expect(ids(POOL_GPU), `seq ${e.seq}`).toEqual(new Set(l.gpu));
      expect(ids(POOL_HOST), `seq ${e.seq}`).toEqual(new Set(l.host));
    }
    // The spill and the promotion are moves to and from a tier the grids do not draw.
    const ops = Array.from(m.op.data.subarray(0, m.moveCount), (o) => OP_BY_CODE[o]);
    expect(ops.filter((o) => o === 'move').length).toBe(4);
    const spill = ops.indexOf('move');
    expect(describeLine(moveLine(m, spill))).toBe('user 0 R1: 2 blocks moved from the host pool to another tier');
    // The last line, a store into the disk pool, has no grid to draw: the caption stays on the line before.
    expect(captionAt(m, c, m.endT)).toContain('2 blocks evicted from the host pool');
  });

  it('builds the timeline (copy lanes only) and links a request to its moves', () => {
    const m = compileReplay(events);
    const model = buildTimelineModel(events, m);
    expect(model.lanes.map((l) => l.dir)).toEqual(['h2d', 'd2h']);
    const links = linkRequest(model, m, 0, 1);
    expect(links.moveTimes.move.length).toBe(2);
    expect(links.moveTimes.onboard.length).toBe(1);
  });

  it('exports to Perfetto with gpu and host occupancy only, and no disk I/O on the copy lanes', async () => {
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
    const trace = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { traceEvents: Array<{ ph: string; name: string; args?: Record<string, unknown> }> };
    const occupancy = trace.traceEvents.filter((e) => e.ph === 'C' && /pool occupancy/.test(e.name)).map((e) => e.args!.blocks);
    expect(occupancy.length).toBeGreaterThan(0);
    expect(occupancy.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)).toBe(true);
    expect(report.copies.total).toBe(2);
    expect(report.moves.total).toBe(2);
  });
});
