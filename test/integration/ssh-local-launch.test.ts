/**
 * The detached launcher on a machine without setsid(1) (macOS, busybox): the host's Python makes
 * the new session instead, and the run is still its own process group that cancel can end.
 * Runs on this machine through LocalExec (the Local host's transport) with a PATH that has no setsid.
 */
import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cancelDetached, launchDetached, RunManager } from '../../src/main/core/runs';
import { HostService } from '../../src/main/core/hosts';
import { RunStore } from '../../src/main/core/run-store';
import { decodeAll } from '../../src/shared/events-reader';
import { resolve } from 'node:path';
import { LocalExec } from '../../src/main/core/ssh/host-exec';
import type { ExecResult } from '../../src/main/core/ssh/connect';

/** LocalExec whose shell sees only a few tools, none of them setsid. */
class NoSetsidExec extends LocalExec {
  constructor(private readonly bin: string) {
    super();
  }
  override exec(command: string, stdin?: string | Buffer): Promise<ExecResult> {
    return super.exec(`PATH=${this.bin}; export PATH; ${command}`, stdin);
  }
}

describe('detached launch without setsid(1)', () => {
  it('falls back to Python setsid(2): own process group, pid file, exit status, and cancel ends it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvscope-nosetsid-'));
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    for (const tool of ['sh', 'mkdir', 'cat', 'sleep', 'mv', 'ps', 'grep', 'rm']) {
      const found = execSync(`command -v ${tool}`, { encoding: 'utf8', shell: '/bin/sh' }).trim();
      symlinkSync(found, join(bin, tool));
    }
    const exec = new NoSetsidExec(bin);
    expect((await exec.exec('command -v setsid || echo none')).stdout.toString().trim()).toBe('none');
    // A stand-in for the agent (NOT the agent): a package whose `run` sleeps until signalled.
    const agentDir = join(dir, 'agent');
    mkdirSync(join(agentDir, 'kvscope_agent'), { recursive: true });
    writeFileSync(join(agentDir, 'kvscope_agent', '__init__.py'), '');
    writeFileSync(join(agentDir, 'kvscope_agent', '__main__.py'), 'import os, sys, time\nopen(os.path.join(sys.argv[-1], "events.jsonl"), "w").close()\ntime.sleep(60)\n');
    const remoteDir = join(dir, 'runs', 'r1');
    const pgid = await launchDetached({ exec, python: '/usr/bin/python3', agentDir, remoteDir, agentArgs: [] });
    expect(Number(readFileSync(join(remoteDir, 'pid'), 'utf8'))).toBe(pgid);
    // The launcher leads its own session and group.
    const [sid, pg] = execSync(`ps -o sid=,pgid= -p ${pgid}`, { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
    expect(sid).toBe(pgid);
    expect(pg).toBe(pgid);
    expect(await cancelDetached(exec, remoteDir, pgid, 2000)).toBe('terminated');
    const deadline = Date.now() + 5000;
    while (!existsSync(join(remoteDir, 'exit')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    // The stand-in has no TERM handler: Python dies of the signal (143 = 128 + 15).
    expect(readFileSync(join(remoteDir, 'exit'), 'utf8').trim()).toBe('143');
    expect(execSync('ps -eo args', { encoding: 'utf8' }).split('\n').filter((l) => l.includes(remoteDir))).toEqual([]);
  });
});

describe('the Local host', () => {
  it('runs the real agent as a detached child process, and cancel (through /bin/sh, dash here) ends it "cancelled"', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvscope-localrun-'));
    const store = new RunStore(join(dir, 'runs'), null);
    await store.ensure();
    const hosts = new HostService({
      dataDir: dir,
      agentSourceDir: resolve('resources/agent'),
      python: '/usr/bin/python3',
      prompts: { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null },
    });
    const runs = new RunManager({ store, hosts, cancelGraceMs: 3000 });
    const { runId, remoteDir } = await runs.start({
      host: 'local',
      workload: { model: 'tiny', device: 'cpu', users: 4, rounds: 60, context_tokens: 512, gpu_kv_bytes: 6_000_000, host_kv_bytes: 60_000_000, trace: false, sample_ms: 0 },
    });
    expect(remoteDir.startsWith(join(dir, 'local-agent', 'runs'))).toBe(true);
    const deadline = Date.now() + 30_000;
    while (!(existsSync(join(remoteDir, 'events.jsonl')) && readFileSync(join(remoteDir, 'events.jsonl'), 'utf8').includes('"round"'))) {
      if (Date.now() > deadline) throw new Error('no round in 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    await runs.cancel(runId);
    const r = await runs.wait(runId);
    expect(r.status).toBe('cancelled');
    const local = readFileSync(join(store.runsDir, runId, 'events.jsonl'));
    expect(local.equals(readFileSync(join(remoteDir, 'events.jsonl')))).toBe(true);
    expect(decodeAll(local).events.at(-1)).toMatchObject({ type: 'run.end', status: 'cancelled' });
    expect(execSync('ps -eo args', { encoding: 'utf8' }).split('\n').filter((l) => l.includes(runId))).toEqual([]);
  });
});
