/**
 * The host and run bridge methods as the window calls them (createHostHandlers, which createCore
 * spreads into its handlers): an app-added host, the host-key and passphrase questions going out as
 * `prompt` pushes and coming back through answerHostKey / providePassphrase, a probe, and a run
 * whose events arrive as batched `run-events` pushes. Real sshd on loopback, real agent on CPU.
 */
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostPrompt, PushMessage } from '../../src/shared/api';
import { createHostHandlers } from '../../src/main/core/host-handlers';
import { RunStore } from '../../src/main/core/run-store';
import { currentUser, keygen, sshdSkipReason, startSshd, type TestSshd } from '../helpers/sshd';

const skip = sshdSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`SSH core tests skipped: ${skip}`);

const PASSPHRASE = 'correct horse battery staple';

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

d('host bridge methods over real SSH', () => {
  let dir: string;
  let sshd: TestSshd;
  let keyFile: string;
  const pushes: PushMessage[] = [];
  let h: ReturnType<typeof createHostHandlers>;
  let store: RunStore;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kvscope-sshcore-'));
    const key = keygen(join(dir, 'id_enc'), 'ed25519', PASSPHRASE);
    keyFile = key.priv;
    sshd = await startSshd({ authorizedKeys: [key.pub], name: 'core' });
    writeFileSync(join(dir, 'ssh_config'), '', { mode: 0o600 });
    writeFileSync(join(dir, 'known_hosts'), '');
    store = new RunStore(join(dir, 'data', 'runs'), null);
    await store.ensure();
    h = createHostHandlers({
      store,
      push: (m) => pushes.push(m),
      dataDir: join(dir, 'data'),
      agentSourceDir: resolve('resources/agent'),
      promptTimeoutMs: 20_000,
      host: { sshConfigFile: join(dir, 'ssh_config'), knownHostsFile: join(dir, 'known_hosts'), remoteRoot: join(dir, 'remote') },
    });
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  /** Answers prompts as a user would, as they are pushed. */
  function answerPrompts(answers: (p: HostPrompt) => Promise<unknown>): () => void {
    let seen = pushes.length;
    const timer = setInterval(() => {
      for (; seen < pushes.length; seen++) {
        const m = pushes[seen]!;
        if (m.kind === 'prompt') void answers(m.prompt);
      }
    }, 20);
    return () => clearInterval(timer);
  }

  it('saveHost validates and keeps an app host; listHosts shows it beside Local', async () => {
    const bad = await h.handlers.saveHost({ alias: 'x; rm -rf /', hostname: '127.0.0.1' });
    expect(bad).toMatchObject({ ok: false, error: { code: 'invalid_argument', detail: { field: 'alias' } } });
    const saved = await h.handlers.saveHost({ alias: 'lab', hostname: '127.0.0.1', port: sshd.port, user: currentUser(), identityFile: keyFile, python: '/usr/bin/python3' });
    expect(saved).toMatchObject({ ok: true, value: { alias: 'lab', source: 'app', port: sshd.port, python: '/usr/bin/python3' } });
    const list = await h.handlers.listHosts();
    expect(list.ok && list.value.map((x) => `${x.alias}:${x.source}`)).toEqual(['local:local', 'lab:app']);
  });

  it('probe asks for the host key and the passphrase through prompts, then reports the host', async () => {
    const asked: string[] = [];
    const stop = answerPrompts(async (p) => {
      asked.push(p.type === 'passphrase' ? `${p.type}:${p.message.startsWith('Wrong') ? 'again' : 'first'}` : p.type);
      if (p.type === 'host-key') {
        expect(p.fingerprint).toMatch(/^SHA256:/);
        expect(p.hop).toBe(`[127.0.0.1]:${sshd.port}`);
        return h.handlers.answerHostKey(p.id, true);
      }
      return h.handlers.providePassphrase(p.id, asked.filter((a) => a.startsWith('passphrase')).length === 1 ? 'wrong' : PASSPHRASE);
    });
    const r = await h.handlers.probeHost('lab');
    stop();
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.python?.executable).toBe('/usr/bin/python3');
    expect(r.value.torch?.version).toMatch(/^1\.13/);
    expect(r.value.engines.map((e) => e.name)).toEqual(['torch', 'tensorrt_llm', 'vllm']);
    expect(asked).toEqual(['host-key', 'passphrase:first', 'passphrase:again']);
    expect(readFileSync(join(dir, 'known_hosts'), 'utf8')).toContain(sshd.hostKeyLine);
    // An answer for a question that is gone is an error, not a silent no-op.
    expect(await h.handlers.answerHostKey('nope', true)).toMatchObject({ ok: false, error: { code: 'not_found' } });
  });

  it('startRun pushes batched run-events, progress and a final run-status; the passphrase is written nowhere', async () => {
    const from = pushes.length;
    const started = await h.handlers.startRun({ host: 'lab', workload: { model: 'tiny', device: 'cpu', users: 2, rounds: 3, context_tokens: 256, gpu_kv_bytes: 1_000_000, host_kv_bytes: 4_000_000, trace: false, sample_ms: 0 } });
    expect(started.ok).toBe(true);
    if (!started.ok) return;
    const runId = started.value.runId;
    const deadline = Date.now() + 60_000;
    while (!pushes.slice(from).some((m) => m.kind === 'run-status' && m.runId === runId && m.status !== 'running')) {
      if (Date.now() > deadline) throw new Error('run did not end');
      await new Promise((r) => setTimeout(r, 50));
    }
    const mine = pushes.slice(from);
    // The passphrase given during the probe is remembered for this session: no new question.
    expect(mine.filter((m) => m.kind === 'prompt')).toEqual([]);
    expect(mine.find((m) => m.kind === 'run-status' && m.status !== 'running')).toMatchObject({ status: 'ok' });
    const batches = mine.filter((m): m is Extract<PushMessage, { kind: 'run-events' }> => m.kind === 'run-events');
    const seqs = batches.flatMap((b) => b.events.map((e) => e.seq));
    expect(seqs).toEqual(seqs.map((_, i) => i));
    // Batched: far fewer pushes than events.
    expect(batches.length).toBeLessThan(seqs.length / 3);
    expect(mine.some((m) => m.kind === 'progress' && m.stage === 'deploy')).toBe(true);
    expect(mine.some((m) => m.kind === 'progress' && m.fraction === 1)).toBe(true);
    const loaded = await store.load(runId);
    expect(loaded.listing.status).toBe('ok');
    // Secrets never reach disk: not in the data folder (runs, meta, hosts.json), not on the "host".
    for (const f of [...filesUnder(join(dir, 'data')), ...filesUnder(join(dir, 'remote', 'runs'))]) {
      expect(readFileSync(f).includes(PASSPHRASE), f).toBe(false);
    }
  });
});
