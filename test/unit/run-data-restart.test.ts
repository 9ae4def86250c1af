/**
 * A run open in the window while its Slurm job is requeued: the job runs the benchmark again from
 * its start, so the log begins anew at seq 0. The window's cache must drop the first attempt's
 * events on the `restarted` status and take the new attempt's, which it would otherwise skip as
 * already seen (seq ≤ the last one applied); its analysis starts over from the new attempt's index
 * as the core has it, never from the log. Real recorded events, a stand-in bridge.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { RunDataCache } from '../../src/renderer/run-data';
import { indexOf, standInBridge } from '../helpers/run-cache-bridge';

const events = decodeAll(readFileSync('test/fixtures/runs/cpu-tiny-3users/events.jsonl')).events as KvEvent[];

describe("the window's run cache across a requeued job", () => {
  const half = events.slice(0, Math.floor(events.length / 2));

  it('starts the replay over on a restarted status, then follows the new attempt, its analysis seeded from its index', async () => {
    // Opened mid-run: the index of the first attempt's first half, as the core sends a followed run's.
    let index = indexOf(half, true);
    const b = standInBridge(() => index);
    const cache = new RunDataCache(b.api);
    const d = await cache.open('r');
    expect(d.replay.lastSeqSeen).toBe(half.at(-1)!.seq);
    b.push({ kind: 'run-status', runId: 'r', status: 'running', message: 'requeued', restarted: true });
    expect(d.replay.lastSeqSeen).toBe(-1);
    expect(d.loaded.eventCount).toBe(0);
    // The core's index of the new attempt when the window asks: its first 10 lines so far.
    index = indexOf(events.slice(0, 10), true);
    const analysed = new Promise<void>((resolve) => cache.listen('r', (x) => x.loaded.analysis.events === events.length && resolve()));
    // The new attempt's log, from seq 0, in two batches.
    b.push({ kind: 'run-events', runId: 'r', events: events.slice(0, 10) });
    b.flush();
    b.push({ kind: 'run-events', runId: 'r', events: events.slice(10) });
    b.flush();
    expect(d.replay.lastSeqSeen).toBe(events.at(-1)!.seq);
    expect(d.loaded.eventCount).toBe(events.length);
    await analysed;
    expect(d.loaded.analysis).toEqual(analyzeEvents(events));
    expect(b.reads).toEqual(['index', 'index']);
  });

  it("takes the new attempt's whole analysis when the core no longer follows it (it ended while the window asked)", async () => {
    let index = indexOf(half, true);
    const b = standInBridge(() => index);
    const cache = new RunDataCache(b.api);
    const d = await cache.open('r');
    b.push({ kind: 'run-status', runId: 'r', status: 'running', message: 'requeued', restarted: true });
    // Ended by the time the window asks: the index is its log's, whole, with no analyzer.
    index = indexOf(events, false);
    const analysed = new Promise<void>((resolve) => cache.listen('r', (x) => x.loaded.analysis.events === events.length && resolve()));
    b.push({ kind: 'run-events', runId: 'r', events });
    b.flush();
    await analysed;
    expect(d.loaded.analysis).toEqual(analyzeEvents(events));
    expect(b.reads).toEqual(['index', 'index']);
  });
});
