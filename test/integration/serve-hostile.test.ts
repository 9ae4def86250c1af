/**
 * One event line must not stop `kvscope serve` (and with it every run it follows): a 40 KB line
 * nested 20,000 levels deep, opened from disk, written by a hostile host during a live run over
 * SSH, or sent as a probe's answer. A real `kvscope serve` process (the CLI bundled from source),
 * a real WebSocket client, a real sshd on loopback whose "Python" is hostile.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { PushMessage } from '../../src/shared/api';
import { buildCli } from '../helpers/cli';
import { deepJson, writeHostilePython } from '../helpers/hostile-host';
import { hostStanza, sshdSkipReason, sshdWithKey, type TestSshd } from '../helpers/sshd';

const rendererBuilt = existsSync(resolve('out/renderer/index.html'));
const skip = sshdSkipReason() ?? (rendererBuilt ? null : 'the renderer is not built (npm run build)');
if (skip) console.warn(`serve hostile-input tests skipped: ${skip}`);

type Message = { id?: number; result?: { ok: boolean; value?: unknown; error?: { code: string; message: string } }; push?: PushMessage };

describe.skipIf(skip !== null)('kvscope serve survives hostile event lines', { timeout: 600_000 }, () => {
  let dir: string;
  let sshd: TestSshd;
  let serve: ChildProcess;
  let exited: { code: number | null; signal: string | null } | null = null;
  let serveStderr = '';
  let ws: WebSocket;
  const messages: Message[] = [];
  let nextId = 1;
  let hostile: string;
  let cli: string;
  const remoteDirs: string[] = [];

  beforeAll(async () => {
    let key: { priv: string };
    ({ dir, key, sshd } = await sshdWithKey('serve-hostile'));
    // The user's machine: ~/.ssh/config naming the host, its key known.
    const home = join(dir, 'home');
    mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 });
    chmodSync(join(home, '.ssh'), 0o700);
    writeFileSync(join(home, '.ssh', 'config'), hostStanza('evil', sshd, key.priv), { mode: 0o600 });
    writeFileSync(join(home, '.ssh', 'known_hosts'), `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n`, { mode: 0o600 });
    hostile = writeHostilePython(dir, 'deep');
    // A run on disk whose second line is the deep one.
    const data = join(dir, 'data');
    const run = join(data, 'runs', 'deep-run');
    mkdirSync(run, { recursive: true });
    writeFileSync(
      join(run, 'events.jsonl'),
      [JSON.stringify({ seq: 0, t: 0, type: 'log', level: 'info', msg: 'before' }), `{"seq":1,"t":1,"type":"log","level":"info","msg":"deep","extra":${deepJson(20_000)}}`, JSON.stringify({ seq: 2, t: 2, type: 'log', level: 'info', msg: 'after' })].join('\n') + '\n',
    );
    writeFileSync(join(run, 'meta.json'), JSON.stringify({ id: 'deep-run', name: 'deep', host: 'evil', status: 'ok', createdAt: '' }));
    cli = await buildCli('kvscope-serve-hostile');
  });
  // A fresh server for each attack, so each shows on its own whether it stops the server.
  beforeEach(async () => {
    exited = null;
    serveStderr = '';
    messages.length = 0;
    serve = spawn(process.execPath, [cli, 'serve'], { env: { ...process.env, HOME: join(dir, 'home'), KVSCOPE_DATA_DIR: join(dir, 'data') }, stdio: ['ignore', 'pipe', 'pipe'] });
    serve.on('exit', (code, signal) => (exited = { code, signal }));
    serve.stderr!.on('data', (b: Buffer) => (serveStderr += b.toString()));
    const url = await new Promise<string>((res, rej) => {
      let out = '';
      serve.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('\n')) res(out.split('\n')[0]!);
      });
      serve.once('exit', () => rej(new Error(`kvscope serve exited before printing its URL: ${serveStderr}`)));
    });
    const u = new URL(url);
    ws = new WebSocket(`ws://127.0.0.1:${u.port}/api?token=${u.searchParams.get('token')}`, { origin: `http://127.0.0.1:${u.port}` });
    ws.on('message', (data) => messages.push(JSON.parse(String(data)) as Message));
    await new Promise((r) => ws.once('open', r));
  });
  afterEach(async () => {
    ws?.close();
    if (serve.exitCode === null && serve.signalCode === null) {
      serve.kill('SIGTERM');
      await new Promise((r) => serve.once('exit', r));
    }
  });
  afterAll(async () => {
    await sshd?.stop();
    for (const d of remoteDirs) rmSync(d, { recursive: true, force: true });
  });

  /** Resolves with the first message `pick` returns a value for; rejects when the server stops first. */
  function waitFor<T>(what: string, pick: (m: Message) => T | undefined): Promise<T> {
    return new Promise((res, rej) => {
      const check = () => {
        for (const m of messages) {
          const v = pick(m);
          if (v !== undefined) return done(() => res(v));
        }
        if (exited || ws.readyState !== ws.OPEN) done(() => rej(new Error(`kvscope serve stopped (${JSON.stringify(exited)}) before ${what}: ${serveStderr.slice(-2000)}`)));
      };
      const done = (settle: () => void) => {
        ws.off('message', check);
        ws.off('close', check);
        settle();
      };
      ws.on('message', check);
      ws.on('close', check);
      check();
    });
  }

  function call(method: string, ...args: unknown[]): Promise<NonNullable<Message['result']>> {
    const id = nextId++;
    ws.send(JSON.stringify({ id, method, args }));
    return waitFor(`answering ${method}`, (m) => (m.id === id && m.result ? m.result : undefined));
  }

  const push = (pred: (p: PushMessage) => boolean): Promise<PushMessage> => waitFor('the push', (m) => (m.push && pred(m.push) ? m.push : undefined));

  it('opening a run with the deep line loads the rest and reports that line', async () => {
    const r = await call('loadRun', 'deep-run');
    expect(r.ok).toBe(true);
    const run = r.value as { events: Array<{ seq: number }>; badLines: Array<{ reason: string; seq: number | null }> };
    expect(run.events.map((e) => e.seq)).toEqual([0, 2]);
    expect(run.badLines).toMatchObject([{ reason: 'too_deep', seq: 1 }]);
    expect((await call('listRuns')).ok).toBe(true);
    expect(exited).toBe(null);
  });

  it('a hostile host writing the line during a live run over SSH: the run ends, the server goes on', async () => {
    const started = await call('startRun', { host: 'evil', python: hostile, workload: { model: 'tiny', device: 'cpu', users: 1, rounds: 1 } });
    expect(started).toMatchObject({ ok: true });
    const { runId, remoteDir } = started.value as { runId: string; remoteDir: string };
    // The host is this user's account: its ~/.cache/kvscope holds the run; removed at the end.
    remoteDirs.push(remoteDir);
    const end = await push((p) => p.kind === 'run-status' && p.runId === runId && p.status !== 'running');
    expect(end).toMatchObject({ status: 'ok' });
    const pushed = messages.flatMap((m) => (m.push?.kind === 'run-events' && m.push.runId === runId ? m.push.events.map((e) => e.seq) : []));
    expect(pushed).toEqual([0, 1, 3]);
    // The local copy is the host's log, deep line and all, byte for byte.
    const local = readFileSync(join(dir, 'data', 'runs', runId, 'events.jsonl'));
    expect(local.equals(readFileSync(join(remoteDir, 'events.jsonl')))).toBe(true);
    expect((await call('loadRun', runId)).ok).toBe(true);
    expect(exited).toBe(null);
  });

  it('a probe answer nested as deep fails that probe only', async () => {
    const r = await call('probeHost', 'evil', { python: hostile });
    expect(r).toMatchObject({ ok: false, error: { code: 'ssh_error', message: expect.stringContaining('probe of evil: unreadable answer') } });
    expect((await call('listHosts')).ok).toBe(true);
    expect(exited).toBe(null);
  });
});
