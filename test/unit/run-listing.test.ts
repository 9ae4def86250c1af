/**
 * A run's row in the library (RunStore.list): what a failed run says, and both TTFTs. Through the
 * real RunStore on a runs folder, with a recorded CPU run and the meta.json the app writes.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RunStore } from '../../src/main/core/run-store';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { FIXTURE_RUNS_DIR } from '../helpers/real-runs';

function store(runs: Record<string, { meta: object; events?: string }>): RunStore {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-listing-'));
  for (const [id, r] of Object.entries(runs)) {
    mkdirSync(join(dir, id));
    writeFileSync(join(dir, id, 'meta.json'), JSON.stringify({ id, name: id, host: 'local', createdAt: '2026-12-01T10:00:00.000Z', ...r.meta }));
    if (r.events) copyFileSync(r.events, join(dir, id, 'events.jsonl'));
    else writeFileSync(join(dir, id, 'events.jsonl'), '');
  }
  return new RunStore(dir, null);
}

describe('the runs library listing', () => {
  it('a run that failed before its run.start: the users and model asked, and the reason', async () => {
    const s = store({
      failed: {
        meta: { status: 'error', workload: { model: 'tiny', users: 2, rounds: 3 }, error: { code: 'agent_failed', message: 'torch does not import: ModuleNotFoundError' } },
      },
    });
    const [row] = await s.list();
    expect(row).toMatchObject({ status: 'error', users: 2, model: 'tiny', rounds: 3, error: 'agent_failed: torch does not import: ModuleNotFoundError' });
  });

  it('a finished run: no error, and its queued and service TTFT means over the timed rounds', async () => {
    const events = join(FIXTURE_RUNS_DIR, 'cpu-tiny-4users-offload', 'events.jsonl');
    const s = store({ ok: { meta: { status: 'ok' }, events } });
    const [row] = await s.list();
    const a = analyzeEvents(decodeAll(readFileSync(events)).events);
    const timed = a.requests.filter((r) => r.round >= 1);
    const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
    expect(row!.error).toBeNull();
    expect(row!.ttft_ns_mean).toBeCloseTo(mean(timed.map((r) => r.first_token! - r.queued!)), 3);
    expect(row!.service_ttft_ns_mean).toBeCloseTo(mean(timed.map((r) => r.first_token! - r.scheduled!)), 3);
    // Admitted after it was queued: service TTFT is never longer.
    expect(row!.service_ttft_ns_mean!).toBeLessThanOrEqual(row!.ttft_ns_mean!);
  });
});
