/**
 * Runs and sweeps on a Slurm cluster: a run is one batch job, a sweep one job array per card type
 * (one element per user count), submitted with sbatch on the login node over SSH. The agent reads
 * and writes on the cluster's shared filesystem; the login node tails each running element's log
 * exactly as a direct run is tailed (tailRun: the same reconnects, local sink and byte-identical
 * copy), while one squeue poll per cluster says where each job is in the queue.
 *
 * Life of a run: submitted → pending (with Slurm's reason) → running on a node → its log streams
 * → the agent's exit file ends the tail. A job that is requeued (scontrol requeue, preemption, a
 * node failure with requeue) starts again from the beginning in a new attempt folder; the follower
 * notices the restart count, keeps the earlier attempt's local log beside the run as
 * `attempt-<n>.events.jsonl`, and follows the new attempt from byte 0, so the run's events.jsonl
 * ends as a byte-for-byte copy of the attempt that finished. A job that ends without the agent's
 * exit (killed after the grace period, its node lost) gets an empty exit file from the follower,
 * so the tail drains what was written and stops; the job's state says what happened.
 *
 * Every Slurm command is an argv quoted by shell-quote.ts and sent over a connection from
 * HostService.connect, so host keys, prompts and jump hosts follow the same rules as any SSH call.
 * The local run folder holds meta.json (`slurm`: job id, run folder, attempt, options) and
 * slurm.json (the queue states seen and where each attempt ran: node and GPUs).
 */
import { existsSync, readFileSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { ClusterOptions, PushMessage, RunRequest, RunStarted, SweepRequest, SweepRow } from '../../../shared/api';
import { CodedError } from '../../../shared/result';
import { deployAgent, type DeployProgress } from '../deploy';
import { LOCAL_HOST, type HostService } from '../hosts';
import { agentRunArgs, newRunId, remoteRunDir, remoteRunName, tailRun, type RunScheduler, type TailResult } from '../runs';
import { checkRunId, type RunMeta, type RunStore } from '../run-store';
import { writeFileAtomic } from '../settings';
import { shellCommand, shellQuote } from '../shell-quote';
import { SshExec, type HostExec } from '../ssh/host-exec';
import type { ClusterStore } from './cluster-store';
import { jobScript, type JobElement } from './job-script';
import { mergeClusterOptions, sbatchArgv } from './options';
import { jobEnded, jobWaiting, queueText, QueueWatcher, type JobState } from './queue';

/** meta.json's `slurm`: what it takes to follow the job again after a restart of the app. */
export interface SlurmRunMeta {
  job_id: string;
  array_job_id?: string;
  array_task_id?: number;
  /** The run's folder on the shared filesystem (its attempts are attempt-<n>/ inside). */
  run_dir: string;
  /** The attempt being (or last) followed: Slurm's restart count. */
  attempt: number;
  options: ClusterOptions;
  submitted_at: string;
}

export interface SlurmRunsOptions {
  store: RunStore;
  hosts: HostService;
  clusters: ClusterStore;
  push?: (m: PushMessage) => void;
  reconnectWindowMs?: number;
}

export const attemptDir = (runDir: string, attempt: number): string => posix.join(runDir, `attempt-${attempt}`);

const DEFAULT_POLL_S = 5;

/** Writes the script into `dir` and submits it; resolves with the job id sbatch printed. */
export async function submitJob(exec: HostExec, dir: string, script: string, argv: string[]): Promise<string> {
  const file = posix.join(dir, 'job.sh');
  const cmd = [`mkdir -p ${shellQuote(dir)}`, `${shellCommand(['printf', '%s', script])} > ${shellQuote(file)}`, shellCommand(argv)].join(' && ');
  // The script goes in on stdin of `sh -s`: only two plain words meet the login shell.
  const r = await exec.exec('sh -s', cmd + '\n');
  const out = r.stdout.toString().trim().split('\n').pop() ?? '';
  const m = /^(\d+)(;\S+)?$/.exec(out);
  if (r.code !== 0 || !m) {
    const why = r.stderr.toString().trim().slice(-600) || out || `exit ${r.code}`;
    throw new CodedError(r.code === 127 ? 'not_found' : 'scheduler_error', r.code === 127 ? `sbatch was not found on ${exec.label}: is it a Slurm login node? (${why})` : `sbatch refused the job on ${exec.label}: ${why}`);
  }
  return m[1]!;
}

/** The run's end from the tail and the job's last state. */
function finalResult(r: TailResult, st: JobState | null, o: ClusterOptions, endedByFollower: boolean): TailResult {
  if (r.status === 'ok' || r.status === 'incomplete') return r;
  const kept = `${r.bytes} bytes kept`;
  const err = (code: string, message: string): TailResult => ({ ...r, status: 'error', error: { code, message: `${message}; ${kept}` } });
  switch (st?.state) {
    case 'CANCELLED':
      return { ...r, status: 'cancelled', error: null };
    case 'TIMEOUT':
      return err('slurm_timeout', `the job reached its time limit${o.timeLimit ? ` (--time=${o.timeLimit})` : ''}`);
    case 'NODE_FAIL':
    case 'BOOT_FAIL':
      return err('slurm_node_fail', `the job's node failed (${st.state}${st.nodes ? ` on ${st.nodes}` : ''})`);
    case 'OUT_OF_MEMORY':
      return err('slurm_out_of_memory', 'the job ran out of memory (OUT_OF_MEMORY)');
    case 'PREEMPTED':
      return err('slurm_preempted', 'the job was preempted and not requeued');
    case 'DEADLINE':
      return err('slurm_deadline', 'the job reached its deadline');
  }
  if (r.status === 'cancelled') return r;
  if (endedByFollower) return err('slurm_job_ended', `the job ended (${st ? st.state : 'it left the queue'}) before the agent recorded its exit status`);
  return r;
}

/** A job that ended before this attempt started. */
function neverRan(st: JobState | null): TailResult {
  const base = { bytes: 0, lastSeq: null, reconnects: 0 };
  if (st?.state === 'CANCELLED') return { ...base, status: 'cancelled', error: null };
  const why = st ? `${st.state}${st.reason ? `: ${st.reason}` : ''}` : 'the queue no longer knows it';
  return { ...base, status: 'error', error: { code: 'slurm_job_ended', message: `the job ended before it started (${why})` } };
}

/** slurm.json of a local run folder: the queue states seen and where each attempt ran. */
interface SlurmRecordData {
  job_id: string;
  states: Array<{ at: string; state: string; reason: string | null; nodes: string | null; restarts: number }>;
  /** Each attempt's placement.json (node, job ids, GPUs), by attempt number. */
  attempts: Record<string, unknown>;
}

class SlurmRecord {
  private data: SlurmRecordData;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    jobId: string,
  ) {
    this.data = { job_id: jobId, states: [], attempts: {} };
    // A resumed run adds to what was recorded before.
    try {
      const old = JSON.parse(readFileSync(file, 'utf8')) as Partial<SlurmRecordData>;
      if (old.job_id === jobId) this.data = { job_id: jobId, states: Array.isArray(old.states) ? old.states : [], attempts: old.attempts && typeof old.attempts === 'object' ? old.attempts : {} };
    } catch {
      /* none yet */
    }
  }

  private save(): void {
    const text = JSON.stringify(this.data, null, 2) + '\n';
    this.chain = this.chain.then(() => writeFileAtomic(this.file, text)).catch(() => undefined);
  }

  state(st: JobState): void {
    this.data.states.push({ at: new Date().toISOString(), state: st.state, reason: st.reason, nodes: st.nodes, restarts: st.restarts });
    this.save();
  }

  placement(attempt: number, p: unknown): void {
    this.data.attempts[String(attempt)] = p;
    this.save();
  }

  flushed(): Promise<void> {
    return this.chain;
  }
}

interface Followed {
  abort: AbortController;
  done: Promise<TailResult>;
}

export class SlurmRuns implements RunScheduler {
  private readonly active = new Map<string, Followed>();
  private readonly watchers = new Map<string, QueueWatcher>();
  /** Queue listeners of sweep rows, by run id. */
  private readonly onQueue = new Map<string, (st: JobState | null) => void>();

  constructor(readonly o: SlurmRunsOptions) {}

  private progress(runId: string, stage: string, fraction: number | null, etaS: number | null, message: string): void {
    this.o.push?.({ kind: 'progress', runId, stage, fraction, etaS, message });
  }

  /** Local never is (a sweep's --slurm-* options apply to its other hosts). */
  async handles(req: RunRequest): Promise<boolean> {
    if (req.host === LOCAL_HOST) return false;
    if (req.slurm) return true;
    return !!req.host && (await this.o.clusters.get(req.host)) !== null;
  }

  owns(meta: RunMeta): boolean {
    return typeof meta.slurm === 'object' && meta.slurm !== null;
  }

  wait(runId: string): Promise<TailResult> | null {
    return this.active.get(runId)?.done ?? null;
  }

  private watcher(host: string, o: ClusterOptions): QueueWatcher {
    const ms = (o.pollSeconds ?? DEFAULT_POLL_S) * 1000;
    let w = this.watchers.get(host);
    if (!w) {
      w = new QueueWatcher(() => this.o.hosts.connect(host), ms);
      this.watchers.set(host, w);
    }
    w.setPollMs(ms);
    return w;
  }

  /** Connects to the login node and puts the agent on the shared filesystem. */
  private async prepare(host: string, o: ClusterOptions, onDeploy?: (p: DeployProgress) => void): Promise<{ exec: SshExec; agentDir: string; root: string }> {
    const exec = await this.o.hosts.connect(host);
    try {
      if (!(exec instanceof SshExec)) throw new CodedError('invalid_argument', `${host} is not reached over SSH: a Slurm cluster is the ssh alias of its login node`, { field: 'host' });
      const d = await deployAgent(exec.session, await this.o.hosts.agentBundle(), { root: o.sharedDir ?? this.o.hosts.opts.remoteRoot, onProgress: onDeploy });
      return { exec, agentDir: d.agentDir, root: d.root };
    } catch (e) {
      exec.close();
      throw e;
    }
  }

  private deployProgress(runId: string): (p: DeployProgress) => void {
    return (p) => this.progress(runId, 'deploy', p.totalBytes ? p.uploadedBytes / p.totalBytes : null, null, p.reused ? 'agent already on the shared filesystem' : `uploading the agent: ${p.uploadedBytes}/${p.totalBytes} bytes`);
  }

  async start(req: RunRequest, options: { runId?: string } = {}): Promise<RunStarted> {
    const o = mergeClusterOptions(await this.o.clusters.get(req.host), req.slurm);
    const agentArgs = agentRunArgs(req.workload ?? {});
    const { store } = this.o;
    const runId = options.runId ?? newRunId(req.host, req.workload?.users);
    checkRunId(runId);
    const python = await this.o.hosts.pythonFor(req.host, req.python);
    const name = typeof req.name === 'string' && req.name.trim() ? req.name.trim().slice(0, 200) : `${req.host} (Slurm) ${req.workload?.model ?? ''} ${req.workload?.users ?? ''}u`.replace(/\s+/g, ' ').trim();
    const meta: RunMeta = { id: runId, name, host: req.host, status: 'running', createdAt: new Date().toISOString(), python, workload: req.workload, agent_args: agentArgs };
    await store.writeMeta(meta);
    this.o.push?.({ kind: 'run-status', runId, status: 'running', message: 'submitting to Slurm' });
    let runDir: string;
    try {
      this.progress(runId, 'connect', null, null, `connecting to ${req.host}`);
      const p = await this.prepare(req.host, o, this.deployProgress(runId));
      try {
        runDir = remoteRunDir(p.root, remoteRunName(runId, options.runId !== undefined));
        const script = jobScript({ python, agentDir: p.agentDir, setup: o.setup, sbatch: o.sbatch, elements: [{ runDir, agentArgs }], array: false });
        this.progress(runId, 'submit', null, null, `sbatch on ${req.host}`);
        const argv = sbatchArgv(o, { jobName: `kvscope-${runId}`, output: posix.join(runDir, 'slurm-%j.out'), chdir: runDir, script: posix.join(runDir, 'job.sh'), gpuType: o.gpuTypes?.[0] ?? null });
        const jobId = await submitJob(p.exec, runDir, script, argv);
        const slurm: SlurmRunMeta = { job_id: jobId, run_dir: runDir, attempt: 0, options: o, submitted_at: new Date().toISOString() };
        Object.assign(meta, { remote_dir: attemptDir(runDir, 0), slurm, tail_pid: process.pid });
        await store.writeMeta(meta);
      } finally {
        p.exec.close();
      }
    } catch (e) {
      const ce = e instanceof CodedError ? e : new CodedError('internal', (e as Error).message);
      await store.writeMeta({ ...meta, status: 'error', endedAt: new Date().toISOString(), error: { code: ce.code, message: ce.message } });
      this.o.push?.({ kind: 'run-status', runId, status: 'error', message: ce.message });
      throw ce;
    }
    this.follow(runId);
    return { runId, remoteDir: runDir };
  }

  /**
   * A sweep's rows on one cluster: one job array per card type (the first type takes the rows it
   * was given, each further type adds a copy of them), each element a run of its own. Never
   * throws: a refused submission marks its rows.
   */
  async sweepHost(host: string, req: SweepRequest, rows: SweepRow[], emit: () => void): Promise<void> {
    const mine = rows.filter((r) => r.host === host);
    const failRows = (rs: SweepRow[], e: unknown) => {
      for (const r of rs) if (r.status === 'pending' && !r.runId) Object.assign(r, { status: 'error', error: (e as Error).message });
      emit();
    };
    let o: ClusterOptions;
    let python: string;
    try {
      o = mergeClusterOptions(await this.o.clusters.get(host), req.slurm);
      // Every element's options are checked before anything is submitted.
      for (const r of mine) agentRunArgs({ ...req.workload, users: r.users });
      python = await this.o.hosts.pythonFor(host, req.python);
    } catch (e) {
      return failRows(mine, e);
    }
    const types = o.gpuTypes?.length ? o.gpuTypes : [null];
    const byType = types.map((t, i) => (i === 0 ? mine : mine.map((r) => ({ ...r }))).map((r) => Object.assign(r, { gpu_type: t })));
    for (const extra of byType.slice(1)) rows.push(...extra);
    emit();
    let p: Awaited<ReturnType<SlurmRuns['prepare']>>;
    try {
      p = await this.prepare(host, o);
    } catch (e) {
      return failRows(byType.flat(), e);
    }
    const stamp = newRunId('sweep');
    try {
      for (let t = 0; t < types.length; t++) {
        const type = types[t]!;
        const rs = byType[t]!;
        const typeOptions: ClusterOptions = { ...o, gpuTypes: type ? [type] : undefined };
        try {
          const runs = rs.map((r) => {
            const runId = newRunId(host, r.users);
            const runDir = remoteRunDir(p.root, runId);
            return { row: r, runId, element: { runDir, agentArgs: agentRunArgs({ ...req.workload, users: r.users }) } satisfies JobElement };
          });
          const dir = posix.join(p.root, 'sweeps', `${stamp}${type ? `-${type}` : ''}`);
          const script = jobScript({ python, agentDir: p.agentDir, setup: o.setup, sbatch: o.sbatch, elements: runs.map((x) => x.element), array: true });
          const argv = sbatchArgv(typeOptions, { jobName: `kvscope-sweep-${stamp}`, output: posix.join(dir, 'slurm-%A_%a.out'), chdir: dir, script: posix.join(dir, 'job.sh'), gpuType: type, array: { count: runs.length, limit: o.arrayLimit } });
          const arrayId = await submitJob(p.exec, dir, script, argv);
          const submitted = new Date().toISOString();
          for (const [i, x] of runs.entries()) {
            const slurm: SlurmRunMeta = { job_id: `${arrayId}_${i}`, array_job_id: arrayId, array_task_id: i, run_dir: x.element.runDir, attempt: 0, options: typeOptions, submitted_at: submitted };
            const name = `${req.name ?? 'sweep'} ${host}${type ? ` ${type}` : ''} ${x.row.users}u`;
            await this.o.store.writeMeta({ id: x.runId, name, host, status: 'running', createdAt: submitted, python, workload: { ...req.workload, users: x.row.users }, agent_args: x.element.agentArgs, remote_dir: attemptDir(x.element.runDir, 0), slurm, tail_pid: process.pid });
            Object.assign(x.row, { runId: x.runId, job_id: slurm.job_id });
            this.onQueue.set(x.runId, (st) => {
              const next = st && !jobEnded(st) && !jobWaiting(st) ? 'running' : x.row.status;
              if (next !== x.row.status) {
                x.row.status = next;
                emit();
              }
            });
            this.follow(x.runId);
          }
          emit();
        } catch (e) {
          failRows(rs, e);
        }
      }
    } finally {
      p.exec.close();
    }
    await Promise.all(
      byType.flat().map(async (row) => {
        const done = row.runId ? this.wait(row.runId) : null;
        if (!done || !row.runId) return;
        const r = await done;
        const listing = (await this.o.store.list()).find((l) => l.id === row.runId);
        Object.assign(row, { status: r.status, error: r.error?.message ?? null, e2e_ns: listing?.e2e_ns ?? null, ttft_ns_mean: listing?.ttft_ns_mean ?? null });
        emit();
      }),
    );
  }

  private follow(runId: string): void {
    const abort = new AbortController();
    const done = this.followRun(runId, abort.signal).then(
      async (r) => {
        this.active.delete(runId);
        this.onQueue.delete(runId);
        this.o.push?.({ kind: 'run-status', runId, status: r.status, message: r.error?.message });
        await this.o.store.ensureIndex(runId);
        return r;
      },
      async (e: Error) => {
        this.active.delete(runId);
        this.onQueue.delete(runId);
        const meta = await this.o.store.readMeta(runId).catch(() => null);
        if (meta) await this.o.store.writeMeta({ ...meta, status: 'incomplete', error: { code: 'internal', message: e.message } }).catch(() => undefined);
        this.o.push?.({ kind: 'run-status', runId, status: 'incomplete', message: e.message });
        return { status: 'incomplete' as const, error: { code: 'internal', message: e.message }, bytes: 0, lastSeq: null, reconnects: 0 };
      },
    );
    this.active.set(runId, { abort, done });
  }

  /**
   * Resolves with the job's state once `until` holds (null: aborted, or the queue forgot the job).
   * Rejects when the queue cannot be asked: at once for a refused host key or credentials (asking
   * again cannot help), else after the reconnect window (default 10 min) of failed polls.
   */
  private waitFor(w: QueueWatcher, jobId: string, signal: AbortSignal, onState: (st: JobState | null, error?: Error) => void, until: (st: JobState | null) => boolean): Promise<JobState | null> {
    const window = this.o.reconnectWindowMs ?? 10 * 60_000;
    return new Promise((resolve, reject) => {
      if (signal.aborted) return resolve(null);
      let failingSince: number | null = null;
      const settle = (f: () => void) => {
        off();
        signal.removeEventListener('abort', onAbort);
        f();
      };
      const off = w.watch(jobId, (st, error) => {
        onState(st, error);
        if (error) {
          failingSince ??= Date.now();
          const fatal = error instanceof CodedError && ['host_key_changed', 'host_key_unknown', 'auth_failed'].includes(error.code);
          if (fatal || Date.now() - failingSince > window) settle(() => reject(error));
          return;
        }
        failingSince = null;
        if (until(st)) settle(() => resolve(st));
      });
      const onAbort = () => settle(() => resolve(null));
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private async followRun(runId: string, signal: AbortSignal): Promise<TailResult> {
    const { store } = this.o;
    const meta = await store.readMeta(runId);
    const s = meta.slurm as SlurmRunMeta;
    const o = s.options ?? {};
    // Followed by this process from now on, even while the job waits in the queue (markOrphanedRuns).
    if (meta.status !== 'running' || meta.tail_pid !== process.pid) await store.writeMeta({ ...meta, status: 'running', tail_pid: process.pid });
    const w = this.watcher(meta.host, o);
    const python = typeof meta.python === 'string' ? meta.python : await this.o.hosts.pythonFor(meta.host);
    const record = new SlurmRecord(join(store.runDir(runId), 'slurm.json'), s.job_id);
    let attempt = s.attempt ?? 0;
    let said = '';
    const onState = (st: JobState | null, error?: Error) => {
      const text = error ? `cannot ask the queue on ${meta.host} (${error.message}); asking again` : queueText(st);
      if (text !== said) {
        said = text;
        if (st) record.state(st);
        this.progress(runId, 'queue', null, null, `${s.job_id} ${text}`);
      }
      if (!error) this.onQueue.get(runId)?.(st);
    };
    // Stopped from here (app quit) or unable to ask: the job goes on; the run can be resumed.
    const detached = async (error: TailResult['error'] = null): Promise<TailResult> => {
      const m = await store.readMeta(runId);
      await store.writeMeta({ ...m, status: 'incomplete', tail_pid: undefined, ...(error ? { error } : {}) });
      return { status: 'incomplete', error, bytes: 0, lastSeq: null, reconnects: 0 };
    };
    try {
      for (;;) {
        let st: JobState | null;
        try {
          st = await this.waitFor(w, s.job_id, signal, onState, (x) => jobEnded(x) || x!.restarts > attempt || !jobWaiting(x!));
        } catch (e) {
          const ce = e instanceof CodedError ? e : new CodedError('ssh_error', (e as Error).message);
          return await detached({ code: ce.code, message: `cannot follow Slurm job ${s.job_id} on ${meta.host}: ${ce.message}; the job goes on, resume once this is fixed` });
        }
        if (signal.aborted) return await detached();
        if (st && st.restarts > attempt) {
          attempt = await this.newAttempt(runId, attempt, st.restarts);
          continue;
        }
        const dir = attemptDir(s.run_dir, attempt);
        if (jobEnded(st)) {
          // A short job can run and end between two polls: its log is then there to fetch.
          const ran = await w.run((exec) => exec.exec(shellCommand(['test', '-d', dir])));
          if (ran.code !== 0) return await this.finish(runId, neverRan(st));
        } else {
          // The tail waits in the folder for the log (the job's script makes the same folder).
          await w.run((exec) => exec.exec(shellCommand(['mkdir', '-p', dir])));
        }
        const tail = await this.tailAttempt(runId, meta.host, python, s.job_id, dir, attempt, w, signal, onState, record);
        if (signal.aborted) return tail.result;
        if (tail.result.status === 'ok') return await this.finish(runId, tail.result);
        if (tail.result.status === 'incomplete') return tail.result;
        const now = (await w.now([s.job_id]).catch(() => new Map<string, JobState>())).get(s.job_id) ?? null;
        if (now && now.restarts > attempt) {
          attempt = await this.newAttempt(runId, attempt, now.restarts);
          continue;
        }
        return await this.finish(runId, finalResult(tail.result, now, o, tail.endedByFollower));
      }
    } finally {
      await record.flushed();
    }
  }

  /** Follows one attempt's log to its exit file; ends it for the tail if the job ends without one. */
  private async tailAttempt(
    runId: string,
    host: string,
    python: string,
    jobId: string,
    dir: string,
    attempt: number,
    w: QueueWatcher,
    signal: AbortSignal,
    onState: (st: JobState | null, error?: Error) => void,
    record: SlurmRecord,
  ): Promise<{ result: TailResult; endedByFollower: boolean }> {
    let tailDone = false;
    let endedSince: number | null = null;
    let endedByFollower = false;
    let placed = false;
    const place = () => {
      if (placed) return;
      placed = true;
      void w
        .run((exec) => exec.exec(shellCommand(['cat', posix.join(dir, 'placement.json')])))
        .then((r) => {
          if (r.code === 0) record.placement(attempt, JSON.parse(r.stdout.toString()));
          else placed = false;
        })
        .catch(() => (placed = false));
    };
    const graceMs = 2 * w.period;
    const off = w.watch(jobId, (st, error) => {
      onState(st, error);
      if (tailDone || error) return;
      if (!jobEnded(st) && !(st && st.restarts > attempt)) {
        endedSince = null;
        return;
      }
      // The job is over (or restarted) but the tail has not seen the agent's exit: after a grace
      // period for the script's own exit file, write an empty one so the tail drains and stops.
      endedSince ??= Date.now();
      if (Date.now() - endedSince < graceMs) return;
      const q = shellQuote(dir);
      void w
        .run((exec) => exec.exec(`cd ${q} && if [ ! -e exit ]; then : > exit.ended.tmp && mv exit.ended.tmp exit && echo marked; fi`))
        .then((r) => {
          if (r.stdout.toString().includes('marked')) endedByFollower = true;
        })
        .catch(() => undefined);
    });
    try {
      const result = await tailRun({
        store: this.o.store,
        agentSourceDir: this.o.hosts.opts.agentSourceDir,
        runId,
        remoteDir: dir,
        python,
        connect: () => this.o.hosts.connect(host),
        signal,
        reconnectWindowMs: this.o.reconnectWindowMs,
        liveness: 'scheduler',
        onEvents: (events) => {
          place();
          this.o.push?.({ kind: 'run-events', runId, events });
        },
        onProgress: (p) => this.progress(runId, p.stage, p.fraction, p.etaS, p.message),
      });
      tailDone = true;
      place();
      return { result, endedByFollower };
    } finally {
      tailDone = true;
      off();
    }
  }

  /** The job was requeued: the attempt that ran keeps its local copy, the next starts from byte 0. */
  private async newAttempt(runId: string, from: number, to: number): Promise<number> {
    const runDir = this.o.store.runDir(runId);
    const events = join(runDir, 'events.jsonl');
    if (existsSync(events)) await rename(events, join(runDir, `attempt-${from}.events.jsonl`));
    const meta = await this.o.store.readMeta(runId);
    const s = meta.slurm as SlurmRunMeta;
    const next: RunMeta = { ...meta, status: 'running', remote_dir: attemptDir(s.run_dir, to), slurm: { ...s, attempt: to }, bytes_received: 0, tail_pid: process.pid };
    delete next.last_seq;
    await this.o.store.writeMeta(next);
    this.o.push?.({ kind: 'run-status', runId, status: 'running', message: `Slurm requeued job ${s.job_id}: attempt ${to + 1} runs the benchmark again from the start`, restarted: true });
    return to;
  }

  private async finish(runId: string, r: TailResult): Promise<TailResult> {
    const meta = await this.o.store.readMeta(runId);
    const next: RunMeta = { ...meta, status: r.status, endedAt: new Date().toISOString(), tail_pid: undefined };
    if (r.error) next.error = r.error;
    else delete next.error;
    await this.o.store.writeMeta(next);
    return r;
  }

  /** scancel; the follower then collects the agent's last lines and the job's end. */
  async cancel(runId: string): Promise<void> {
    const meta = await this.o.store.readMeta(runId);
    const s = meta.slurm as SlurmRunMeta;
    const w = this.watcher(meta.host, s.options ?? {});
    const r = await w.run((exec) => exec.exec(shellCommand(['scancel', s.job_id])));
    if (r.code !== 0) throw new CodedError('scheduler_error', `scancel ${s.job_id} failed on ${meta.host} (exit ${r.code}): ${r.stderr.toString().trim().slice(-300)}`);
    if (!this.active.has(runId)) await this.resume(runId);
  }

  async resume(runId: string): Promise<RunStarted> {
    const meta = await this.o.store.readMeta(runId);
    const s = meta.slurm as SlurmRunMeta;
    if (!this.active.has(runId)) this.follow(runId);
    return { runId, remoteDir: s.run_dir };
  }

  async detachAll(): Promise<void> {
    const all = [...this.active.values()];
    for (const a of all) a.abort.abort();
    await Promise.all(all.map((a) => a.done));
    for (const w of this.watchers.values()) w.stop();
  }

}
