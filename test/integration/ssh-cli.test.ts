/**
 * The `kvscope hosts | run | sweep | clean` commands as a user runs them (the bundled CLI in a
 * child process) against a real sshd on loopback and the real agent on CPU.
 */
import { execSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli, runCli } from '../helpers/cli';
import { currentUser, keygen, sshdSkipReason, startSshd, type TestSshd } from '../helpers/sshd';

const skip = sshdSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`SSH CLI tests skipped: ${skip}`);

const PY = '/usr/bin/python3';
const WORKLOAD = ['--model', 'tiny', '--device', 'cpu', '--rounds', '2', '--context-tokens', '256', '--gpu-kv-bytes', '1000000', '--host-kv-bytes', '4000000', '--trace', 'off', '--sample-ms', '0'];

let CLI = '';
const kvscope = (args: string[], env: Record<string, string>, onStderr?: (text: string, child: ChildProcess) => void) => runCli(CLI, args, env, onStderr);

d('kvscope hosts/run/sweep/clean over real SSH', () => {
  let dir: string;
  let sshd: TestSshd;
  let env: Record<string, string>;
  let conn: string[];

  beforeAll(async () => {
    CLI = await buildCli('kvscope-test-cli');
    dir = mkdtempSync(join(tmpdir(), 'kvscope-sshcli-'));
    const key = keygen(join(dir, 'id'));
    sshd = await startSshd({ authorizedKeys: [key.pub], name: 'cli' });
    writeFileSync(join(dir, 'ssh_config'), `Host gpu\n  HostName 127.0.0.1\n  Port ${sshd.port}\n  User ${currentUser()}\n  IdentityFile ${key.priv}\n  IdentityAgent none\nHost nowhere\n  HostName 127.0.0.1\n  Port 1\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'known_hosts'), '');
    env = { KVSCOPE_DATA_DIR: join(dir, 'data') };
    conn = ['--ssh-config', join(dir, 'ssh_config'), '--known-hosts', join(dir, 'known_hosts'), '--remote-root', join(dir, 'remote'), '--python', PY];
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  it('hosts lists the config aliases and Local; --probe reports this machine', async () => {
    const list = await kvscope(['hosts', '--json', ...conn], env);
    expect(list.code).toBe(0);
    const hosts = JSON.parse(list.stdout) as Array<{ alias: string; hostname: string; port: number }>;
    expect(hosts.map((h) => h.alias)).toEqual(['local', 'gpu', 'nowhere']);
    expect(hosts[1]).toMatchObject({ hostname: '127.0.0.1', port: sshd.port });
    const probe = await kvscope(['hosts', '--probe', '--host', 'local', ...conn], env);
    expect(probe.code).toBe(0);
    expect(probe.stdout).toMatch(/torch 1\.13/);
    expect(probe.stdout).toMatch(/no NVIDIA GPU/);
  });

  it('run refuses an unknown host key without --accept-new, then records it with --accept-new and ends "ok"', async () => {
    const refused = await kvscope(['run', '--host', 'gpu', ...conn, ...WORKLOAD], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/not known \(ssh-ed25519 SHA256:/);
    expect(refused.stderr).toMatch(/--accept-new/);
    expect(readFileSync(join(dir, 'known_hosts'), 'utf8')).toBe('');

    const out = join(dir, 'my-run');
    const ok = await kvscope(['run', '--host', 'gpu', '--accept-new', '--users', '2', '--out', out, ...conn, ...WORKLOAD, '--offload-policy', 'lazy-keep'], env);
    expect(ok.stderr).toMatch(/recording the new host key/);
    expect(ok.code).toBe(0);
    expect(ok.stdout.trim().split('\n').pop()).toBe(out);
    expect(ok.stderr).toMatch(/deploy/);
    expect(ok.stderr).toMatch(/round \d+\/2/);
    expect(readFileSync(join(dir, 'known_hosts'), 'utf8')).toContain(sshd.hostKeyLine);
    const meta = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as { status: string; remote_dir: string };
    expect(meta.status).toBe('ok');
    expect(readFileSync(join(out, 'events.jsonl')).equals(readFileSync(join(meta.remote_dir, 'events.jsonl')))).toBe(true);
    // The built-in engine's offload policy reached the agent (its run.start says what it ran).
    const start = JSON.parse(readFileSync(join(out, 'events.jsonl'), 'utf8').split('\n')[0]!) as { type: string; config: { offload_policy: string } };
    expect(start.type).toBe('run.start');
    expect(start.config.offload_policy).toBe('lazy-keep');
  });

  it('a bad workload option exits non-zero with the agent\'s message, and 2 for a bad CLI value', async () => {
    const bad = await kvscope(['run', '--host', 'local', ...conn, ...WORKLOAD, '--model', 'no-such-model', '--runs-dir', join(dir, 'runs')], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/no-such-model/);
    const usage = await kvscope(['run', '--host', 'local', ...conn, '--rounds', 'many'], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--rounds/);
  });

  it('a run whose agent cannot start on the host exits with the error (the SSH connection is closed, not left holding the process)', async () => {
    // The host's runs folder is a file: the launch fails after the connection and the deploy
    // succeeded. The CLI used to print the error and then hang on the open connection.
    const root = join(dir, 'remote-runs-is-a-file');
    mkdirSync(root, { recursive: true });
    writeFileSync(join(root, 'runs'), 'not a folder\n');
    const r = await kvscope(['run', '--host', 'gpu', ...conn, ...WORKLOAD, '--remote-root', root, '--runs-dir', join(dir, 'runs')], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/could not start the agent on gpu/);
  });

  it('Ctrl+C cancels the run on the host: exit 1, run "cancelled", no process left', async () => {
    const out = join(dir, 'interrupted');
    let sent = false;
    const r = await kvscope(
      ['run', '--host', 'gpu', '--out', out, ...conn, ...WORKLOAD, '--rounds', '60', '--users', '4', '--context-tokens', '512', '--gpu-kv-bytes', '6000000', '--host-kv-bytes', '60000000'],
      env,
      (text, child) => {
        if (!sent && /round \d+\/60/.test(text)) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    );
    expect(sent).toBe(true);
    expect(r.stderr).toMatch(/cancelling the run on the host/);
    expect(r.code).toBe(1);
    expect(r.stdout.trim().split('\n').pop()).toBe(out);
    const meta = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as { status: string; remote_dir: string };
    expect(meta.status).toBe('cancelled');
    const ps = execSync('ps -eo args', { encoding: 'utf8' });
    expect(ps.split('\n').filter((l) => l.includes(meta.remote_dir))).toEqual([]);
  });

  it('sweep runs each user count on each host, survives a host that is down, and prints the table', async () => {
    const r = await kvscope(['sweep', '--host', 'gpu', '--host', 'local', '--host', 'nowhere', '--users', '1..2', '--runs-dir', join(dir, 'runs'), ...conn, ...WORKLOAD], env);
    expect(r.code).toBe(1);
    const table = r.stdout;
    for (const host of ['gpu', 'local']) for (const u of [1, 2]) expect(table).toMatch(new RegExp(`^${host}\\s+${u}\\s+ok\\s`, 'm'));
    expect(table).toMatch(/^nowhere\s+1\s+error/m);
    expect(table).toMatch(/^nowhere\s+2\s+error/m);
    expect(table).toMatch(/cannot reach 127\.0\.0\.1:1/);
  });

  it('clean removes finished run folders and old agent versions, never a running run or its agent', async () => {
    const runsRoot = join(dir, 'remote', 'runs');
    const finished = readdirSync(runsRoot);
    expect(finished.length).toBeGreaterThanOrEqual(3);
    mkdirSync(join(dir, 'remote', 'agent-0ldversion0000', 'kvscope_agent'), { recursive: true });
    writeFileSync(join(dir, 'remote', 'agent-0ldversion0000', 'kvscope_agent', '__init__.py'), '');
    const current = readdirSync(join(dir, 'remote')).find((n) => n.startsWith('agent-') && n !== 'agent-0ldversion0000')!;
    // A run that is still going while clean runs.
    let live: ChildProcess | null = null;
    const liveRun = kvscope(
      ['run', '--host', 'gpu', '--out', join(dir, 'live'), ...conn, ...WORKLOAD, '--rounds', '60', '--users', '4', '--context-tokens', '512', '--gpu-kv-bytes', '6000000', '--host-kv-bytes', '60000000'],
      env,
      (_text, child) => (live = child),
    );
    await new Promise<void>((r) => {
      const t = setInterval(() => {
        if (readdirSync(runsRoot).length > finished.length) {
          clearInterval(t);
          r();
        }
      }, 50);
    });
    const dry = await kvscope(['clean', '--host', 'gpu', '--agents', '--dry-run', ...conn], env);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/keep\s+running/);
    expect(readdirSync(runsRoot).length).toBe(finished.length + 1);
    const r = await kvscope(['clean', '--host', 'gpu', '--agents', ...conn], env);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`removed ${finished.length + 1} of`));
    const left = readdirSync(runsRoot);
    expect(left).toHaveLength(1);
    expect(finished).not.toContain(left[0]);
    expect(readdirSync(join(dir, 'remote')).filter((n) => n.startsWith('agent-'))).toEqual([current]);
    (live as ChildProcess | null)?.kill('SIGINT');
    expect((await liveRun).code).toBe(1);
  });
});
