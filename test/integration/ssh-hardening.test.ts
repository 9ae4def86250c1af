/**
 * Attacks that go through SSH, each against a real sshd on loopback with the real agent or a
 * hostile host (test/helpers/hostile-host.ts): a crafted .kvscope file choosing what resume runs,
 * a host that streams without newlines or floods a probe, two machines' runs with the same
 * folder name, a follower killed mid-run then `kvscope resume`, remote text with terminal escape
 * sequences, and what the window's bridge lets a renderer reach.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PushMessage } from '../../src/shared/api';
import { createHostHandlers } from '../../src/main/core/host-handlers';
import { HostService } from '../../src/main/core/hosts';
import { MAX_UNTERMINATED_LINE_BYTES, RunManager } from '../../src/main/core/runs';
import { RunStore } from '../../src/main/core/run-store';
import { importRun } from '../../src/main/core/runs-library';
import { buildCli, runCli } from '../helpers/cli';
import { writeHostilePython } from '../helpers/hostile-host';
import { currentUser, hostStanza, sshdSkipReason, sshdWithKey, type TestSshd } from '../helpers/sshd';

const skip = sshdSkipReason();
if (skip) console.warn(`SSH hardening tests skipped: ${skip}`);
const [PY, AGENT] = ['/usr/bin/python3', resolve('resources/agent')];
const SHORT = { model: 'tiny', device: 'cpu' as const, users: 2, rounds: 3, context_tokens: 256, gpu_kv_bytes: 1_000_000, host_kv_bytes: 4_000_000, trace: false, sample_ms: 0 };
const WORKLOAD = ['--model', 'tiny', '--device', 'cpu', '--context-tokens', '512', '--gpu-kv-bytes', '2500000', '--host-kv-bytes', '8000000', '--trace', 'off', '--sample-ms', '0'];
// eslint-disable-next-line no-control-regex
const ESC = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

// Processes that run many real runs wait for their events, with only a guard against a hang.
describe.skipIf(skip !== null)('attacks through SSH', { timeout: 600_000 }, () => {
  let dir: string;
  let sshd: TestSshd;
  let remoteRoot: string;
  let store: RunStore;
  let hosts: HostService;
  let runs: RunManager;
  let conn: string[];
  let cli: string;
  const pushes: PushMessage[] = [];

  beforeAll(async () => {
    let key: { priv: string };
    ({ dir, key, sshd } = await sshdWithKey('harden'));
    remoteRoot = join(dir, 'remote');
    writeFileSync(join(dir, 'ssh_config'), hostStanza('gpu', sshd, key.priv), { mode: 0o600 });
    writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n`);
    store = new RunStore(join(dir, 'runs'), null);
    await store.ensure();
    const noPrompts = { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null };
    hosts = new HostService({ dataDir: join(dir, 'data'), agentSourceDir: AGENT, sshConfigFile: join(dir, 'ssh_config'), knownHostsFile: join(dir, 'known_hosts'), remoteRoot, python: PY, prompts: noPrompts });
    runs = new RunManager({ store, hosts, push: (m) => pushes.push(m) });
    conn = ['--ssh-config', join(dir, 'ssh_config'), '--known-hosts', join(dir, 'known_hosts'), '--remote-root', remoteRoot, '--python', PY];
    cli = await buildCli('kvscope-ssh-hardening');
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  it('an imported .kvscope file cannot choose what resume runs on a host (it named /usr/bin/tee and a file to overwrite)', async () => {
    const victim = join(dir, 'victim.txt');
    writeFileSync(victim, 'precious\n');
    const events = readFileSync('test/fixtures/runs/cpu-tiny-export/events.jsonl');
    const meta = { id: 'crafted', name: 'a run', host: 'gpu', status: 'incomplete', createdAt: '', python: '/usr/bin/tee', remote_dir: victim, remote_pgid: 1 };
    const file = join(dir, 'crafted.kvscope');
    const digest = createHash('sha256').update(events).digest('hex');
    writeFileSync(file, gzipSync(Buffer.concat([Buffer.from(JSON.stringify({ kvscope_file: 1, events_bytes: events.length, meta }) + '\n'), events, Buffer.from(`\n{"events_sha256":"${digest}"}\n`)])));
    // Imported as the window imports it (importRunFile), then resumed and cancelled through the bridge.
    const listing = await importRun(store, { path: file });
    const h = createHostHandlers({ store, push: () => undefined, dataDir: join(dir, 'data'), agentSourceDir: AGENT, host: hosts.opts });
    const resumed = await h.handlers.resumeRun('crafted');
    // Where the attack goes through, the tail it started runs on: wait for its end to see the damage.
    if (resumed.ok) await h.runs.wait('crafted');
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(resumed).toMatchObject({ ok: false, error: { code: 'unsupported', message: expect.stringContaining('an imported run is a finished record') } });
    const cancelled = await h.handlers.cancelRun('crafted');
    expect(cancelled).toMatchObject({ ok: false, error: { code: 'unsupported' } });
    expect(listing).toMatchObject({ id: 'crafted', status: 'incomplete', resumable: false });
  });

  it('a host streaming without newlines stops the follower with line_too_long; only whole lines are kept', async () => {
    const python = writeHostilePython(dir, 'nonewline');
    const { runId, remoteDir } = await runs.start({ host: 'gpu', python, workload: SHORT });
    const r = await runs.wait(runId);
    expect(r.status).toBe('error');
    expect(r.error).toMatchObject({ code: 'line_too_long', message: expect.stringMatching(/the host sent \d+ bytes without a newline at byte \d+ of the log \(an event line is at most 1048576 bytes\): not an event log/) });
    const local = readFileSync(join(store.runsDir, runId, 'events.jsonl'));
    // The run.start line, whole, and nothing of the endless one.
    expect(local.toString()).toMatch(/^\{"seq":0,[^\n]*\}\n$/);
    expect(readFileSync(join(remoteDir, 'events.jsonl')).subarray(0, local.length).equals(local)).toBe(true);
    expect(MAX_UNTERMINATED_LINE_BYTES).toBe(8 << 20);
  });

  it('a probe answer that never ends is cut at the limit with too_large, and so is any exec', async () => {
    const python = writeHostilePython(dir, 'flood');
    await expect(hosts.probe('gpu', python)).rejects.toMatchObject({ code: 'too_large', message: expect.stringMatching(/wrote more than 1048576 bytes of output/) });
    const exec = await hosts.connect('gpu');
    try {
      await expect(exec.exec('head -c 67108864 /dev/zero', undefined, { maxOutputBytes: 4 << 20 })).rejects.toMatchObject({ code: 'too_large' });
      // The connection is still good for the next command.
      expect((await exec.exec('echo ok')).stdout.toString()).toBe('ok\n');
    } finally {
      exec.close();
    }
  });

  it('two machines running "--out run1" on the same host get their own host folders', async () => {
    const [a, b] = [new RunStore(join(dir, 'laptop-a'), null), new RunStore(join(dir, 'laptop-b'), null)];
    const started = [];
    for (const s of [a, b]) {
      const m = new RunManager({ store: s, hosts });
      const { runId, remoteDir } = await m.start({ host: 'gpu', workload: SHORT }, { runId: 'run1' });
      started.push({ runId, remoteDir, r: await m.wait(runId), s });
    }
    expect(started.map((x) => x.r.status)).toEqual(['ok', 'ok']);
    expect(started[0]!.remoteDir).not.toBe(started[1]!.remoteDir);
    for (const x of started) {
      expect(x.remoteDir).toMatch(/\/runs\/run1-[0-9a-z]{8}$/);
      expect(readFileSync(join(x.s.runsDir, 'run1', 'events.jsonl')).equals(readFileSync(join(x.remoteDir, 'events.jsonl')))).toBe(true);
    }
  });

  it('a follower killed mid-run leaves the run going; `kvscope resume <folder>` follows it to the end, byte-identical', async () => {
    const out = join(dir, 'killed');
    const env = { KVSCOPE_DATA_DIR: join(dir, 'cli-data') };
    const killed = await runCli(cli, ['run', '--host', 'gpu', '--out', out, '--users', '4', '--rounds', '14', ...WORKLOAD, ...conn], env, (text, child) => {
      if (/round 1\/14/.test(text)) child.kill('SIGKILL');
    });
    expect(killed.code).toBe(null);
    const before = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as { status: string; remote_dir: string };
    expect(before.status).toBe('running');
    const r = await runCli(cli, ['resume', out, ...conn], env);
    expect(r.stderr).toMatch(/following run killed again/);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n').pop()).toBe(out);
    const after = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as { status: string };
    expect(after.status).toBe('ok');
    expect(readFileSync(join(out, 'events.jsonl')).equals(readFileSync(join(before.remote_dir, 'events.jsonl')))).toBe(true);
    // A finished run is not resumed again (its log is complete), by id in the runs folder too.
    const again = await runCli(cli, ['resume', 'killed', '--runs-dir', dir, ...conn], env);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already ended \(ok\)/);
  });

  it('remote text reaches the terminal with its control characters escaped (no forged "run ok", no retitling)', async () => {
    const python = writeHostilePython(dir, 'escape');
    const r = await runCli(cli, ['run', '--host', 'gpu', '--runs-dir', join(dir, 'runs-escape'), ...conn, '--python', python, ...WORKLOAD], { KVSCOPE_DATA_DIR: join(dir, 'cli-data') });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Last output: \\u001b]0;pwned\\u0007\\u000d\\u001b[2K\\u001b[32mrun ok: every round finished');
    expect(r.stderr + r.stdout).not.toMatch(ESC);
    // And in `kvscope validate`, whose every line comes from the log.
    const log = join(dir, 'escape.jsonl');
    const end = { seq: 1, t: 1, type: 'run.end', status: 'error', error: { code: 'x\x1b[2J', message: '\x1b]0;pwned\x07\rvalid: every protocol v1 rule holds' }, summary: { blocks_offloaded: 0, blocks_onboarded: 0, blocks_evicted: 0, bytes_h2d: 0, bytes_d2h: 0 } };
    writeFileSync(log, `${JSON.stringify({ seq: 0, t: 0, type: 'log', level: 'info', msg: 'x' })}\n${JSON.stringify(end)}\n${JSON.stringify({ seq: 2, t: 2, type: '\x1b[31mevil' })}\n`);
    const v = await runCli(cli, ['validate', log], {});
    expect(v.stdout).toContain('\\u001b]0;pwned\\u0007\\u000dvalid: every protocol v1 rule holds');
    expect(v.stdout).toContain('unknown event type "\\u001b[31mevil"');
    expect(v.stdout).not.toMatch(ESC);
  });

  it('the window reaches only hosts the user listed, and runs only a Python there', async () => {
    const h = createHostHandlers({ store, push: () => undefined, dataDir: join(dir, 'data'), agentSourceDir: AGENT, host: hosts.opts });
    const unlisted = await h.handlers.startRun({ host: `${currentUser()}@127.0.0.1:${sshd.port}`, workload: SHORT });
    expect(unlisted).toMatchObject({ ok: false, error: { code: 'not_found', message: expect.stringContaining('in your hosts') } });
    expect(await h.handlers.probeHost('127.0.0.1')).toMatchObject({ ok: false, error: { code: 'not_found' } });
    expect(await h.handlers.startSweep({ hosts: ['gpu', 'elsewhere.example'], users: [1], workload: SHORT })).toMatchObject({ ok: false, error: { code: 'not_found' } });
    for (const python of ['/usr/bin/tee', 'sh', '/usr/bin/env']) {
      const r = await h.handlers.startRun({ host: 'gpu', python, workload: SHORT });
      expect(r).toMatchObject({ ok: false, error: { code: 'invalid_argument', message: expect.stringContaining('must be a Python interpreter') } });
      expect(await h.handlers.probeHost('gpu', { python })).toMatchObject({ ok: false, error: { code: 'invalid_argument' } });
    }
    mkdirSync(join(dir, 'data'), { recursive: true });
    expect(await h.handlers.saveHost({ alias: 'lab', hostname: '127.0.0.1', python: '/usr/bin/tee' })).toMatchObject({ ok: false, error: { code: 'invalid_argument' } });
  });
});
