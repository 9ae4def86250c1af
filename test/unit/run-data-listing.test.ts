/**
 * The window's run cache asks for a growing run's listing again when run.start or run.end arrives
 * and when the run ends; the answers can come back in any order. The latest ask's answer is the
 * one that stays: an earlier list (read while meta.json still said running) landing last must not
 * put an ended run back to running. Recorded events, a stand-in bridge whose list answers the test
 * releases in the order it chooses.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { RunListing } from '../../src/shared/api';
import type { Result } from '../../src/shared/result';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';
import { RunDataCache } from '../../src/renderer/run-data';
import { indexOf, standInBridge } from '../helpers/run-cache-bridge';

const events = decodeAll(readFileSync('test/fixtures/runs/cpu-tiny-3users/events.jsonl')).events as KvEvent[];

describe("the window's run cache asking for a growing run's listing", () => {
  it('keeps the answer to its latest ask, whichever answer arrives last', async () => {
    const asks: Array<(status: RunListing['status']) => void> = [];
    const b = standInBridge(
      () => indexOf(events.slice(0, 10), true),
      () => new Promise<Result<RunListing[]>>((resolve) => asks.push((status) => resolve({ ok: true, value: [{ id: 'r', status } as RunListing] }))),
    );
    const cache = new RunDataCache(b.api);
    const d = await cache.open('r');
    expect(events.at(-1)!.type).toBe('run.end');
    // The rest of the log, run.end last: the cache asks for the listing (meta.json still says running).
    b.push({ kind: 'run-events', runId: 'r', events: events.slice(10) });
    b.flush();
    // The run ends: it asks again (meta.json now says ok).
    b.push({ kind: 'run-status', runId: 'r', status: 'ok' });
    expect(asks).toHaveLength(2);
    const heard = (status: RunListing['status']) => new Promise<void>((resolve) => cache.listen('r', (x) => x.loaded.listing.status === status && resolve()));
    const ok = heard('ok');
    asks[1]!('ok');
    await ok;
    // The first answer comes back last; it is stale. The cache has handled it once the microtasks
    // its answer queued have run, that is before the next turn of the event loop.
    asks[0]!('running');
    await new Promise((resolve) => setImmediate(resolve));
    expect(d.loaded.listing.status).toBe('ok');
    expect(asks).toHaveLength(2);
  });
});
