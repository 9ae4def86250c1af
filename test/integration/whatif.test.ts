/**
 * What-if through the app's core (the window's action) and `kvscope whatif` (the CLI bundled from
 * the current sources, in a child process): both run the bundled agent's simulator with this
 * machine's Python on the bundled H100 runs, and the simulated runs are valid, marked simulated.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatNs } from '../../src/shared/format';
import { runSettings } from '../../src/renderer/model/run-settings';
import { createCore } from '../../src/main/core/app-core';
import { SettingsStore } from '../../src/main/core/settings';
import { BlockLedger } from '../../src/shared/ledger';
import type { RunStartEvent } from '../../src/shared/protocol';

const ROOT = process.cwd();
const SAMPLES = join(ROOT, 'resources', 'samples');
const S70_4 = 'sample:h100-llama-3.1-70b-fp8-users4-host55e9';
const S70_8 = 'sample:h100-llama-3.1-70b-fp8-users8-host55e9';
const S8_4 = 'sample:h100-llama-3.1-8b-users4-host55e9';
const app = mkdtempSync(join(tmpdir(), 'kvscope-whatif-cli-'));
const dataDir = join(app, 'data');

function kvscope(args: string[]) {
  return spawnSync(process.execPath, [join(app, 'run.mjs'), ...args], {
    encoding: 'utf8',
    cwd: app,
    env: { ...process.env, KVSCOPE_DATA_DIR: dataDir },
    timeout: 300_000,
  });
}

async function core(python?: string) {
  const runsDir = mkdtempSync(join(tmpdir(), 'kvscope-whatif-'));
  const settingsFile = join(runsDir, 'settings.json');
  const settingsStore = new SettingsStore(settingsFile);
  if (python) await settingsStore.save({ ...(await settingsStore.load()), pythonByHost: { local: python } });
  return createCore({ runsDir, samplesDir: SAMPLES, shell: 'browser', settingsStore });
}

beforeAll(async () => {
  // The CLI bundle in an install-like folder: dist-cli/ beside resources/ and package.json.
  mkdirSync(join(app, 'dist-cli'));
  await build({ entryPoints: [join(ROOT, 'src/cli/index.ts')], outfile: join(app, 'dist-cli', 'kvscope.mjs'), bundle: true, platform: 'node', format: 'esm', packages: 'external', logLevel: 'warning' });
  writeFileSync(join(app, 'run.mjs'), `import { main } from ${JSON.stringify(join(app, 'dist-cli', 'kvscope.mjs'))};\nawait main(process.argv);\n`);
  cpSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  symlinkSync(join(ROOT, 'resources'), join(app, 'resources'));
  if (!existsSync(join(app, 'node_modules'))) symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
}, 120_000);

describe('what-if in the app core', () => {
  it('lists the profiles with a source for every number', async () => {
    const c = await core();
    const r = await c.handlers.whatIfProfiles();
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const gh = r.value.find((p) => p.id === 'gh200-96');
    expect(gh?.link).toBe('NVLink-C2C');
    expect(gh?.numbers['link.h2d_bytes_per_s']).toMatchObject({ value: 375e9, basis: 'measured' });
    for (const p of r.value) for (const n of Object.values(p.numbers)) expect(n.source.length).toBeGreaterThan(20);
  });

  it('replays the H100 70B sweep on a GH200: simulated runs join the library, marked, valid', async () => {
    const c = await core();
    const r = await c.handlers.runWhatIf({ runIds: [S70_4, S70_8], profile: 'gh200-96', users: '4,8' });
    expect(r.ok, r.ok ? '' : r.error.message).toBe(true);
    if (!r.ok) return;
    expect(r.value.runIds).toHaveLength(2);
    expect(r.value.gpuPool.usersItHolds).toBe(7);
    for (const c0 of r.value.selfCheck) expect(Math.abs(c0.e2eError!)).toBeLessThan(0.03);
    // Users 4 and 8 prefill both whole contexts and short prompts, so the prefill split is measured;
    // one card's runs cannot split a step's fixed time from its weight reads, which the GH200's
    // faster HBM shortens: that alone gives each point its range.
    expect(r.value.uncertain.map((u) => u.factor)).toEqual(['step_ns']);
    expect(r.value.ranges.map((x) => x.users)).toEqual([4, 8]);
    for (const x of r.value.ranges) expect(x.e2eNs[0]).toBeLessThan(x.e2eNs[1]);
    const listed = await c.handlers.listRuns();
    const made = listed.ok ? listed.value.filter((x) => r.value.runIds.includes(x.id)) : [];
    expect(made.map((m) => m.users).sort()).toEqual([4, 8]);
    for (const m of made) {
      expect(m.simulated).toMatchObject({ profile: 'gh200-96', sourceGpu: 'NVIDIA H100 80GB HBM3' });
      expect(m.host).toBe('simulated');
      expect(m.name).toMatch(/^SIMULATED on NVIDIA GH200/);
      const loaded = await c.handlers.loadRun(m.id);
      expect(loaded.ok).toBe(true);
      if (!loaded.ok) continue;
      expect(loaded.value.badLineTotal).toBe(0);
      const ledger = new BlockLedger();
      for (const e of loaded.value.events) ledger.apply(e);
      ledger.finish();
      expect(ledger.violationTotal).toBe(0);
      const start = loaded.value.events.find((e) => e.type === 'run.start') as RunStartEvent;
      expect(start.simulated?.source.run_ids.length).toBe(2);
    }
    // The GH200 holds 7 users: at 4 nothing moves, at 8 copies return.
    const byUsers = new Map(made.map((m) => [m.users, m]));
    expect(byUsers.get(4)!.e2e_ns!).toBeLessThan(byUsers.get(8)!.e2e_ns!);
  }, 300_000);

  it('says what a run that prefills only whole contexts cannot determine, and the range it leaves', async () => {
    const c = await core();
    const r = await c.handlers.runWhatIf({ runIds: ['sample:h100-llama-3.1-8b-users4-recompute'], profile: 'gh200-96', users: '2,4' });
    expect(r.ok, r.ok ? '' : r.error.message).toBe(true);
    if (!r.ok) return;
    expect(r.value.uncertain.map((u) => u.factor)).toEqual(['prefill_step_ns', 'step_ns']);
    expect(r.value.uncertain[0]!.why).toMatch(/^held at [\d.]+ ms, the middle of 0 to [\d.]+ ms: .*cannot be told apart/);
    expect(r.value.ranges.map((x) => x.users)).toEqual([2, 4]);
    for (const x of r.value.ranges) {
      expect(x.e2eNs[0]).toBeLessThanOrEqual(x.e2eNs[1]);
      expect(x.ttftNsMean[0]).toBeLessThan(x.ttftNsMean[1]);
    }
    // The library lists each run's range (Compare draws it); a hand-edited one whose low is above
    // its high is listed as none.
    const listed = await c.handlers.listRuns();
    const made = listed.ok ? listed.value.filter((x) => r.value.runIds.includes(x.id)) : [];
    for (const m of made) {
      const range = r.value.ranges.find((x) => x.users === m.users)!;
      expect(m.simulated?.range).toEqual({ e2e_ns: range.e2eNs, ttft_ns_mean: range.ttftNsMean });
    }
    const log = await c.handlers.revealRun(made[0]!.id);
    expect(log.ok).toBe(true);
    if (log.ok) {
      const file = existsSync(join(log.value, 'events.jsonl')) ? join(log.value, 'events.jsonl') : log.value;
      const lines = readFileSync(file, 'utf8').split('\n');
      const start = JSON.parse(lines[0]!) as { run_id: string; simulated: { range: unknown } };
      start.run_id = 'hand-edited';
      start.simulated.range = { e2e_ns: [2, 1], ttft_ns_mean: [1, 2] }; // the schema holds them to numbers
      const edited = mkdtempSync(join(tmpdir(), 'kvscope-whatif-edited-'));
      writeFileSync(join(edited, 'events.jsonl'), [JSON.stringify(start), ...lines.slice(1)].join('\n'));
      const imported = await c.handlers.importRun({ path: edited });
      expect(imported.ok, imported.ok ? '' : imported.error.message).toBe(true);
      if (imported.ok) expect(imported.value.simulated?.range).toBeNull();
    }
    // Each simulated run keeps its range in run.start, and its Summary settings show it.
    for (const id of r.value.runIds) {
      const loaded = await c.handlers.loadRun(id);
      expect(loaded.ok).toBe(true);
      if (!loaded.ok) continue;
      const start = loaded.value.events.find((e) => e.type === 'run.start') as RunStartEvent;
      const range = r.value.ranges.find((x) => x.users === start.simulated?.users)!;
      expect(start.simulated?.range).toEqual({ e2e_ns: range.e2eNs, ttft_ns_mean: range.ttftNsMean });
      const rows = runSettings(start, null, {}).find((x) => x.title === 'Simulation')!.rows;
      expect(rows.find((x) => x.key === 'held_prefill_step_ns')?.value).toMatch(/^a prefill step's fixed cost: held at /);
      expect(rows.find((x) => x.key === 'range')?.value).toContain(`mean TTFT ${formatNs(range.ttftNsMean[0])} to ${formatNs(range.ttftNsMean[1])}`);
    }
  }, 300_000);

  it('refuses what it cannot replay, with the reason', async () => {
    const c = await core();
    const mixed = await c.handlers.runWhatIf({ runIds: [S70_4, S8_4], profile: 'gh200-96' });
    expect(!mixed.ok && mixed.error.code).toBe('invalid_argument');
    expect(!mixed.ok && mixed.error.message).toMatch(/different models/);
    const unknown = await c.handlers.runWhatIf({ runIds: [S8_4], profile: 'tpu-v9' });
    expect(!unknown.ok && unknown.error.message).toMatch(/built-in profiles are/);
    const badUsers = await c.handlers.runWhatIf({ runIds: [S8_4], profile: 'h200', users: '2; rm -rf /' });
    expect(!badUsers.ok && badUsers.error.code).toBe('invalid_argument');
    const badProfile = await c.handlers.runWhatIf({ runIds: [S8_4], profile: '../../etc/passwd' });
    expect(!badProfile.ok && badProfile.error.code).toBe('invalid_argument');
    const none = await c.handlers.runWhatIf({ runIds: [], profile: 'h200' });
    expect(!none.ok && none.error.code).toBe('invalid_argument');
    const noPython = await (await core('/nonexistent/python3')).handlers.whatIfProfiles();
    expect(!noPython.ok && noPython.error.message).toMatch(/Settings/);
  }, 300_000);
});

describe('kvscope whatif', () => {
  it('replays a run folder on a card and writes simulated runs that validate', () => {
    const out = join(app, 'gh200');
    const r = kvscope(['whatif', join(SAMPLES, 'h100-llama-3.1-8b-users4-host55e9.jsonl.gz'), '--profile', 'gh200-96', '--users', '2,4', '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^SIMULATED on NVIDIA GH200/);
    expect(r.stdout).toMatch(/calibration check, users 4 on its own card: E2E [-+]\d/);
    const doc = JSON.parse(readFileSync(join(out, 'whatif.json'), 'utf8')) as { points: Array<{ users: number }> };
    expect(doc.points.map((p) => p.users)).toEqual([2, 4]);
    const v = kvscope(['validate', join(out, 'users-4')]);
    expect(v.status, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain('every protocol v2 rule holds');
  }, 300_000);

  it('takes a portable .kvscope run file as the app exports it', () => {
    const file = join(app, 'run.kvscope');
    const e = kvscope(['export', join(SAMPLES, 'h100-llama-3.1-8b-users2-host55e9.jsonl.gz'), '--format', 'kvscope', '-o', file]);
    expect(e.status, e.stderr).toBe(0);
    const r = kvscope(['whatif', file, '--profile', 'h200', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { points: Array<{ users: number; measured_on_source: unknown }>; source: { gpu: string } };
    expect(doc.source.gpu).toBe('NVIDIA H100 80GB HBM3');
    expect(doc.points.map((p) => p.users)).toEqual([2]);
  }, 300_000);

  it('says what is wrong with the arguments', () => {
    const noProfile = kvscope(['whatif', join(SAMPLES, 'h100-llama-3.1-8b-users4-host55e9.jsonl.gz')]);
    expect(noProfile.status).toBe(2);
    expect(noProfile.stderr).toMatch(/--profile is required/);
    const badCard = kvscope(['whatif', join(SAMPLES, 'h100-llama-3.1-8b-users4-host55e9.jsonl.gz'), '--profile', 'tpu-v9']);
    expect(badCard.status).toBe(2);
    expect(badCard.stderr).toMatch(/built-in profiles are .*gh200-96/);
    const missing = kvscope(['whatif', join(app, 'no-such-run'), '--profile', 'h200']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/no such run/);
    const list = kvscope(['whatif', '--list-profiles']);
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(/gh200-96 +NVIDIA GH200/);
  }, 120_000);
});
