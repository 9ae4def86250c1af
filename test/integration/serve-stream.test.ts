/**
 * The browser bridge streams a run's events to the window in chunks (serve.ts `stream: true`),
 * then answers with the run minus its events; a plain loadRun still answers whole. Real server,
 * real WebSocket client, a real recorded CPU run.
 */
import { mkdirSync, mkdtempSync, cpSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createCore } from '../../src/main/core/app-core';
import { startServer, STREAM_CHUNK, type RunningServer } from '../../src/main/core/serve';
import { realRunPaths } from '../helpers/real-runs';

const run = realRunPaths().find((r) => !r.name.startsWith('sample:'));

describe.skipIf(!run)(`serve streams loadRun in chunks${run ? '' : ' (skipped: no real run fixture)'}`, () => {
  let server: RunningServer;
  let ws: WebSocket;
  beforeAll(async () => {
    const runsDir = mkdtempSync(join(tmpdir(), 'kvscope-stream-'));
    mkdirSync(join(runsDir, 'r1'));
    cpSync(run!.path, join(runsDir, 'r1', 'events.jsonl'));
    writeFileSync(join(runsDir, 'r1', 'meta.json'), JSON.stringify({ id: 'r1', name: 'r1', host: 'h', status: 'ok', createdAt: '' }));
    const real = await createCore({ runsDir, samplesDir: null, shell: 'browser' });
    // One handler that throws (a bug elsewhere) must still be answered, with an error Result.
    const core = { ...real, handlers: { ...real.handlers, revealRun: () => Promise.reject(new Error('boom')) } };
    server = await startServer({ core, staticDir: mkdtempSync(join(tmpdir(), 'kvscope-static-')) });
    ws = new WebSocket(`ws://127.0.0.1:${server.port}/api?token=${server.token}`, { origin: `http://127.0.0.1:${server.port}` });
    await new Promise((r) => ws.once('open', r));
  });
  afterAll(async () => {
    ws?.close();
    await server?.close();
  });

  const ask = (req: object) =>
    new Promise<Array<Record<string, unknown>>>((resolve) => {
      const got: Array<Record<string, unknown>> = [];
      const on = (data: Buffer) => {
        const m = JSON.parse(String(data)) as Record<string, unknown>;
        got.push(m);
        if ('result' in m) {
          ws.off('message', on);
          resolve(got);
        }
      };
      ws.on('message', on);
      ws.send(JSON.stringify(req));
    });

  it('sends every event in order, in chunks, before a result without events', async () => {
    const whole = await ask({ id: 1, method: 'loadRun', args: ['r1'] });
    expect(whole).toHaveLength(1);
    const all = ((whole[0]!.result as { value: { events: Array<{ seq: number }> } }).value.events).map((e) => e.seq);
    const streamed = await ask({ id: 2, method: 'loadRun', args: ['r1'], stream: true });
    const chunks = streamed.filter((m) => 'events' in m);
    expect(chunks.length).toBe(Math.ceil(all.length / STREAM_CHUNK));
    expect(chunks.every((c) => c.id === 2)).toBe(true);
    expect(chunks.flatMap((c) => (c.events as Array<{ seq: number }>).map((e) => e.seq))).toEqual(all);
    const last = streamed[streamed.length - 1]! as { result: { ok: boolean; value: { events: unknown[]; analysis: unknown } } };
    expect(last.result.ok).toBe(true);
    expect(last.result.value.events).toEqual([]);
    expect(last.result.value.analysis).toBeTruthy();
  });

  it('answers a handler that rejects with an internal error instead of never', async () => {
    const got = await ask({ id: 3, method: 'revealRun', args: ['r1'] });
    expect(got[0]!.result).toMatchObject({ ok: false, error: { code: 'internal', message: 'revealRun failed: boom' } });
  });
});
