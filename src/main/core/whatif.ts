/**
 * What-if (docs/whatif.md): recorded runs replayed on another card by the agent's simulator
 * (`python3 -m kvscope_agent whatif`, standard library only), run on this machine the way the app
 * runs its other local agent commands. The CLI (`kvscope whatif`) and the window's What-if action
 * both come through here; the window's imports the simulated runs into the library, marked
 * simulated, so every view opens them.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunListing, WhatIfProfile, WhatIfRequest, WhatIfResult } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { importRun } from './runs-library';
import type { RunStore } from './run-store';

export interface LocalAgent {
  /** The folder holding kvscope_agent (resources/agent). */
  agentDir: string;
  python: string;
  timeoutMs?: number;
}

/** One agent command on this machine: its exit code and output (stderr capped at 64 KiB). */
export async function runLocalAgent(agent: LocalAgent, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(agent.python, ['-m', 'kvscope_agent', ...args], {
      env: { ...process.env, PYTHONPATH: agent.agentDir, PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 64 * 1024) err += b.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), agent.timeoutMs ?? 600_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CodedError('not_found', `cannot run ${agent.python} for the agent (${e.message}); set the Python for "local" in Settings`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: err });
    });
  });
}

function agentFailure(what: string, r: { code: number | null; stderr: string }): CodedError {
  const why = r.stderr.trim().split('\n').slice(-6).join(' | ') || `exit ${r.code}`;
  return new CodedError(r.code === 2 ? 'invalid_argument' : 'bad_run', `${what}: ${why}`);
}

/** The simulator's built-in GPU profiles, each number with its source. */
export async function whatIfProfiles(agent: LocalAgent): Promise<WhatIfProfile[]> {
  const r = await runLocalAgent(agent, ['whatif', '--list-profiles', '--json']);
  if (r.code !== 0) throw agentFailure('the what-if profiles could not be listed', r);
  return JSON.parse(r.stdout) as WhatIfProfile[];
}

/** The agent's whatif.json (the fields the app reads). */
interface WhatIfDoc {
  label: string;
  profile: { id: string; name: string };
  source: { gpu: string | null; model: string | null };
  gpu_pool: { blocks: number; bytes: number; users_it_holds: number; note: string };
  calibration: {
    self_check: Array<{ users: number; e2e_ns: { measured: number; simulated: number }; ttft_ns_mean: { measured: number; simulated: number } }>;
  };
  /** The calibration's held factors that move this prediction (name → why); absent from agents before it was added. */
  uncertain?: Record<string, string>;
  points: Array<{ users: number; run: string | null; range?: { e2e_ns: [number, number]; ttft_ns_mean: [number, number] } | null }>;
}

/** User counts as the agent takes them: "2..16", "2,4,8" (checked again there). */
export function checkUsersSpec(users: unknown): string | undefined {
  if (users === undefined || users === null || users === '') return undefined;
  const s = String(users).replace(/\s+/g, '');
  if (!/^\d+(\.\.\d+)?(,\d+(\.\.\d+)?)*$/.test(s)) throw new CodedError('invalid_argument', `users: expected counts like 2..16 or 2,4,8, not ${JSON.stringify(users)}`, { field: 'users' });
  return s;
}

const PROFILE_RE = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * The window's What-if: library runs (one model on one card: a run or a sweep) replayed on a
 * built-in profile; each simulated users point becomes a library run named and hosted as
 * simulated, whose run.start carries `simulated` (profile, source runs, calibration).
 */
export async function runWhatIf(store: RunStore, agent: LocalAgent, request: WhatIfRequest): Promise<WhatIfResult> {
  const ids = Array.isArray(request?.runIds) ? request.runIds.map(String) : [];
  if (ids.length === 0) throw new CodedError('invalid_argument', 'runIds: choose the measured runs to replay (a run, or a sweep of one model)', { field: 'runIds' });
  const profile = String(request?.profile ?? '');
  if (!PROFILE_RE.test(profile)) throw new CodedError('invalid_argument', `profile: not a profile id: ${JSON.stringify(profile)}`, { field: 'profile' });
  const users = checkUsersSpec(request?.users);
  const listed = await store.list();
  const sources: RunListing[] = ids.map((id) => {
    const r = listed.find((x) => x.id === id);
    if (!r) throw new CodedError('not_found', `no run ${id}`);
    if (r.simulated) throw new CodedError('invalid_argument', `${r.name} is itself simulated: replay measured runs`);
    return r;
  });
  const models = new Set(sources.map((r) => r.model));
  if (models.size > 1) throw new CodedError('invalid_argument', `the runs are of different models (${[...models].join(', ')}): a what-if replays one model's runs`);
  const logs = await Promise.all(ids.map((id) => store.logPath(id)));
  const scratch = await mkdtemp(join(tmpdir(), 'kvscope-whatif-'));
  try {
    const out = join(scratch, 'out');
    const args = ['whatif', ...logs, '--profile', profile, '--out', out, '--json', ...(users ? ['--users', users] : [])];
    const r = await runLocalAgent(agent, args);
    if (r.code !== 0) throw agentFailure('the what-if did not run', r);
    const doc = JSON.parse(r.stdout) as WhatIfDoc;
    const base = sources.length === 1 ? sources[0]!.name : `${sources[0]!.model ?? 'runs'} (${sources.length} runs)`;
    const made: string[] = [];
    for (const p of doc.points) {
      const folder = join(out, `users-${p.users}`);
      if (!(await stat(folder).catch(() => null))?.isDirectory()) continue;
      const listing = await importRun(store, { path: folder });
      const meta = await store.readMeta(listing.id);
      const name = `SIMULATED on ${doc.profile.name}: ${base}, users ${p.users}`.slice(0, 200);
      await store.writeMeta({ ...meta, name, host: 'simulated', simulated_from: ids });
      made.push(listing.id);
    }
    return {
      runIds: made,
      gpuPool: { blocks: doc.gpu_pool.blocks, bytes: doc.gpu_pool.bytes, usersItHolds: doc.gpu_pool.users_it_holds, note: doc.gpu_pool.note },
      selfCheck: doc.calibration.self_check.map((c) => ({
        users: c.users,
        e2eError: c.e2e_ns.measured ? c.e2e_ns.simulated / c.e2e_ns.measured - 1 : null,
        ttftError: c.ttft_ns_mean.measured ? c.ttft_ns_mean.simulated / c.ttft_ns_mean.measured - 1 : null,
      })),
      uncertain: Object.entries(doc.uncertain ?? {}).map(([factor, why]) => ({ factor, why })),
      ranges: doc.points.flatMap((p) => (p.range ? [{ users: p.users, e2eNs: p.range.e2e_ns, ttftNsMean: p.range.ttft_ns_mean }] : [])),
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
