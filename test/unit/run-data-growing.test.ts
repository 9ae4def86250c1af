/**
 * A run opened while it runs: the window's run cache keeps its analysis (Summary's rounds and
 * blocks, the header's model and users, the legend's users) and its listing up to date as lines
 * arrive, so a run watched until it ends shows the same Summary a reload would. Through the real
 * core following the run as it follows a Local run (its tail reading a log this test appends to,
 * its in-memory index growing), with a recorded CPU run's lines. The analysis goes on from the
 * analyzer the run's index carries: the run is read once, when it opens, never again from its log.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../src/main/core/app-core';
import type { KvScopeApi } from '../../src/shared/api';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { runIndexHeader } from '../../src/shared/run-index/run-index';
import { RunDataCache, type RunData } from '../../src/renderer/run-data';
import { followRun } from '../helpers/followed-run';
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

  /** The core's handlers as the window's bridge offers them, counting the reads of each run. */
  function api(reads: string[]): KvScopeApi {
    const h = core.handlers;
    return {
      ...h,
      loadRun: (id: string) => (reads.push('log'), h.loadRun(id)),
      loadRunIndex: (id: string) => (reads.push('index'), h.loadRunIndex(id)),
      onPush: (l) => core.addPushListener(l),
    } as KvScopeApi;
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
    it(`opened ${opened}: Summary's analysis and the listing end as the whole log's, the log never read`, async () => {
      const id = `growing-${upTo}`;
      const run = await followRun(core, id, lines.slice(0, upTo));
      const reads: string[] = [];
      const cache = new RunDataCache(api(reads));
      const d = await cache.open(id);
      expect(d.loaded.analysis.events).toBe(upTo);
      const whole = analyzeEvents(all);
      const done = until(cache, id, (x) => x.loaded.analysis.events === all.length && x.loaded.listing.model !== null && x.loaded.listing.status === 'ok');
      for (let i = upTo; i < lines.length; i += 40) await run.append(lines.slice(i, i + 40));
      expect(await run.end()).toBe('ok');
      const a = (await done).loaded.analysis;
      expect(a).toEqual(whole);
      // As a reload shows it: the index the core built from the log once the run ended.
      const reloaded = await core.handlers.loadRunIndex(id);
      expect(reloaded.ok).toBe(true);
      if (reloaded.ok) expect(a).toEqual(runIndexHeader(reloaded.value.index).analysis);
      expect(d.loaded.listing).toMatchObject({ model: 'tiny', users: 4, status: 'ok', e2e_ns: whole.e2e_ns });
      expect(d.replay.moveCount).toBe(all.filter((e) => e.type === 'blocks').reduce((n, e) => n + (e as { ids: unknown[] }).ids.length, 0));
      // Opened once from the core's index; every later line analysed from the analyzer it carried.
      expect(reads).toEqual(['index']);
    });
  }
});
