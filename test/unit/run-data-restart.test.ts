/**
 * A run open in the window while its Slurm job is requeued: the job runs the benchmark again from
 * its start, so the log begins anew at seq 0. The window's cache must drop the first attempt's
 * events on the `restarted` status and take the new attempt's, which it would otherwise skip as
 * already seen (seq ≤ the last one applied). Real recorded events, a stand-in bridge.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { KvScopeApi, PushMessage, RunIndexBytes } from '../../src/shared/api';
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
    } as unknown as KvScopeApi;
    const cache = new RunDataCache(api);
    const d = await cache.open('r');
    expect(d.replay.lastSeqSeen).toBe(half.at(-1)!.seq);
    const push = (m: PushMessage) => listener!(m);
    push({ kind: 'run-status', runId: 'r', status: 'running', message: 'requeued', restarted: true });
    expect(d.replay.lastSeqSeen).toBe(-1);
    expect(d.loaded.eventCount).toBe(0);
    // The new attempt's log, from seq 0, in two batches.
    push({ kind: 'run-events', runId: 'r', events: events.slice(0, 10) });
    flush();
    push({ kind: 'run-events', runId: 'r', events: events.slice(10) });
    flush();
    expect(d.replay.lastSeqSeen).toBe(events.at(-1)!.seq);
    expect(d.loaded.eventCount).toBe(events.length);
  });
});
