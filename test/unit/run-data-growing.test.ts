/**
 * A run opened while it runs: the window's run cache keeps its analysis (Summary's rounds and
 * blocks, the header's model and users, the legend's users) and its listing up to date as lines
 * arrive, so a run watched until it ends shows the same Summary a reload would. Through the real
 * core (RunStore on a runs folder whose events.jsonl grows as a tail writes it) and a recorded
 * CPU run, pushed as the tail pushes it: appended to disk first, then pushed.
 */
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../src/main/core/app-core';
import type { KvScopeApi } from '../../src/shared/api';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { RunDataCache, type RunData } from '../../src/renderer/run-data';
import { FIXTURE_RUNS_DIR } from '../helpers/real-runs';

const bytes = readFileSync(join(FIXTURE_RUNS_DIR, 'cpu-tiny-4users-offload', 'events.jsonl'));
const lines = bytes.toString('utf8').split('\n').filter(Boolean);
const all = decodeAll(bytes).events;

describe('a run that grows after it was opened', () => {
  let core: Core;
  let dir: string;
  const rafBefore = globalThis.requestAnimationFrame;
  beforeAll(async () => {
    // The cache applies pushed batches once per animation frame; node has no frames.
    globalThis.requestAnimationFrame = (cb: FrameRequestCallback) => setTimeout(() => cb(performance.now()), 0) as unknown as number;
    dir = mkdtempSync(join(tmpdir(), 'kvscope-growing-'));
    core = await createCore({ runsDir: join(dir, 'runs'), samplesDir: null, shell: 'browser' });
  });
  afterAll(() => {
    globalThis.requestAnimationFrame = rafBefore;
  });

  function api(): KvScopeApi {
    return { ...core.handlers, onPush: (l) => core.addPushListener(l) } as KvScopeApi;
  }
  function until(cache: RunDataCache, id: string, ok: (d: RunData) => boolean): Promise<RunData> {
    return new Promise((resolve) => {
      const off = cache.listen(id, (d) => {
        if (ok(d)) {
          off();
          resolve(d);
        }
      });
    });
  }

  for (const [opened, upTo] of [
    ['as it starts (only run.start on disk)', 1],
    ['mid-way (the context round done)', lines.findIndex((l) => l.includes('"type":"round"') && l.includes('"round":1'))],
  ] as const) {
    it(`opened ${opened}: Summary's analysis and the listing end as the whole log's`, async () => {
      const id = `growing-${upTo}`;
      const runDir = join(dir, 'runs', id);
      mkdirSync(runDir, { recursive: true });
      // Followed by a live process (this test's parent), as a tailed run is: the core's start-up
      // sweep marks a "running" run with no live follower incomplete, and raced this test for it.
      const meta = { id, name: id, host: 'local', status: 'running', createdAt: '2026-12-01T00:00:00.000Z', tail_pid: process.ppid };
      writeFileSync(join(runDir, 'meta.json'), JSON.stringify(meta));
      writeFileSync(join(runDir, 'events.jsonl'), lines.slice(0, upTo).join('\n') + '\n');
      const cache = new RunDataCache(api());
      const d = await cache.open(id);
      expect(d.loaded.analysis.events).toBe(upTo);
      // The tail: each batch is on disk before it is pushed.
      for (let i = upTo; i < lines.length; i += 40) {
        const chunk = lines.slice(i, i + 40);
        appendFileSync(join(runDir, 'events.jsonl'), chunk.join('\n') + '\n');
        core.push({ kind: 'run-events', runId: id, events: decodeAll(Buffer.from(chunk.join('\n') + '\n')).events });
      }
      writeFileSync(join(runDir, 'meta.json'), JSON.stringify({ ...meta, status: 'ok' }));
      core.push({ kind: 'run-status', runId: id, status: 'ok' });
      const whole = analyzeEvents(all);
      const done = await until(cache, id, (x) => x.loaded.analysis.events === all.length && x.loaded.listing.model !== null && x.loaded.listing.status === 'ok');
      const a = done.loaded.analysis;
      expect(a.roundRows).toEqual(whole.roundRows);
      expect(a.blocks).toEqual(whole.blocks);
      expect(a.users).toEqual(whole.users);
      expect(a.ttft).toEqual(whole.ttft);
      expect(a.e2e_ns).toBe(whole.e2e_ns);
      expect(a.status).toBe('ok');
      expect(done.loaded.listing).toMatchObject({ model: 'tiny', users: 4, status: 'ok', e2e_ns: whole.e2e_ns });
      expect(done.replay.moveCount).toBe(all.filter((e) => e.type === 'blocks').reduce((n, e) => n + (e as { ids: unknown[] }).ids.length, 0));
    });
  }
});
