/**
 * A run whose follower stopped (here: the app "crashed" while a Local run went on) is offered for
 * Resume as the window opens on the library, and Resume follows it to its end, to a log
 * byte-identical to the host's. Real Chromium through `kvscope serve`'s bridge, the real agent on
 * this machine's CPU (the Local host goes through the same launcher and tail as an SSH host).
 */
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostService } from '../../src/main/core/hosts';
import { RunManager } from '../../src/main/core/runs';
import { RunStore } from '../../src/main/core/run-store';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';

const PY = '/usr/bin/python3';
const skip = browserSkipReason() ?? (existsSync(PY) ? null : `no ${PY}`);
/** Long enough that the "crash" lands mid-run. */
const LONG = { model: 'tiny', device: 'cpu' as const, users: 4, rounds: 14, context_tokens: 512, gpu_kv_bytes: 2_500_000, host_kv_bytes: 8_000_000, trace: false, sample_ms: 0 };

describe.skipIf(skip !== null)(`Resume in the window${skip ? ` (skipped: ${skip})` : ''}`, { timeout: 600_000 }, () => {
  let w: ServedWindow;
  let runId: string;
  let remoteDir: string;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'kvscope-resume-e2e-'));
    const store = new RunStore(join(dataDir, 'runs'), null);
    await store.ensure();
    const hosts = new HostService({ dataDir, agentSourceDir: resolve('resources/agent'), python: PY, prompts: { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null } });
    // Wait for the first round's event: the run is under way when the follower goes.
    let started!: () => void;
    const underway = new Promise<void>((r) => (started = r));
    const runs = new RunManager({ store, hosts, push: (m) => m.kind === 'run-events' && m.events.some((e) => e.type === 'round') && started() });
    ({ runId, remoteDir } = await runs.start({ host: 'local', name: 'crashed run', workload: LONG }));
    await underway;
    // The app "crashes": the follower stops without a word, meta.json still says running.
    await runs.detachAll();
    const meta = await store.readMeta(runId);
    await store.writeMeta({ ...meta, status: 'running', tail_pid: 999_999_999 });
    // The app starts again on the same data folder.
    w = await serveWindow({ runsDir: store.runsDir, samplesDir: null, dataDir });
  });
  afterAll(async () => {
    await w?.close();
  });

  it('offers Resume for the incomplete run at start-up; Resume follows it to its end, byte-identical', async () => {
    const page = await w.open('', { colorScheme: 'light' });
    const offer = page.locator('[data-testid=resume-offer]');
    await offer.waitFor({ timeout: 60_000 });
    expect(await offer.textContent()).toContain('“crashed run” stopped being followed before it ended');
    expect(await page.locator(`tr[data-run-id="${runId}"] .status`).textContent()).toBe('incomplete');
    expect(await page.locator(`tr[data-run-id="${runId}"] [data-action=resume]`).count()).toBe(1);
    await page.screenshot({ path: join(ARTIFACTS, 'resume-offer.png') });
    const stored = statSync(join(dataDir, 'runs', runId, 'events.jsonl')).size;
    await page.click('[data-action=resume-all]');
    await page.locator(`tr[data-run-id="${runId}"] .status-ok`).waitFor({ timeout: 300_000 });
    const local = readFileSync(join(dataDir, 'runs', runId, 'events.jsonl'));
    expect(local.length).toBeGreaterThan(stored);
    expect(local.equals(readFileSync(join(remoteDir, 'events.jsonl')))).toBe(true);
    expect(await page.locator('[data-testid=resume-offer]').count()).toBe(0);
    expect(w.errors).toEqual([]);
  });
});
