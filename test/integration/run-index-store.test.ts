/**
 * Run indexes on disk (docs/run-index.md), with a real runs folder, the bundled samples and the
 * real bridge: built once when first listed or opened, read afterwards, and rebuilt — never read —
 * when the log changed, the index is of another format, or it is damaged. A folder where no index
 * can be written still opens. A live run's in-memory index equals the log's. What the window
 * receives (core and `kvscope serve`'s binary frame) is the model the log compiles to.
 */
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { crc32, inflateRawSync } from 'node:zlib';
import type { RunIndexBytes } from '../../src/shared/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { connectBridge } from '../helpers/bridge-socket';
import { createCore, type Core } from '../../src/main/core/app-core';
import { INDEX_FILE } from '../../src/main/core/run-index-store';
import { RunStore } from '../../src/main/core/run-store';
import { startServer, type RunningServer } from '../../src/main/core/serve';
import { decodeAll } from '../../src/shared/events-reader';
import { compileReplay } from '../../src/shared/replay';
import { decodeRunIndex, RUN_INDEX_FORMAT } from '../../src/shared/run-index/run-index';
import { FIXTURE_RUNS_DIR, SAMPLES_DIR } from '../helpers/real-runs';

const FIXTURE = join(FIXTURE_RUNS_DIR, 'cpu-tiny-4users-offload', 'events.jsonl');
const hasSamples = existsSync(SAMPLES_DIR);

function newRun(runsDir: string, id: string, logText?: string): string {
  mkdirSync(join(runsDir, id), { recursive: true });
  const log = join(runsDir, id, 'events.jsonl');
  if (logText === undefined) cpSync(FIXTURE, log);
  else writeFileSync(log, logText);
  writeFileSync(join(runsDir, id, 'meta.json'), JSON.stringify({ id, name: id, host: 'test', status: 'ok', createdAt: '' }));
  return log;
}

/** The model and numbers the log itself gives (the path without an index). */
async function fromLog(store: RunStore, id: string) {
  const loaded = await store.load(id);
  return { state: compileReplay(loaded.events).toState(), analysis: loaded.analysis, badLineTotal: loaded.badLineTotal, events: loaded.events.length };
}

/** What the window gets: the index file's bytes as they are (or, for a followed run, the plain form). */
function fromWindowBytes(got: RunIndexBytes) {
  const { content } = decodeRunIndex(got.index, { inflate: inflateRawSync });
  return { state: content.replay.toState(), analysis: content.analysis, badLineTotal: content.badLineTotal, events: content.eventCount, listing: got.listing };
}

describe('run indexes on disk', () => {
  let runsDir: string;
  let store: RunStore;
  beforeAll(() => {
    runsDir = mkdtempSync(join(tmpdir(), 'kvscope-index-'));
    store = new RunStore(runsDir, hasSamples ? SAMPLES_DIR : null);
  });

  it('are built on the first listing, beside each run and for each sample, then read instead of the log', async () => {
    newRun(runsDir, 'r1');
    const before = await store.list();
    const index = join(runsDir, 'r1', INDEX_FILE);
    expect(existsSync(index)).toBe(true);
    if (hasSamples) {
      for (const r of before.filter((x) => x.bundled)) expect(existsSync(join(runsDir, '.index', `${r.id.slice('sample:'.length)}.kvindex`))).toBe(true);
    }
    const built = statSync(index).mtimeMs;
    const want = await fromLog(store, 'r1');
    const got = fromWindowBytes(await store.loadIndex('r1'));
    expect(isDeepStrictEqual(got.state, want.state)).toBe(true);
    expect(got.analysis).toEqual(want.analysis);
    expect(got.events).toBe(want.events);
    expect(got.listing).toEqual(before.find((r) => r.id === 'r1'));
    // Read, not rebuilt: a fresh store (a restarted app) lists and opens from the same file.
    const again = new RunStore(runsDir, hasSamples ? SAMPLES_DIR : null);
    expect(await again.list()).toEqual(before);
    await again.loadIndex('r1');
    expect(statSync(index).mtimeMs).toBe(built);
  });

  it('is rebuilt when its log grows, and then shows the new line', async () => {
    const log = newRun(runsDir, 'grows');
    const first = fromWindowBytes(await store.loadIndex('grows'));
    const last = decodeAll(readFileSync(log)).events.at(-1)!;
    appendFileSync(log, JSON.stringify({ seq: last.seq + 1, t: last.t + 1, type: 'log', level: 'info', msg: 'one more' }) + '\n');
    const second = fromWindowBytes(await new RunStore(runsDir, null).loadIndex('grows'));
    expect(second.events).toBe(first.events + 1);
    expect(second.analysis.eventsByType.log).toBe((first.analysis.eventsByType.log ?? 0) + 1);
    expect(second).toMatchObject({ events: (await fromLog(store, 'grows')).events });
  });

  it('is rebuilt when its log was rewritten to the same size with its modification time set back', async () => {
    const log = newRun(runsDir, 'rewritten');
    utimesSync(log, 1.7e9, 1.7e9);
    const first = fromWindowBytes(await store.loadIndex('rewritten'));
    const text = readFileSync(log, 'utf8');
    // The first request's queued time moves by 1 ns, far from the log's end: same size, and the
    // mtime set back as `touch -r` would; only the change time tells.
    const at = text.indexOf('"phase":"queued"');
    const lineStart = text.lastIndexOf('\n', at) + 1;
    const line = text.slice(lineStart, text.indexOf('\n', at));
    const moved = line.replace(/"t":(\d*)(\d)/, (_m, head: string, d: string) => `"t":${head}${(Number(d) + 1) % 10}`);
    expect(moved).not.toBe(line);
    expect(text.length - at).toBeGreaterThan(16 << 10);
    writeFileSync(log, text.slice(0, lineStart) + moved + text.slice(lineStart + line.length));
    expect(statSync(log).size).toBe(Buffer.byteLength(text));
    utimesSync(log, 1.7e9, 1.7e9);
    const second = fromWindowBytes(await new RunStore(runsDir, null).loadIndex('rewritten'));
    expect(second.analysis).toEqual((await fromLog(store, 'rewritten')).analysis);
    expect(second.analysis.requests).not.toEqual(first.analysis.requests);
  });

  it('is rebuilt, never read, when it is of another format, cut off or damaged', async () => {
    newRun(runsDir, 'damaged');
    await store.loadIndex('damaged');
    const index = join(runsDir, 'damaged', INDEX_FILE);
    const good = readFileSync(index);
    const want = await fromLog(store, 'damaged');
    const otherFormat = Buffer.from(good);
    otherFormat.writeUInt32LE(RUN_INDEX_FORMAT + 1, 8);
    const damaged = Buffer.from(good);
    damaged.fill(0x5a, damaged.length - 64);
    for (const bad of [otherFormat, good.subarray(0, good.length >> 1), damaged, Buffer.from('not an index')]) {
      writeFileSync(index, bad);
      const got = fromWindowBytes(await new RunStore(runsDir, null).loadIndex('damaged'));
      expect(isDeepStrictEqual(got.state, want.state)).toBe(true);
      expect(got.analysis).toEqual(want.analysis);
      // Rewritten whole, in this format.
      expect(() => decodeRunIndex(readFileSync(index), { inflate: inflateRawSync, crc32 })).not.toThrow();
      expect(readFileSync(index).readUInt32LE(8)).toBe(RUN_INDEX_FORMAT);
    }
  });

  it('opens a run whose index cannot be written (built in memory)', async () => {
    newRun(runsDir, 'nowrite');
    // A folder where the index file would go: writing it fails, reading it finds no index.
    mkdirSync(join(runsDir, 'nowrite', INDEX_FILE));
    const got = fromWindowBytes(await store.loadIndex('nowrite'));
    expect(isDeepStrictEqual(got.state, (await fromLog(store, 'nowrite')).state)).toBe(true);
    expect((await store.list()).find((r) => r.id === 'nowrite')?.status).toBe('ok');
  });

  it('keeps a followed run in memory: what it holds so far plus each event, as the log gives', async () => {
    const all = decodeAll(readFileSync(FIXTURE)).events;
    const lines = readFileSync(FIXTURE, 'utf8').split('\n').filter(Boolean);
    const cut = Math.floor(lines.length / 2);
    const log = newRun(runsDir, 'live', lines.slice(0, cut).join('\n') + '\n');
    writeFileSync(join(runsDir, 'live', 'meta.json'), JSON.stringify({ id: 'live', name: 'live', host: 'test', status: 'running', createdAt: '' }));
    const live = await store.index.startLive(log);
    for (const e of all.slice(cut)) live.push(e);
    appendFileSync(log, lines.slice(cut).join('\n') + '\n');
    const got = fromWindowBytes(await store.loadIndex('live'));
    const want = await fromLog(store, 'live');
    expect(isDeepStrictEqual(got.state, want.state)).toBe(true);
    expect(got.analysis).toEqual(want.analysis);
    expect(got.listing?.status).toBe('running');
    // Still running elsewhere: no index file is written for a log that is still growing.
    store.index.stopLive(log);
    await store.loadIndex('live');
    expect(existsSync(join(runsDir, 'live', INDEX_FILE))).toBe(false);
  });
});

describe('loadRunIndex through the core and kvscope serve', () => {
  let core: Core;
  let server: RunningServer;
  let ws: WebSocket;
  beforeAll(async () => {
    const runsDir = mkdtempSync(join(tmpdir(), 'kvscope-index-serve-'));
    newRun(runsDir, 'r1');
    core = await createCore({ runsDir, samplesDir: null, shell: 'browser' });
    server = await startServer({ core, staticDir: mkdtempSync(join(tmpdir(), 'kvscope-static-')) });
    ws = await connectBridge(server);
  });
  afterAll(async () => {
    ws?.close();
    await server?.close();
  });

  it('sends the index as one binary frame that decodes to the run its log gives; errors stay JSON', async () => {
    const want = await fromLog(core.store, 'r1');
    const ask = (req: object) =>
      new Promise<Buffer | Record<string, unknown>>((resolve) => {
        // The answer, not the pushes around it (building the index pushes its progress).
        const on = (data: Buffer, isBinary: boolean) => {
          const m = isBinary ? data : (JSON.parse(String(data)) as Record<string, unknown>);
          if (!isBinary && 'push' in m) return;
          ws.off('message', on);
          resolve(m);
        };
        ws.on('message', on);
        ws.send(JSON.stringify(req));
      });
    const frame = (await ask({ id: 41, method: 'loadRunIndex', args: ['r1'] })) as Buffer;
    expect(Buffer.isBuffer(frame)).toBe(true);
    // u32 id, u32 JSON length, the JSON (the value without its bytes), padding to 8, the bytes.
    expect(frame.readUInt32LE(0)).toBe(41);
    const jsonBytes = frame.readUInt32LE(4);
    const head = JSON.parse(frame.subarray(8, 8 + jsonBytes).toString()) as { key: string; value: RunIndexBytes };
    expect(head.key).toBe('index');
    const start = (8 + jsonBytes + 7) & ~7;
    const got = fromWindowBytes({ ...head.value, index: frame.subarray(start) });
    expect(isDeepStrictEqual(got.state, want.state)).toBe(true);
    expect(got.analysis).toEqual(want.analysis);
    expect(got.listing).toEqual((await core.handlers.listRuns()).ok && (await core.store.list()).find((r) => r.id === 'r1'));
    // The window is sent the index file as it is on disk.
    expect(Buffer.compare(frame.subarray(start), readFileSync(join(core.store.runDir('r1'), INDEX_FILE)))).toBe(0);
    const missing = (await ask({ id: 42, method: 'loadRunIndex', args: ['no-such-run'] })) as { id: number; result: { ok: boolean; error: { code: string } } };
    expect(missing).toMatchObject({ id: 42, result: { ok: false, error: { code: 'not_found' } } });
    // And through the core directly (what Electron's IPC hands the window).
    const direct = await core.handlers.loadRunIndex('r1');
    expect(direct.ok && isDeepStrictEqual(fromWindowBytes(direct.value).state, want.state)).toBe(true);
  });
});
