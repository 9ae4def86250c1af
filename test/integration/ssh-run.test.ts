/**
 * Runs over real SSH on loopback with the real agent (tiny preset, CPU): deploy (reuse, two at
 * once), a detached run tailed to a byte-identical local copy, a link cut several times mid-run,
 * cancel leaving no process, a deleted run folder and a full disk ending the run with a clear
 * error while keeping what was received.
 */
import { execFileSync, execSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PushMessage } from '../../src/shared/api';
import { decodeAll } from '../../src/shared/events-reader';
import { bundleAgent, deployAgent } from '../../src/main/core/deploy';
import { HostService } from '../../src/main/core/hosts';
import { RunManager, markOrphanedRuns } from '../../src/main/core/runs';
import { RunStore } from '../../src/main/core/run-store';
import { SshExec } from '../../src/main/core/ssh/host-exec';
import { currentUser, keygen, sshdSkipReason, startProxy, startSshd, type CuttableProxy, type TestSshd } from '../helpers/sshd';

const skip = sshdSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`SSH run tests skipped: ${skip}`);

const PY = '/usr/bin/python3';
const AGENT = resolve('resources/agent');
/** A tiny CPU workload of a few seconds (enough rounds to cut the link mid-run). */
const LONG = { model: 'tiny', device: 'cpu' as const, users: 4, rounds: 14, context_tokens: 512, gpu_kv_bytes: 2_500_000, host_kv_bytes: 8_000_000, trace: false, sample_ms: 0 };
const SHORT = { ...LONG, users: 2, rounds: 3 };
/** Runs far longer than any test waits (cancelled or cut short before the end). */
const ENDLESS = { ...LONG, rounds: 60, gpu_kv_bytes: 6_000_000, host_kv_bytes: 60_000_000 };

function processesMentioning(s: string): string[] {
  const out = execSync('ps -eo pid,args', { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(s) && !l.includes('ps -eo'));
}

async function until(fn: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

d('runs over real SSH', () => {
  let dir: string;
  let sshd: TestSshd;
  let proxy: CuttableProxy;
  let remoteRoot: string;
  let store: RunStore;
  let hosts: HostService;
  let runs: RunManager;
  const pushes: PushMessage[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kvscope-sshrun-'));
    const key = keygen(join(dir, 'id'));
    sshd = await startSshd({ authorizedKeys: [key.pub], name: 'run' });
    proxy = await startProxy(sshd.port);
    remoteRoot = join(dir, 'remote-root');
    writeFileSync(
      join(dir, 'ssh_config'),
      [
        `Host gpu`,
        `  HostName 127.0.0.1`,
        `  Port ${sshd.port}`,
        `  User ${currentUser()}`,
        `  IdentityFile ${key.priv}`,
        `  IdentityAgent none`,
        `Host frozen`,
        `  HostName 127.0.0.1`,
        `  Port ${proxy.port}`,
        `  User ${currentUser()}`,
        `  IdentityFile ${key.priv}`,
        `  IdentityAgent none`,
        // Seconds in ssh_config: a silent link is declared dead after ~2 s (1 s × 2 unanswered).
        `  ServerAliveInterval 1`,
        `  ServerAliveCountMax 2`,
        `Host flaky`,
        `  HostName 127.0.0.1`,
        `  Port ${proxy.port}`,
        `  User ${currentUser()}`,
        `  IdentityFile ${key.priv}`,
        `  IdentityAgent none`,
      ].join('\n') + '\n',
      { mode: 0o600 },
    );
    writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n[127.0.0.1]:${proxy.port} ${sshd.hostKeyLine}\n`);
    store = new RunStore(join(dir, 'runs'), null);
    await store.ensure();
    hosts = new HostService({
      dataDir: dir,
      agentSourceDir: AGENT,
      sshConfigFile: join(dir, 'ssh_config'),
      knownHostsFile: join(dir, 'known_hosts'),
      remoteRoot,
      python: PY,
      prompts: { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null },
    });
    runs = new RunManager({ store, hosts, push: (m) => pushes.push(m), cancelGraceMs: 3000 });
  });
  afterAll(async () => {
    await proxy?.close();
    await sshd?.stop();
  });

  function remoteBytes(runId: string): Buffer {
    return readFileSync(join(remoteRoot, 'runs', runId, 'events.jsonl'));
  }
  function localBytes(runId: string): Buffer {
    return readFileSync(join(store.runsDir, runId, 'events.jsonl'));
  }

  it('deploys once, reuses it, and two deploys at once leave one complete agent folder', async () => {
    const bundle = await bundleAgent(AGENT);
    const sessions = await Promise.all([hosts.connect('gpu'), hosts.connect('gpu'), hosts.connect('gpu')]);
    const ss = sessions.map((s) => (s as SshExec).session);
    const root = join(dir, 'deploy-race');
    const results = await Promise.all(ss.map((s) => deployAgent(s, bundle, { root })));
    const again = await deployAgent(ss[0]!, bundle, { root });
    for (const s of sessions) s.close();
    expect(again.reused).toBe(true);
    expect(new Set(results.map((r) => r.agentDir)).size).toBe(1);
    // One agent folder, no temp folders left behind, every file byte-identical.
    expect(readdirSync(root)).toEqual([`agent-${bundle.hash}`]);
    for (const f of bundle.files) expect(readFileSync(join(root, `agent-${bundle.hash}`, f.rel)).equals(readFileSync(f.abs))).toBe(true);
  });

  it('a detached run completes "ok" and the local events.jsonl is byte-identical to the remote one', async () => {
    const { runId, remoteDir } = await runs.start({ host: 'gpu', workload: SHORT });
    const r = await runs.wait(runId);
    expect(r).toMatchObject({ status: 'ok', error: null });
    expect(remoteDir).toBe(join(remoteRoot, 'runs', runId));
    expect(localBytes(runId).equals(remoteBytes(runId))).toBe(true);
    const meta = await store.readMeta(runId);
    expect(meta).toMatchObject({ status: 'ok', remote_dir: remoteDir, bytes_received: localBytes(runId).length });
    const { events, bad } = decodeAll(localBytes(runId));
    expect(bad).toEqual([]);
    expect(meta.last_seq).toBe(events[events.length - 1]!.seq);
    // Events were pushed in batches, each seq once.
    const pushed = pushes.filter((m): m is Extract<PushMessage, { kind: 'run-events' }> => m.kind === 'run-events' && m.runId === runId).flatMap((m) => m.events.map((e) => e.seq));
    expect(pushed).toEqual(events.map((e) => e.seq));
    expect(pushes.some((m) => m.kind === 'run-status' && m.runId === runId && m.status === 'ok')).toBe(true);
  });

  it('survives the connection being cut several times mid-run: contiguous, byte-identical log', async () => {
    const { runId } = await runs.start({ host: 'flaky', workload: LONG });
    const done = runs.wait(runId);
    let cuts = 0;
    let finished = false;
    void done.then(() => (finished = true));
    // Cut only while the run is still writing, so each cut lands mid-run.
    for (let i = 0; i < 4 && !finished; i++) {
      await new Promise((r) => setTimeout(r, 500));
      if (finished) break;
      if (proxy.cut() > 0) cuts++;
    }
    const r = await done;
    expect(cuts).toBeGreaterThanOrEqual(2);
    expect(r.reconnects).toBeGreaterThanOrEqual(cuts - 1);
    expect(r.status).toBe('ok');
    const local = localBytes(runId);
    expect(local.equals(remoteBytes(runId))).toBe(true);
    const { events, bad } = decodeAll(local);
    expect(bad).toEqual([]);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    // The remote tail programs of the dropped sessions are gone too (they watch their parent).
    await until(() => processesMentioning(runId).length === 0, 5000, 'no process of the run left');
  });

  it('a link that goes silent (no FIN, no RST) is detected by ServerAliveInterval and the tail resumes', async () => {
    const { runId } = await runs.start({ host: 'frozen', workload: LONG });
    await until(() => existsSync(join(store.runsDir, runId, 'events.jsonl')) && readFileSync(join(store.runsDir, runId, 'events.jsonl')).length > 2000, 30_000, 'some events');
    const from = pushes.length;
    expect(proxy.freeze()).toBeGreaterThan(0);
    const r = await runs.wait(runId);
    expect(r.status).toBe('ok');
    expect(r.reconnects).toBeGreaterThanOrEqual(1);
    // Keepalive (ServerAliveInterval 1, ServerAliveCountMax 2) is what noticed it: the reconnect
    // says so (ssh2's "Keepalive timeout"), not a TCP timeout or the far end closing.
    const reconnects = pushes.slice(from).filter((m) => m.kind === 'progress' && m.runId === runId && m.stage === 'reconnect').map((m) => (m as { message: string }).message);
    expect(reconnects[0]).toMatch(/^connection lost \(Keepalive timeout\); reconnecting/);
    expect(localBytes(runId).equals(remoteBytes(runId))).toBe(true);
  });

  it('a reconnect checks the host key again: a key that changed mid-run stops following at once, resumable', async () => {
    const kh = join(dir, 'known_hosts');
    const good = readFileSync(kh, 'utf8');
    const { runId } = await runs.start({ host: 'flaky', workload: LONG });
    await until(() => existsSync(join(store.runsDir, runId, 'events.jsonl')) && readFileSync(join(store.runsDir, runId, 'events.jsonl')).length > 2000, 30_000, 'some events');
    const impostor = keygen(join(dir, `impostor-${Date.now()}`)).pub.split(' ').slice(0, 2).join(' ');
    writeFileSync(kh, good.replace(`[127.0.0.1]:${proxy.port} ${sshd.hostKeyLine}`, `[127.0.0.1]:${proxy.port} ${impostor}`));
    proxy.cut();
    const r = await runs.wait(runId);
    writeFileSync(kh, good);
    expect(r.status).toBe('incomplete');
    expect(r.error?.code).toBe('host_key_changed');
    // At once: the one reconnect after the cut met the changed key and stopped, no retries.
    expect(r.reconnects).toBe(1);
    expect((await store.readMeta(runId)).status).toBe('incomplete');
    await runs.resume(runId);
    expect((await runs.wait(runId)).status).toBe('ok');
    expect(localBytes(runId).equals(remoteBytes(runId))).toBe(true);
  });

  it('cancel: TERM to the process group, the run ends "cancelled" and no process of it is left', async () => {
    const { runId, remoteDir } = await runs.start({ host: 'gpu', workload: ENDLESS });
    await until(() => existsSync(join(remoteDir, 'events.jsonl')) && readFileSync(join(remoteDir, 'events.jsonl'), 'utf8').includes('"round"'), 30_000, 'the first round');
    expect(processesMentioning(runId).length).toBeGreaterThan(0);
    await runs.cancel(runId);
    const r = await runs.wait(runId);
    expect(r.status).toBe('cancelled');
    expect(processesMentioning(runId)).toEqual([]);
    const { events } = decodeAll(localBytes(runId));
    expect(events[events.length - 1]).toMatchObject({ type: 'run.end', status: 'cancelled' });
    expect(localBytes(runId).equals(remoteBytes(runId))).toBe(true);
  });

  it('a run folder deleted on the host ends the run with a clear error, keeps the bytes, and stops the agent', async () => {
    const { runId, remoteDir } = await runs.start({ host: 'gpu', workload: ENDLESS });
    await until(() => existsSync(join(remoteDir, 'events.jsonl')) && readFileSync(join(remoteDir, 'events.jsonl'), 'utf8').includes('"round"'), 30_000, 'the first round');
    rmSync(remoteDir, { recursive: true, force: true });
    const r = await runs.wait(runId);
    expect(r.status).toBe('error');
    expect(r.error?.code).toBe('remote_dir_deleted');
    expect(r.error?.message).toMatch(/was deleted on the host/);
    const local = localBytes(runId);
    expect(local.length).toBeGreaterThan(0);
    expect(decodeAll(local).bad).toEqual([]);
    const meta = await store.readMeta(runId);
    expect(meta).toMatchObject({ status: 'error', bytes_received: local.length });
    await until(() => processesMentioning(runId).length === 0, 10_000, 'the agent to stop');
  });

  it('a crash of the app leaves a partial run marked incomplete that resumes to the full log', async () => {
    const { runId } = await runs.start({ host: 'gpu', workload: LONG });
    await until(() => existsSync(join(store.runsDir, runId, 'events.jsonl')) && readFileSync(join(store.runsDir, runId, 'events.jsonl')).length > 2000, 30_000, 'some events');
    // "Crash": stop following without any cleanup, and pretend the tailing process died.
    await runs.detachAll();
    const meta = await store.readMeta(runId);
    await store.writeMeta({ ...meta, status: 'running', tail_pid: 999_999_999 });
    // Also a torn last line, as a crash mid-write could leave.
    writeFileSync(join(store.runsDir, runId, 'events.jsonl'), '{"seq":99999,"t":1,"ty', { flag: 'a' });
    expect(await markOrphanedRuns(store)).toContain(runId);
    expect((await store.list()).find((l) => l.id === runId)?.status).toBe('incomplete');
    const loaded = await store.load(runId);
    expect(loaded.events.length).toBeGreaterThan(0);
    const fresh = new RunManager({ store, hosts });
    await fresh.resume(runId);
    const r = await fresh.wait(runId);
    expect(r.status).toBe('ok');
    expect(localBytes(runId).equals(remoteBytes(runId))).toBe(true);
  });
  // Many real runs: it waits for each run's end, with only a guard against a hang (never a
  // wall-clock claim: a loaded machine makes it slow, not wrong).
  it('hostile strings in every field that reaches the host execute nothing', { timeout: 600_000 }, async () => {
    const canary = join(dir, 'canary');
    const evil = (tag: string) => [
      `$(touch ${canary}-${tag})`,
      `\`touch ${canary}-${tag}\``,
      `; touch ${canary}-${tag} #`,
      `' ; touch ${canary}-${tag} ; '`,
      `" ; touch ${canary}-${tag} ; "`,
      `x\ntouch ${canary}-${tag}\n`,
      `--out=/tmp/kvscope-evil-${tag}`,
      `-- ; touch ${canary}-${tag}`,
    ];
    // Model and name strings reach the agent as values: it refuses the model, nothing else runs.
    // All at once: each run's end is the event waited for.
    const ended = await Promise.all(evil('model').map(async (model, i) => runs.wait((await runs.start({ host: 'gpu', workload: { ...SHORT, model }, name: evil('name')[i] })).runId)));
    expect(ended.map((r) => r.status)).toEqual(evil('model').map(() => 'error'));
    // A python that is not a Python is refused before anything connects (python-path.ts).
    for (const python of evil('python')) {
      await expect(runs.start({ host: 'gpu', python, workload: SHORT })).rejects.toMatchObject({ code: 'invalid_argument', message: expect.stringContaining('must be a Python interpreter') });
    }
    // Paths: a remote root full of shell syntax is just a folder name.
    const evilRoot = join(dir, `root $(touch ${canary}-root) \`touch ${canary}-root\` ; touch ${canary}-root '"`);
    const evilHosts = new HostService({ ...hosts.opts, remoteRoot: evilRoot });
    const evilRuns = new RunManager({ store, hosts: evilHosts });
    const { runId, remoteDir } = await evilRuns.start({ host: 'gpu', workload: SHORT });
    expect((await evilRuns.wait(runId)).status).toBe('ok');
    expect(remoteDir.startsWith(evilRoot)).toBe(true);
    expect(readFileSync(join(remoteDir, 'events.jsonl')).equals(localBytes(runId))).toBe(true);
    // A run id (the CLI's --out name) that is not a plain name is refused before anything runs.
    await expect(runs.start({ host: 'gpu', workload: SHORT }, { runId: `x;touch ${canary}-id` })).rejects.toMatchObject({ code: 'invalid_argument' });
    expect(readdirSync(dir).filter((n) => n.startsWith('canary'))).toEqual([]);
    expect(existsSync('/tmp/kvscope-evil-model')).toBe(false);
  });

  it('a remote disk that fills ends the run with a clear error and keeps what was received', async () => {
    const root = join(dir, 'small-disk-root');
    const runsMount = join(root, 'runs');
    mkdirSync(runsMount, { recursive: true });
    const session = (await hosts.connect('gpu')) as SshExec;
    await deployAgent(session.session, await bundleAgent(AGENT), { root });
    session.close();
    // A 96 KiB tmpfs as the host's run area (we are root here); else RLIMIT_FSIZE through a
    // python wrapper (`ulimit -f`), which kills the agent with SIGXFSZ instead of ENOSPC.
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=96k', 'tmpfs', runsMount]).status === 0;
    let python = PY;
    if (!mounted) {
      python = join(dir, 'python-fsize-limited');
      writeFileSync(python, `#!/bin/sh\nulimit -f 96\nexec ${PY} "$@"\n`, { mode: 0o755 });
    }
    try {
      const small = new RunManager({ store, hosts: new HostService({ ...hosts.opts, remoteRoot: root }) });
      const { runId } = await small.start({ host: 'gpu', python, workload: ENDLESS });
      const r = await small.wait(runId);
      expect(r.status).toBe('error');
      if (mounted) expect(r.error?.message).toMatch(/disk is full|No space left/);
      const local = localBytes(runId);
      expect(local.length).toBeGreaterThan(1000);
      expect(decodeAll(local).events.length).toBeGreaterThan(5);
      const meta = await store.readMeta(runId);
      expect(meta).toMatchObject({ status: 'error', bytes_received: local.length });
      expect(processesMentioning(runId)).toEqual([]);
    } finally {
      if (mounted) execFileSync('umount', ['-l', runsMount]);
    }
  });
  it('a full local disk stops following with a clear error; the stored part is whole lines of the remote log; resume works after space is freed', async (ctx) => {
    const localRuns = join(dir, 'small-local-runs');
    mkdirSync(localRuns, { recursive: true });
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', localRuns]).status !== 0) {
      ctx.skip('cannot mount a tmpfs here (needs root): the local full-disk case is not exercised; the host-side full-disk test still runs');
      return;
    }
    try {
      const smallStore = new RunStore(localRuns, null);
      const m = new RunManager({ store: smallStore, hosts });
      const { runId, remoteDir } = await m.start({ host: 'gpu', workload: ENDLESS });
      const r = await m.wait(runId);
      expect(r.status).toBe('incomplete');
      expect(r.error?.code).toBe('local_io');
      expect(r.error?.message).toMatch(/ENOSPC|no space/i);
      const local = readFileSync(join(localRuns, runId, 'events.jsonl'));
      expect(local.length).toBeGreaterThan(1000);
      expect(local[local.length - 1]).toBe(0x0a);
      expect(readFileSync(join(remoteDir, 'events.jsonl')).subarray(0, local.length).equals(local)).toBe(true);
      // Space freed (the tmpfs grows): resume picks up at the last whole line, then the run is
      // cancelled so nothing of it is left; the local copy is the remote file, byte for byte.
      execFileSync('mount', ['-o', 'remount,size=64m', localRuns]);
      await m.resume(runId);
      await m.cancel(runId);
      const end = await m.wait(runId);
      expect(end.status).toBe('cancelled');
      expect(readFileSync(join(localRuns, runId, 'events.jsonl')).equals(readFileSync(join(remoteDir, 'events.jsonl')))).toBe(true);
      await until(() => processesMentioning(runId).length === 0, 15_000, 'the run to stop');
    } finally {
      execFileSync('umount', ['-l', localRuns]);
    }
  });
});
