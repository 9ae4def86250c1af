/**
 * Runs for the app and the CLI: start (launch.ts), follow (tail.ts) through reconnects, cancel,
 * resume, and after a crash mark what no process follows any more. Runs on a batch scheduler's
 * hosts go through a RunScheduler (core/slurm) instead of the detached launcher.
 */
import { readdir } from 'node:fs/promises';
import type { PushMessage, RunRequest, RunStarted, SweepRequest, SweepRow } from '../../../shared/api';
import { CodedError } from '../../../shared/result';
import type { HostService } from '../hosts';
import { checkPythonPath } from '../python-path';
import { checkRunId, type RunMeta, type RunStore } from '../run-store';
import type { HostExec } from '../ssh/host-exec';
import { agentRunArgs, cancelDetached, launchDetached, newRunId, remoteRunDir, remoteRunName } from './launch';
import { tailRun, type TailResult } from './tail';

/** The run's folder on its host, from its meta.json. */
function remoteDirOf(meta: RunMeta, what: string): string {
  if (typeof meta.remote_dir !== 'string' || !meta.remote_dir) throw new CodedError('invalid_argument', `${what}: run ${meta.id} never started on a host`);
  return meta.remote_dir;
}

/** Statuses of a run whose log ended with its run.end: nothing is left to follow. */
const ENDED = new Set<RunMeta['status']>(['ok', 'cancelled']);

interface ActiveRun {
  runId: string;
  host: string;
  remoteDir: string;
  pgid: number | null;
  abort: AbortController;
  done: Promise<TailResult>;
}

export interface RunManagerOptions {
  store: RunStore;
  hosts: HostService;
  push?: (m: PushMessage) => void;
  reconnectWindowMs?: number;
  cancelGraceMs?: number;
  /** Runs on hosts that are batch schedulers (Slurm login nodes) go through it (core/slurm). */
  scheduler?: RunScheduler;
}

/** Where runs on a scheduled host go instead of the detached launcher (core/slurm/slurm-runs.ts). */
export interface RunScheduler {
  /** Whether this request is for the scheduler (its host is a cluster, or it carries options). */
  handles(req: RunRequest): Promise<boolean>;
  /** Whether a stored run was made by the scheduler. */
  owns(meta: RunMeta): boolean;
  start(req: RunRequest, options: { runId?: string }): Promise<RunStarted>;
  /** The run's end, while it is followed here (null otherwise). */
  wait(runId: string): Promise<TailResult> | null;
  cancel(runId: string): Promise<void>;
  resume(runId: string): Promise<RunStarted>;
  detachAll(): Promise<void>;
  /** One sweep's rows on one scheduled host (core/sweep.ts); rows may be added (one per card type). */
  sweepHost(host: string, req: SweepRequest, rows: SweepRow[], emit: () => void): Promise<void>;
}

/**
 * Starts, follows, cancels and resumes runs for the app and the CLI. Every state change lands in
 * the run's meta.json first, so a crash of this process leaves a readable, resumable run.
 */
export class RunManager {
  private readonly active = new Map<string, ActiveRun>();
  /** How each run followed by this manager last ended (what `wait` answers once it is no longer active). */
  private readonly ended = new Map<string, TailResult>();

  constructor(readonly o: RunManagerOptions) {}

  private progress(runId: string, stage: string, fraction: number | null, etaS: number | null, message: string): void {
    this.o.push?.({ kind: 'progress', runId, stage, fraction, etaS, message });
  }

  /**
   * Resolves when the run has ended (for the CLI and sweeps), also for a run whose following
   * ended just before the call (a cancel collects run.end at once).
   */
  wait(runId: string): Promise<TailResult> {
    const scheduled = this.o.scheduler?.wait(runId);
    if (scheduled) return scheduled;
    const a = this.active.get(runId);
    if (a) return a.done;
    const ended = this.ended.get(runId);
    if (ended) return Promise.resolve(ended);
    throw new CodedError('not_found', `run ${runId} is not being followed`);
  }

  /** `options.runId` names the local run folder (the CLI's --out); default: a fresh id. */
  async start(req: RunRequest, options: { runId?: string } = {}): Promise<RunStarted> {
    if (!req || typeof req.host !== 'string' || !req.host) throw new CodedError('invalid_argument', 'a run needs a host', { field: 'host' });
    if (this.o.scheduler && (await this.o.scheduler.handles(req))) return this.o.scheduler.start(req, options);
    const agentArgs = agentRunArgs(req.workload ?? {});
    const { store, hosts } = this.o;
    const runId = options.runId ?? newRunId(req.host, req.workload?.users);
    checkRunId(runId);
    const python = await hosts.pythonFor(req.host, req.python);
    const name = typeof req.name === 'string' && req.name.trim() ? req.name.trim().slice(0, 200) : `${req.host} ${req.workload?.model ?? ''} ${req.workload?.users ?? ''}u`.replace(/\s+/g, ' ').trim();
    const meta: RunMeta = { id: runId, name, host: req.host, status: 'running', createdAt: new Date().toISOString(), python, workload: req.workload, agent_args: agentArgs };
    await store.writeMeta(meta);
    this.o.push?.({ kind: 'run-status', runId, status: 'running', message: 'connecting' });
    let remoteDir: string;
    let pgid: number;
    let exec: HostExec | undefined;
    try {
      this.progress(runId, 'connect', null, null, `connecting to ${req.host}`);
      const prepared = await hosts.prepare(req.host, (p) =>
        this.progress(runId, 'deploy', p.totalBytes ? p.uploadedBytes / p.totalBytes : null, null, p.reused ? 'agent already on the host' : `uploading the agent: ${p.uploadedBytes}/${p.totalBytes} bytes`),
      );
      exec = prepared.exec;
      remoteDir = remoteRunDir(prepared.root, remoteRunName(runId, options.runId !== undefined));
      this.progress(runId, 'start', null, null, `starting the agent in ${remoteDir}`);
      pgid = await launchDetached({ exec, python, agentDir: prepared.agentDir, remoteDir, agentArgs });
      Object.assign(meta, { remote_dir: remoteDir, remote_pgid: pgid, agent_dir: prepared.agentDir });
      await store.writeMeta(meta);
    } catch (e) {
      // A launch that failed after the connection opened must not leave it open: the CLI would
      // print the error and then never exit (its event loop held by the idle connection).
      exec?.close();
      const ce = e instanceof CodedError ? e : new CodedError('internal', (e as Error).message);
      await store.writeMeta({ ...meta, status: 'error', endedAt: new Date().toISOString(), error: { code: ce.code, message: ce.message } });
      this.o.push?.({ kind: 'run-status', runId, status: 'error', message: ce.message });
      throw ce;
    }
    this.follow(runId, req.host, remoteDir, python, pgid, exec);
    return { runId, remoteDir };
  }

  private follow(runId: string, host: string, remoteDir: string, python: string, pgid: number | null, initial?: HostExec): ActiveRun {
    const abort = new AbortController();
    const done = tailRun({
      store: this.o.store,
      agentSourceDir: this.o.hosts.opts.agentSourceDir,
      runId,
      remoteDir,
      python,
      pgid,
      initial,
      connect: () => this.o.hosts.connect(host),
      signal: abort.signal,
      reconnectWindowMs: this.o.reconnectWindowMs,
      onEvents: (events) => this.o.push?.({ kind: 'run-events', runId, events }),
      onProgress: (p) => this.progress(runId, p.stage, p.fraction, p.etaS, p.message),
    }).then(
      async (r) => {
        this.active.delete(runId);
        this.ended.set(runId, r);
        this.o.push?.({ kind: 'run-status', runId, status: r.status, message: r.error?.message });
        await this.o.store.ensureIndex(runId);
        return r;
      },
      (e: Error) => {
        this.active.delete(runId);
        const r: TailResult = { status: 'incomplete', error: { code: 'internal', message: e.message }, bytes: 0, lastSeq: null, reconnects: 0 };
        this.ended.set(runId, r);
        this.o.push?.({ kind: 'run-status', runId, status: 'incomplete', message: e.message });
        return r;
      },
    );
    const a: ActiveRun = { runId, host, remoteDir, pgid, abort, done };
    this.active.set(runId, a);
    return a;
  }

  /**
   * The meta.json of a run started on this machine, which says where it lives on its host; refuses
   * a run that was imported (a run file is someone else's record: nothing in it is run or
   * followed, on a host or through a scheduler) or that never started on a host.
   */
  async followable(runId: string, what: string): Promise<RunMeta> {
    const meta = await this.o.store.readMeta(runId);
    if (meta.imported_from !== undefined) {
      throw new CodedError('unsupported', `${what}: ${runId} was imported from ${String(meta.imported_from)}; an imported run is a finished record and is never followed on a host`);
    }
    if (typeof meta.host !== 'string' || !meta.host) throw new CodedError('invalid_argument', `${what}: run ${runId} never started on a host`);
    return meta;
  }

  /** TERM to the run's process group, KILL after the grace period; the tail then collects run.end. */
  async cancel(runId: string): Promise<void> {
    const meta = await this.followable(runId, 'cancel');
    if (this.o.scheduler?.owns(meta)) return this.o.scheduler.cancel(runId);
    const remoteDir = remoteDirOf(meta, 'cancel');
    // A run followed now gets its run.end through its tail; one that is not (after a restart) is
    // followed once more below, unless its log already ended.
    const followed = this.active.has(runId);
    const exec = await this.o.hosts.connect(meta.host);
    try {
      await cancelDetached(exec, remoteDir, typeof meta.remote_pgid === 'number' ? meta.remote_pgid : null, this.o.cancelGraceMs ?? 5000);
    } finally {
      exec.close();
    }
    // Not followed here (e.g. after a restart): fetch the rest so the local copy ends with run.end.
    if (!followed && !ENDED.has(meta.status)) await this.resume(runId);
  }

  /**
   * Follows a run again from its last stored byte (an incomplete run: its follower was killed, the
   * app crashed, the link was down too long, the local disk filled). The tail re-reads the host's
   * log from exactly the local copy's length, so the copy ends byte-identical to the host's.
   */
  async resume(runId: string): Promise<RunStarted> {
    const a = this.active.get(runId);
    if (a) return { runId, remoteDir: a.remoteDir };
    const meta = await this.followable(runId, 'resume');
    if (ENDED.has(meta.status)) throw new CodedError('invalid_argument', `resume: run ${runId} already ended (${meta.status}); its log is complete`);
    if (this.o.scheduler?.owns(meta)) return this.o.scheduler.resume(runId);
    const remoteDir = remoteDirOf(meta, 'resume');
    const python = checkPythonPath(typeof meta.python === 'string' ? meta.python : await this.o.hosts.pythonFor(meta.host));
    this.follow(runId, meta.host, remoteDir, python, typeof meta.remote_pgid === 'number' ? meta.remote_pgid : null);
    return { runId, remoteDir };
  }

  /** Stops following every run (app quit); the runs go on and can be resumed. */
  async detachAll(): Promise<void> {
    const all = [...this.active.values()];
    for (const a of all) a.abort.abort();
    await Promise.all([...all.map((a) => a.done), this.o.scheduler?.detachAll()]);
  }
}

/**
 * Runs left "running" by a process that is gone (an app crash) are marked incomplete, so the
 * library says so and offers resume. A run whose tailing process is still alive is left alone.
 */
export async function markOrphanedRuns(store: RunStore): Promise<string[]> {
  const marked: string[] = [];
  // meta.json only: this runs at startup and must not read every event log.
  let ids: string[] = [];
  try {
    ids = await readdir(store.runsDir);
  } catch {
    return marked;
  }
  for (const id of ids) {
    const meta = await store.readMeta(id).catch(() => null);
    if (!meta || meta.status !== 'running') continue;
    const pid = typeof meta.tail_pid === 'number' ? meta.tail_pid : null;
    let alive = false;
    if (pid !== null && pid !== process.pid) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (alive) continue;
    await store.writeMeta({ ...meta, status: 'incomplete' });
    marked.push(id);
  }
  return marked;
}
