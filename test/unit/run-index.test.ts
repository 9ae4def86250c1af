/**
 * The run index (docs/run-index.md) against the log it was built from: on every real run found
 * (bundled samples, committed fixtures) and on the synthetic run (string block ids), the model a
 * decoded index gives is the model compiled from the events — every column, every scalar, the
 * analysis, the timeline model the views draw, the copies matched to each move and the numbers the
 * Pools view reads at any time — in the file form (varints, deflate) and in the form sent to the window. A model decoded from the
 * index of a log's first part, then fed the rest as a live run is, equals the whole log compiled,
 * and so does the analyzer that index carries, fed the rest as the window feeds it.
 */
import { isDeepStrictEqual } from 'node:util';
import { crc32, deflateRawSync, inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';
import { compileReplay, ReplayCursor, type ReplayModel } from '../../src/shared/replay';
import { analyzeEvents, RunAnalyzer } from '../../src/shared/run-analysis';
import { buildTimelineModel } from '../../src/shared/timeline-model';
import { decodeDeltaVarint, encodeColumnFile, encodeDeltaVarint, decodeColumnFile, ColumnFileError } from '../../src/shared/run-index/column-file';
import { decodeRunIndex, decodeRunIndexAsync, encodeRunIndex, RUN_INDEX_FORMAT, RunIndexBuilder, type RunIndexContent } from '../../src/shared/run-index/run-index';
import { inflateRaw } from '../../src/shared/run-index/inflate-raw';
import { realRuns } from '../helpers/real-runs';
import { syntheticRun } from '../helpers/synthetic-run';

const deflate = (b: Uint8Array) => deflateRawSync(b);
const inflate = (b: Uint8Array) => inflateRawSync(b);
/** How the core writes and reads index files (run-index-store.ts). */
const fileForm = { compact: true, deflate, crc32 } as const;
const fileRead = { inflate, crc32 } as const;

function build(events: readonly KvEvent[]): RunIndexContent {
  const b = new RunIndexBuilder();
  for (const e of events) b.push(e);
  b.finish();
  return b.content();
}

/** What the Pools view reads off a model at time t: every grid's counts and cells, bytes moved (copies and disk I/O), bandwidth, requests running. */
function poolsReadout(m: ReplayModel, t: number): unknown {
  const c = new ReplayCursor(m);
  c.seek(t);
  return {
    grids: [...m.gridPools],
    counts: [...c.counts],
    cells: c.cells.map((cells, g) => cells.slice(0, m.slotCount(g))),
    h2d: m.bytesMovedBy('h2d', t),
    d2h: m.bytesMovedBy('d2h', t),
    f2h: m.bytesMovedBy('f2h', t),
    h2f: m.bytesMovedBy('h2f', t),
    bwH2d: m.bandwidthAt('h2d', t, 250e6),
    progress: m.progressAt(t),
  };
}

function probeTimes(m: ReplayModel): number[] {
  const t0 = Number.isFinite(m.minT) ? m.minT : 0;
  const out: number[] = [];
  for (let k = 0; k <= 12; k++) out.push(t0 + ((m.endT - t0) * k) / 12);
  return out;
}

/**
 * Where two values first differ (a path), or null when they are equal: typed arrays compare by
 * value (NaN equal to NaN), much faster than expect().toEqual on columns of a million values.
 */
function firstDifference(a: unknown, b: unknown, path = '$'): string | null {
  if (isDeepStrictEqual(a, b)) return null;
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b)) {
    const x = a as unknown as ArrayLike<number>;
    const y = b as unknown as ArrayLike<number>;
    if (x.length !== y.length || a.constructor !== b.constructor) return `${path}: ${a.constructor.name}(${x.length}) vs ${b.constructor.name}(${y.length})`;
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return `${path}[${i}]: ${x[i]} vs ${y[i]}`;
    return null;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
      if (d) return d;
    }
    return a instanceof Map && b instanceof Map ? firstDifference([...a], [...b], `${path}(map)`) : null;
  }
  return `${path}: ${String(a)} vs ${String(b)}`;
}

function expectSame(got: unknown, want: unknown): void {
  expect(firstDifference(got, want)).toBeNull();
}

function expectSameModel(got: ReplayModel, want: ReplayModel): void {
  expectSame(got.toState(), want.toState());
  expect([got.moveCount, got.gridPools, got.gridPools.map((_, g) => got.slotCount(g))]).toEqual([want.moveCount, want.gridPools, want.gridPools.map((_, g) => want.slotCount(g))]);
  expectSame(buildTimelineModel([], got), buildTimelineModel([], want));
  // Which copies carried each move (the matching rule, pending window included): what tracing a request shows.
  expectSame(got.copyPairs(), want.copyPairs());
  expectSame(got.startupCopies, want.startupCopies);
  for (const t of probeTimes(want)) expectSame(poolsReadout(got, t), poolsReadout(want, t));
}

const runs = [...realRuns(), { name: 'synthetic', path: '', events: syntheticRun({ users: 3, rounds: 4 }) }];

describe('a run index reads back as the log it was built from', () => {
  it.each(runs.map((r) => [r.name, r] as const))('%s: file form and window form', async (_name, run) => {
    const want = compileReplay(run.events);
    const analysis = analyzeEvents(run.events);
    const content = build(run.events);
    expectSame(content.analysis, analysis);
    const source = { logSize: 123, logMtimeMs: 456.5, logCtimeMs: 789.25, logTail: 'abc' };
    const file = encodeRunIndex(content, source, fileForm);
    const wire = encodeRunIndex(content, null, { compact: false });
    // The file form is the small one: varints and deflate must have done something.
    expect(file.length).toBeLessThan(wire.length);
    for (const [bytes, options] of [
      [file, fileRead],
      [wire, {}],
    ] as const) {
      const back = decodeRunIndex(bytes, options);
      expectSame(back.content.analysis, analysis);
      expect(back.content.eventCount).toBe(run.events.length);
      expect(back.content.badLineTotal).toBe(0);
      expectSameModel(back.content.replay, want);
    }
    expect(decodeRunIndex(file, fileRead).source).toEqual(source);
    // As the window reads the file: DecompressionStream, columns inflated side by side.
    expectSameModel((await decodeRunIndexAsync(file, inflateRaw)).content.replay, want);
    // From bytes that do not start on an 8-byte boundary (a Node Buffer's slice of a WebSocket frame).
    const shifted = Buffer.concat([Buffer.from([7]), Buffer.from(wire)]).subarray(1);
    expect(shifted.byteOffset % 8).not.toBe(0);
    expectSameModel(decodeRunIndex(shifted).content.replay, want);
  });

  it.each(runs.map((r) => [r.name, r] as const))('%s: an index of the first part, then the rest appended live, is the whole log', (_name, run) => {
    const want = compileReplay(run.events);
    // Cut inside the block moves (a third, two thirds) and at the very start.
    const blocksAt = run.events.map((e, i) => (e.type === 'blocks' ? i : -1)).filter((i) => i >= 0);
    const cuts = [1, blocksAt[Math.floor(blocksAt.length / 3)] ?? 1, blocksAt[Math.floor((2 * blocksAt.length) / 3)] ?? 2];
    const whole = new RunAnalyzer();
    for (const e of run.events) whole.push(e);
    whole.finish();
    for (const cut of cuts) {
      // As the core holds a run it follows: not finished, sent with its analyzer.
      const live = new RunIndexBuilder();
      for (const e of run.events.slice(0, cut)) live.push(e);
      const back = decodeRunIndex(encodeRunIndex(live.content({ withAnalyzer: true }), null, { compact: false })).content;
      back.replay.append(run.events.slice(cut));
      expectSameModel(back.replay, want);
      // The analysis goes on from the analyzer the index carried (as the window does) to the whole log's.
      expectSame(back.analysis, live.analyzer.result());
      const analyzer = RunAnalyzer.fromState(back.analyzer!);
      for (const e of run.events.slice(cut)) analyzer.push(e);
      analyzer.finish();
      expectSame(analyzer.result(), whole.result());
      expectSame(analyzer.state, whole.state);
    }
  });

  it('carries no analyzer in the file form: a file is of a log that ends', () => {
    const content = build(syntheticRun());
    expect(content.analyzer).toBeNull();
    expect(decodeRunIndex(encodeRunIndex(content, null, fileForm), fileRead).content.analyzer).toBeNull();
  });

  it('keeps bad lines and their count', () => {
    const events = syntheticRun();
    const text = events.map((e) => JSON.stringify(e)).join('\n') + '\n{"seq": 9999, "t": 1, "type": "nonsense"}\nnot json\n';
    const { events: good, bad } = decodeAll(new TextEncoder().encode(text));
    const b = new RunIndexBuilder();
    for (const e of good) b.push(e);
    for (const x of bad) b.badLine(x);
    b.finish();
    const back = decodeRunIndex(encodeRunIndex(b.content(), null, fileForm), fileRead).content;
    expect(back.badLineTotal).toBe(2);
    expect(back.badLines).toEqual(bad);
  });
});

describe('the column file', () => {
  it('delta varints round-trip integers up to 2^53, negative steps and empty columns', () => {
    const values = [0, 1, -1, 127, 128, -129, 2 ** 31, -(2 ** 31) - 5, 2 ** 52 - 2 ** 32, 2 ** 53 - 2 ** 32, 2 ** 53 - 1, 2 ** 52 + 17, 17, 17, 5];
    const bytes = encodeDeltaVarint(values, values.length)!;
    expect(Array.from(decodeDeltaVarint(bytes, values.length, 'f64'))).toEqual(values);
    expect(decodeDeltaVarint(encodeDeltaVarint([], 0)!, 0, 'i32')).toHaveLength(0);
  });

  it('leaves columns that are not exact integers raw (fractions, NaN, steps past 2^52)', () => {
    expect(encodeDeltaVarint([1, 2.5], 2)).toBeNull();
    expect(encodeDeltaVarint([1, NaN], 2)).toBeNull();
    expect(encodeDeltaVarint([-(2 ** 52), 2 ** 52 + 2], 2)).toBeNull();
    const cols: Array<[string, Float64Array]> = [['x', Float64Array.of(1.5, NaN, -0, 3)]];
    const back = decodeColumnFile<null>(encodeColumnFile(7, null, cols, { varint: true, deflate }), 7, { inflate }).columns.get('x')!;
    expect(Array.from(back)).toEqual([1.5, NaN, -0, 3]);
    expect(Object.is(back[2], -0)).toBe(true);
  });

  it('refuses what is not a whole, undamaged index of this format', () => {
    const good = encodeRunIndex(build(syntheticRun()), null, fileForm);
    expect(() => decodeRunIndex(good, fileRead)).not.toThrow();
    const otherFormat = good.slice();
    new DataView(otherFormat.buffer).setUint32(8, RUN_INDEX_FORMAT + 1, true);
    expect(() => decodeRunIndex(otherFormat, fileRead)).toThrow(/format/);
    expect(() => decodeRunIndex(good.subarray(0, good.length - 40), fileRead)).toThrow(ColumnFileError);
    expect(() => decodeRunIndex(good.subarray(0, 20), fileRead)).toThrow(ColumnFileError);
    expect(() => decodeRunIndex(new TextEncoder().encode('{"seq":0}\n'), fileRead)).toThrow(/not a run index/);
    // One byte changed anywhere (a column's raw bytes, or a digit of the header's analysis): the
    // checksum says so, where the bytes alone would still decode.
    for (const at of [good.length - 3, 40]) {
      const damaged = good.slice();
      damaged[at] ^= 0x01;
      expect(() => decodeRunIndex(damaged, fileRead)).toThrow(/checksum/);
    }
    // The window's form carries no checksum; a file must.
    expect(() => decodeRunIndex(encodeRunIndex(build(syntheticRun()), null, { compact: false }), fileRead)).toThrow(/no checksum/);
  });
});
