/**
 * Runs and sweeps through a real Slurm cluster on loopback (test/helpers/slurm.ts: Debian's
 * munged, slurmctld and slurmd from a throw-away configuration), reached through a real sshd the
 * way a login node is: `SetEnv SLURM_CONF` stands in for the login node's /etc/slurm. The agent
 * runs for real (tiny model, CPU) inside the jobs. Every wait is for an event (a line on stderr,
 * a pushed message, a queue state) under a generous overall limit.
 *
 * In order: the probe; a run queued behind a blocking job (the CLI says "pending: Resources"),
 * then run, streamed and validated; the same seen in the window (New run, in real Chromium); a
 * 3-point sweep as one job array of concurrency 1; the seed's users 2..16 as one array of 15; scancel mid-run; scontrol requeue mid-run;
 * hostile partition, #SBATCH and set-up lines.
 */
import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PushMessage } from '../../src/shared/api';
import { createCore } from '../../src/main/core/app-core';
import { HostService } from '../../src/main/core/hosts';
import { RunManager } from '../../src/main/core/runs';
import { RunStore } from '../../src/main/core/run-store';
import { startServer } from '../../src/main/core/serve';
import { withSlurm } from '../../src/main/core/slurm';
import { ARTIFACTS, RENDERER_DIR, browserSkipReason, launchBrowser } from '../helpers/browser';
import { buildCli, runCli } from '../helpers/cli';
import { slurmSkipReason, startSlurm, type TestSlurm } from '../helpers/slurm';
import { currentUser, keygen, sshdSkipReason, startSshd, type TestSshd } from '../helpers/sshd';

const skip = slurmSkipReason() ?? sshdSkipReason();
if (skip) console.warn(`Slurm tests skipped: ${skip}`);
const browserSkip = browserSkipReason();

const PY = '/usr/bin/python3';
const WORKLOAD_ARGS = ['--model', 'tiny', '--device', 'cpu', '--rounds', '2', '--context-tokens', '256', '--gpu-kv-bytes', '1000000', '--host-kv-bytes', '4000000', '--trace', 'off', '--sample-ms', '0'];
const SHORT = { model: 'tiny', device: 'cpu' as const, users: 2, rounds: 2, context_tokens: 256, gpu_kv_bytes: 1_000_000, host_kv_bytes: 4_000_000, trace: false, sample_ms: 0 };
/** Runs far longer than the tests wait (cancelled or requeued mid-run). */
const LONG = { ...SHORT, users: 4, rounds: 40, context_tokens: 512, gpu_kv_bytes: 6_000_000, host_kv_bytes: 60_000_000 };
/** A requeued run must finish its second attempt: long enough to requeue mid-run, short to finish. */
const REQUEUED = { ...SHORT, users: 3, rounds: 8 };

let CLI = '';
const kvscope = (args: string[], env: Record<string, string>, onStderr?: (text: string) => void) => runCli(CLI, args, env, onStderr);

/** Polls `fn` until it holds (an event seen), failing with `what` after `ms`. */
async function until(what: string, ms: number, fn: () => boolean | Promise<boolean>, diag?: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${diag ? `\n${diag()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const lines = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; status?: string; t: number; clock?: { unix_ns_at_t0: number } });

describe.skipIf(skip !== null)(`runs and sweeps through a real Slurm cluster${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let slurm: TestSlurm;
  let sshd: TestSshd;
  let dir: string;
  let env: Record<string, string>;
  let conn: string[];
  let shared: string;
  let store: RunStore;
  let runs: RunManager;
  const pushes: PushMessage[] = [];

  /** What the run's pushes said, and the daemons' logs: a failing wait's message. */
  const said = (runId: string) =>
    pushes
      .filter((m) => (m.kind === 'progress' || m.kind === 'run-status') && m.runId === runId)
      .slice(-15)
      .map((m) => JSON.stringify(m))
      .join('\n') + `\n${slurm.logs()}`;
  const blockNode = () => slurm.cmd(['sbatch', '--parsable', '-c', '2', '-J', 'blocker', '-o', '/dev/null', '--wrap', 'sleep 600']).trim().split(';')[0]!;
  const psLines = (s: string) => execSync('ps -eo pid,args', { encoding: 'utf8' }).split('\n').filter((l) => l.includes(s) && !l.includes('ps -eo'));

  beforeAll(async () => {
    CLI = await buildCli('kvscope-test-cli-slurm');
    slurm = await startSlurm();
    dir = mkdtempSync(join(tmpdir(), 'kvscope-slurmtest-'));
    const key = keygen(join(dir, 'id'));
    sshd = await startSshd({ authorizedKeys: [key.pub], name: 'slurm', extraConfig: [`SetEnv SLURM_CONF=${slurm.conf}`] });
    writeFileSync(join(dir, 'ssh_config'), `Host cluster\n  HostName 127.0.0.1\n  Port ${sshd.port}\n  User ${currentUser()}\n  IdentityFile ${key.priv}\n  IdentityAgent none\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n`);
    shared = join(dir, 'shared fs');
    env = { KVSCOPE_DATA_DIR: join(dir, 'data') };
    conn = ['--ssh-config', join(dir, 'ssh_config'), '--known-hosts', join(dir, 'known_hosts'), '--python', PY];
    store = new RunStore(join(dir, 'runs'), null);
    await store.ensure();
    const hosts = new HostService({
      dataDir: join(dir, 'data'),
      agentSourceDir: resolve('resources/agent'),
      sshConfigFile: join(dir, 'ssh_config'),
      knownHostsFile: join(dir, 'known_hosts'),
      python: PY,
      prompts: { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null },
    });
    runs = new RunManager(withSlurm({ store, hosts, push: (m) => pushes.push(m) }));
  }, 120_000);

  afterAll(async () => {
    await runs?.detachAll();
    await sshd?.stop();
    await slurm?.stop();
  }, 60_000);

  it('probe: Slurm version, the partition, and whether the shared folder is writable', async () => {
    const r = await kvscope(['hosts', '--probe', '--host', 'cluster', '--slurm', '--slurm-shared-dir', shared, ...conn], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Slurm: slurm(-wlm)? \d+\.\d+/);
    expect(r.stdout).toMatch(new RegExp(`partition ${slurm.partition} \\(default\\): up, 1 node\\(s\\), time limit infinite, GPU types h100, a100`));
    expect(r.stdout).toContain(`shared folder ${shared}: writable`);
    // No accounting here: said, not invented.
    expect(r.stdout).toMatch(/default account -/);
  });

  it('a run queued behind a blocking job: the CLI says "pending: Resources", then it runs, streams and validates', async () => {
    const blocker = blockNode();
    await until('the blocking job to run', 30_000, () => slurm.state(blocker) === 'RUNNING');
    const out = join(dir, 'queued-run');
    let pendingSeen = false;
    let cliStderr = '';
    const cli = kvscope(['run', '--host', 'cluster', '--slurm-partition', slurm.partition, '--slurm-shared-dir', shared, '--slurm-poll', '0.5', '--users', '2', '--out', out, ...conn, ...WORKLOAD_ARGS], env, (text) => {
      cliStderr = text;
      pendingSeen ||= /queue: \d+ pending: Resources/.test(text);
    });
    try {
      await until('the CLI to say pending: Resources', 60_000, () => pendingSeen, () => cliStderr);
    } finally {
      slurm.cmd(['scancel', blocker]);
    }
    const r = await cli;
    expect(r.code, r.stderr + slurm.logs()).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`queue: \\d+ running on ${slurm.node}`));
    expect(r.stdout.trim().split('\n').pop()).toBe(out);
    const meta = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as { status: string; slurm: { job_id: string; run_dir: string } };
    expect(meta.status).toBe('ok');
    // Streamed: the local log is a byte-for-byte copy of the one the job wrote on the shared folder.
    expect(readFileSync(join(out, 'events.jsonl')).equals(readFileSync(join(meta.slurm.run_dir, 'attempt-0', 'events.jsonl')))).toBe(true);
    const v = await kvscope(['validate', out], env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    // Where it ran: the node (and GPUs: none here) recorded in the run folder.
    const record = JSON.parse(readFileSync(join(out, 'slurm.json'), 'utf8')) as { job_id: string; states: Array<{ state: string; reason: string | null }>; attempts: Record<string, { node: string; gpus: unknown[]; job_id: string }> };
    expect(record.job_id).toBe(meta.slurm.job_id);
    expect(record.attempts['0']).toMatchObject({ node: slurm.node, gpus: [], job_id: meta.slurm.job_id });
    expect(record.states.some((s) => s.state === 'PENDING' && s.reason === 'Resources')).toBe(true);
  }, 180_000);

  it.skipIf(browserSkip !== null)(`the window shows the queue: a run from New run on the cluster host says "pending: Resources", then runs${browserSkip ? ` (skipped: ${browserSkip})` : ''}`, async () => {
    // The app's core with the window in real Chromium; the cluster saved with its ssh alias.
    process.env.HOME = join(dir, 'home');
    mkdirSync(join(dir, 'home', '.ssh'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'home', '.ssh', 'config'), readFileSync(join(dir, 'ssh_config')), { mode: 0o600 });
    writeFileSync(join(dir, 'home', '.ssh', 'known_hosts'), readFileSync(join(dir, 'known_hosts')));
    const core = await createCore({ runsDir: join(dir, 'window-data', 'runs'), samplesDir: null, shell: 'browser', dataDir: join(dir, 'window-data') });
    const server = await startServer({ core, staticDir: RENDERER_DIR });
    const browser = await launchBrowser();
    const blocker = blockNode();
    try {
      const page = await browser.newPage();
      await page.goto(`${server.url}#/hosts`);
      // Hosts: the ssh alias becomes a cluster (a bad partition is refused, naming the field).
      await page.click('tr[data-host=cluster] [data-action=cluster]');
      await page.fill('tr[data-host=cluster] [data-field=partition]', 'debug;id');
      await page.click('tr[data-host=cluster] [data-action=save-cluster]');
      expect(await page.textContent('tr[data-host=cluster] .cluster-settings .error')).toMatch(/^partition: .* is not a partition name/);
      for (const [f, v] of [['partition', slurm.partition], ['sharedDir', shared], ['pollSeconds', '0.5']]) await page.fill(`tr[data-host=cluster] [data-field=${f}]`, v);
      await page.click('tr[data-host=cluster] [data-action=save-cluster]');
      await page.waitForSelector('tr[data-host=cluster] [data-cluster=yes]');
      expect(await page.textContent('tr[data-host=cluster] .cluster-settings')).toContain(`Slurm cluster: partition ${slurm.partition}`);
      // Its probe says what the scheduler offers.
      await page.click('tr[data-host=cluster] [data-action=probe]');
      await page.waitForSelector('tr[data-host=cluster] [data-testid=slurm-probe], tr[data-host=cluster] .error', { timeout: 60_000 });
      expect(await page.textContent('tr[data-host=cluster] [data-testid=slurm-probe]')).toMatch(new RegExp(`${slurm.partition} \\(default\\): up, 1 node[\\s\\S]*Shared folder ${shared}: writable`));
      await until('the blocking job to run', 30_000, () => slurm.state(blocker) === 'RUNNING');
      await page.click('tr[data-host=cluster] a:has-text("New run here")');
      await page.waitForSelector('#f-users');
      for (const [sel, v] of [['#f-model', 'tiny'], ['#f-users', '2'], ['#f-rounds', '2'], ['#f-context_tokens', '256'], ['#f-gpu_pool', '1000000'], ['#f-host_pool', '4000000'], ['#f-python', PY]] as const) await page.fill(sel, v);
      await page.click('button[type=submit]');
      await page.waitForSelector('.progress-row [data-queue*="pending: Resources"]', { timeout: 60_000 });
      await page.locator('.run-progress').screenshot({ path: join(ARTIFACTS, 'window-slurm-pending.png') });
      slurm.cmd(['scancel', blocker]);
      await page.waitForSelector(`.progress-row [data-queue*="running on ${slurm.node}"]`, { timeout: 60_000 });
      await until('the window run to end', 90_000, async () => {
        const l = await core.handlers.listRuns();
        return l.ok && l.value.some((x) => x.host === 'cluster' && x.status !== 'running');
      });
      const l = await core.handlers.listRuns();
      expect(l.ok && l.value.filter((x) => x.host === 'cluster').map((x) => x.status)).toEqual(['ok']);
    } finally {
      slurm.cmd(['scancel', blocker]);
      await browser.close();
      await server.close();
    }
  }, 180_000);

  it('a 3-point sweep is one job array of concurrency 1: its elements run in order and each validates', async () => {
    const r = await kvscope(['sweep', '--host', 'cluster', '--users', '1..3', '--slurm-array-limit', '1', '--slurm-shared-dir', shared, '--slurm-poll', '0.5', '--runs-dir', join(dir, 'sweep-runs'), ...conn, ...WORKLOAD_ARGS], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^cluster\s+\d/.test(l));
    expect(rows).toHaveLength(3);
    const jobs = rows.map((l) => l.trim().split(/\s+/).pop()!);
    const arrayId = jobs[0]!.split('_')[0]!;
    expect(jobs).toEqual([`${arrayId}_0`, `${arrayId}_1`, `${arrayId}_2`]);
    const spans: Array<[number, number]> = [];
    for (const l of rows) {
      expect(l).toMatch(/^cluster\s+\d\s+ok\s/);
      const runDir = join(dir, 'sweep-runs', l.trim().split(/\s+/).at(-2)!);
      const v = await kvscope(['validate', runDir], env);
      expect(v.code, v.stdout).toBe(0);
      const ev = lines(join(runDir, 'events.jsonl'));
      const t0 = ev[0]!.clock!.unix_ns_at_t0;
      spans.push([t0 + ev[0]!.t, t0 + ev.at(-1)!.t]);
    }
    // One at a time, in index order: each element starts after the one before it ended.
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0]).toBeGreaterThan(spans[i - 1]![1]);
  }, 240_000);

  it('the seed\'s sweep, users 2..16, is one job array of 15 elements, each ok and valid', async () => {
    const r = await kvscope(['sweep', '--host', 'cluster', '--users', '2..16', '--slurm-array-limit', '4', '--slurm-shared-dir', shared, '--slurm-poll', '0.5', '--runs-dir', join(dir, 'seed-sweep-runs'), ...conn, ...WORKLOAD_ARGS], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^cluster\s+\d/.test(l));
    expect(rows.map((l) => Number(l.trim().split(/\s+/)[1]))).toEqual(Array.from({ length: 15 }, (_, i) => i + 2));
    const jobs = rows.map((l) => l.trim().split(/\s+/).pop()!);
    const arrayId = jobs[0]!.split('_')[0]!;
    expect(jobs).toEqual(jobs.map((_, i) => `${arrayId}_${i}`));
    for (const l of rows) {
      expect(l).toMatch(/^cluster\s+\d+\s+ok\s/);
      const v = await kvscope(['validate', join(dir, 'seed-sweep-runs', l.trim().split(/\s+/).at(-2)!)], env);
      expect(v.code, v.stdout).toBe(0);
    }
  }, 600_000);

  it('a sweep over two card types is one job array per type, each element on a GPU of its type', async () => {
    const r = await kvscope(['sweep', '--host', 'cluster', '--users', '2', '--slurm-gpus', '1', '--slurm-gpu-type', 'h100', '--slurm-gpu-type', 'a100', '--slurm-shared-dir', shared, '--slurm-poll', '0.5', '--runs-dir', join(dir, 'typed-runs'), ...conn, ...WORKLOAD_ARGS], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^cluster\[/.test(l));
    expect(rows.map((l) => l.split(/\s+/).slice(0, 3).join(' '))).toEqual(['cluster[h100] 2 ok', 'cluster[a100] 2 ok']);
    const arrays = new Set<string>();
    for (const l of rows) {
      const type = /^cluster\[(\w+)\]/.exec(l)![1]!;
      const runDir = join(dir, 'typed-runs', l.trim().split(/\s+/).at(-2)!);
      const job = l.trim().split(/\s+/).at(-1)!;
      arrays.add(job.split('_')[0]!);
      const record = JSON.parse(readFileSync(join(runDir, 'slurm.json'), 'utf8')) as { attempts: Record<string, { job_gpus: string; cuda_visible_devices: string }> };
      // Slurm gave each element the GPU of its card type.
      expect(record.attempts['0']).toMatchObject({ job_gpus: slurm.gpuTypes[type], cuda_visible_devices: slurm.gpuTypes[type] });
      const meta = JSON.parse(readFileSync(join(runDir, 'meta.json'), 'utf8')) as { slurm: { options: { gpuTypes: string[]; gpus: number } } };
      expect(meta.slurm.options).toMatchObject({ gpuTypes: [type], gpus: 1 });
    }
    expect(arrays.size).toBe(2);
  }, 180_000);

  it('scancel mid-run (KV Scope\'s cancel, after the app stopped following) leaves no process and a cancelled run', async () => {
    const { runId } = await runs.start({ host: 'cluster', workload: LONG, slurm: { sharedDir: shared, pollSeconds: 0.5 } });
    await until('a round of the run', 90_000, () => pushes.some((m) => m.kind === 'run-events' && m.runId === runId && m.events.some((e) => e.type === 'round' && e.round >= 1)), () => said(runId));
    const meta = await store.readMeta(runId);
    const job = (meta.slurm as { job_id: string }).job_id;
    const runDir = (meta.slurm as { run_dir: string }).run_dir;
    expect(psLines(runDir).length).toBeGreaterThan(0);
    // The app quits while the job runs: following stops, the job goes on, the run is resumable.
    await runs.detachAll();
    expect((await store.readMeta(runId)).status).toBe('incomplete');
    expect(slurm.state(job)).toBe('RUNNING');
    // Cancel from a later start of the app: scancel, then the run is resumed to collect its end.
    await runs.cancel(runId);
    const r = await runs.wait(runId);
    expect(r.status).toBe('cancelled');
    expect((await store.readMeta(runId)).status).toBe('cancelled');
    await until('the job to be CANCELLED', 30_000, () => slurm.state(job) === 'CANCELLED', () => slurm.state(job));
    // The agent wrote its own end (TERM → run.end "cancelled"); nothing of the job is left.
    expect(lines(join(store.runDir(runId), 'events.jsonl')).at(-1)).toMatchObject({ type: 'run.end', status: 'cancelled' });
    // Resumed from the bytes it had: a byte-for-byte copy of the job's log.
    expect(readFileSync(join(store.runDir(runId), 'events.jsonl')).equals(readFileSync(join(runDir, 'attempt-0', 'events.jsonl')))).toBe(true);
    await until('the job\'s processes to be gone', 30_000, () => psLines(runDir).length === 0);
  }, 180_000);

  it('scontrol requeue mid-run: the run starts over and ends ok with a log byte-identical to the job\'s last attempt', async () => {
    const { runId } = await runs.start({ host: 'cluster', workload: REQUEUED, slurm: { sharedDir: shared, pollSeconds: 0.5 } });
    await until('a round of the run', 90_000, () => pushes.some((m) => m.kind === 'run-events' && m.runId === runId && m.events.some((e) => e.type === 'round' && e.round >= 1)), () => said(runId));
    const meta = await store.readMeta(runId);
    const s = meta.slurm as { job_id: string; run_dir: string };
    slurm.cmd(['scontrol', 'requeue', s.job_id]);
    const r = await runs.wait(runId);
    expect(r.status, JSON.stringify(r.error)).toBe('ok');
    expect(pushes.some((m) => m.kind === 'run-status' && m.runId === runId && m.restarted === true)).toBe(true);
    const local = readFileSync(join(store.runDir(runId), 'events.jsonl'));
    expect(local.equals(readFileSync(join(s.run_dir, 'attempt-1', 'events.jsonl')))).toBe(true);
    expect(lines(join(store.runDir(runId), 'events.jsonl')).at(-1)).toMatchObject({ type: 'run.end', status: 'ok' });
    // The first attempt's log is kept beside it, as far as it got.
    const first = lines(join(store.runDir(runId), 'attempt-0.events.jsonl'));
    expect(first[0]!.type).toBe('run.start');
    expect(readdirSync(s.run_dir).filter((n) => n.startsWith('attempt-')).sort()).toEqual(['attempt-0', 'attempt-1']);
    const after = await store.readMeta(runId);
    expect(after).toMatchObject({ status: 'ok', slurm: { attempt: 1 } });
  }, 240_000);

  it('a hostile partition, #SBATCH line or set-up line never reaches a shell unquoted (canary files)', async () => {
    const canary = join(dir, 'CANARY');
    const before = slurm.cmd(['squeue', '-h', '-t', 'all', '-o', '%i']).split('\n').filter(Boolean).length;
    for (const slurmOpts of [
      { partition: `debug;touch ${canary}` },
      { partition: `debug$(touch ${canary})` },
      { partition: `debug\ntouch ${canary}` },
      { account: `x\`touch ${canary}\`` },
      { gpuTypes: [`h100;touch ${canary}`] },
      { timeLimit: `10;touch ${canary}` },
      { sbatch: [`--comment=x\ntouch ${canary}`] },
      { sbatch: [`touch ${canary}`] },
      { sbatch: ['--wrap=touch /tmp/x'] },
      { setup: `true\ntouch ${canary}` },
    ]) {
      await expect(runs.start({ host: 'cluster', workload: SHORT, slurm: { sharedDir: shared, ...slurmOpts } }), JSON.stringify(slurmOpts)).rejects.toMatchObject({ code: 'invalid_argument' });
    }
    const cli = await kvscope(['run', '--host', 'cluster', '--slurm-partition', `debug';touch ${canary};'`, ...conn, ...WORKLOAD_ARGS], env);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/partition: .* is not a partition name/);
    // Refused before anything was submitted.
    expect(slurm.cmd(['squeue', '-h', '-t', 'all', '-o', '%i']).split('\n').filter(Boolean).length).toBe(before);
    // Text that passes the checks but means something to a shell: an #SBATCH comment only sbatch
    // reads, and a set-up line evaluated exactly once, in the job (the single-quoted $(…) stays
    // text there; evaluated twice or unquoted anywhere on the way, it would make the canary).
    const said = join(dir, 'said.txt');
    const ok = await runs.start({ host: 'cluster', workload: SHORT, slurm: { sharedDir: shared, pollSeconds: 0.5, sbatch: [`--comment="$(touch ${canary})"`], setup: `printf '%s\\n' '$(touch ${canary})' "it's" > ${said}` } });
    expect((await runs.wait(ok.runId)).status).toBe('ok');
    expect(readFileSync(said, 'utf8')).toBe(`$(touch ${canary})\nit's\n`);
    const job = ((await store.readMeta(ok.runId)).slurm as { job_id: string }).job_id;
    expect(slurm.cmd(['scontrol', 'show', 'job', job])).toContain(`Comment=$(touch ${canary})`);
    // A set-up line that breaks out of the quotes it would need to: a failed run saying why.
    const broken = await runs.start({ host: 'cluster', workload: SHORT, slurm: { sharedDir: shared, pollSeconds: 0.5, setup: `'; touch ${canary}; '` } });
    const b = await runs.wait(broken.runId);
    expect(b.status).toBe('error');
    expect(b.error?.message).toMatch(/set-up line failed with status 127; the agent was not started/);
    expect(existsSync(canary)).toBe(false);
  }, 240_000);
});
