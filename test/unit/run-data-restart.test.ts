/**
 * A run open in the window while its Slurm job is requeued: the job runs the benchmark again from
 * its start, so the log begins anew at seq 0. The window's cache must drop the first attempt's
 * events on the `restarted` status and take the new attempt's, which it would otherwise skip as
 * already seen (seq ≤ the last one applied). Real recorded events, a stand-in bridge.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { KvScopeApi, LoadedRun, PushMessage, RunIndexBytes } from '../../src/shared/api';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';
import { RunDataCache } from '../../src/renderer/run-data';
import { encodeRunIndex, RunIndexBuilder } from '../../src/shared/run-index/run-index';

const events = decodeAll(readFileSync('test/fixtures/runs/cpu-tiny-3users/events.jsonl')).events as KvEvent[];

describe('the window\'s run cache across a requeued job', () => {
  it('starts the replay over on a restarted status, then follows the new attempt', async () => {
    const frames: Array<() => void> = [];
    (globalThis as { requestAnimationFrame?: (f: () => void) => number }).requestAnimationFrame = (f) => frames.push(f);
    const flush = () => frames.splice(0).forEach((f) => f());
    let listener: ((m: PushMessage) => void) | null = null;
    const half = events.slice(0, Math.floor(events.length / 2));
    // Opened mid-run: the index of the first half, as the core sends a followed run's.
    const builder = new RunIndexBuilder();
    for (const e of half) builder.push(e);
    const index = encodeRunIndex(builder.content(), null, { compact: false });
    const api = {
      onPush: (l: (m: PushMessage) => void) => {
        listener = l;
        return () => undefined;
      },
      loadRunIndex: async () => ({ ok: true, value: { listing: { id: 'r', status: 'running' }, index } as unknown as RunIndexBytes }),
      // A live run's analysis is seeded from its log as it stands (here the new attempt's first half).
      loadRun: async () => ({ ok: true, value: { listing: { id: 'r', status: 'running' }, events: half, badLines: [], badLineTotal: 0, analysis: {} } as unknown as LoadedRun }),
      // The cache asks for the listing again when run.start or run.end arrives.
      listRuns: async () => ({ ok: true, value: [] }),
    } as unknown as KvScopeApi;
    const cache = new RunDataCache(api);
    const d = await cache.open('r');
    expect(d.replay.lastSeqSeen).toBe(half.at(-1)!.seq);
    const push = (m: PushMessage) => listener!(m);
    push({ kind: 'run-status', runId: 'r', status: 'running', message: 'requeued', restarted: true });
    expect(d.replay.lastSeqSeen).toBe(-1);
    expect(d.loaded.eventCount).toBe(0);
    // The new attempt's log, from seq 0, in two batches.
    // The analysis follows the new attempt too (seeded from its log, here the stand-in's first half).
    const analysed = new Promise<void>((resolve) => cache.listen('r', (x) => x.loaded.analysis.events === events.length && resolve()));
    push({ kind: 'run-events', runId: 'r', events: events.slice(0, 10) });
    flush();
    push({ kind: 'run-events', runId: 'r', events: events.slice(10) });
    flush();
    expect(d.replay.lastSeqSeen).toBe(events.at(-1)!.seq);
    expect(d.loaded.eventCount).toBe(events.length);
    await analysed;
    expect(d.loaded.analysis.status).toBe('ok');
  });
});
