/**
 * Slurm's queue as KV Scope reads it: one `squeue` call per poll for every job followed on a
 * cluster (one SSH connection per cluster, not one per job), parsed into states, and said the way
 * the window and the CLI show it ("pending: Resources", "running on gpu-a07", "completing").
 */
import { CodedError } from '../../../shared/result';
import { shellCommand } from '../shell-quote';
import type { HostExec } from '../ssh/host-exec';

export interface JobState {
  /** "123", or "123_4" for an array element. */
  id: string;
  /** Slurm's base state: PENDING, RUNNING, COMPLETING, COMPLETED, CANCELLED, TIMEOUT, ... */
  state: string;
  /** Why it waits (Resources, Priority, JobArrayTaskLimit, BeginTime, ...); null for "None". */
  reason: string | null;
  nodes: string | null;
  /** How many times the job was requeued (scontrol requeue, preemption, a node failure). */
  restarts: number;
}

/** `squeue -O` fields, each ending with `|` (a width of 0: never cut). */
export const SQUEUE_FIELDS = 'JobArrayID:|,State:|,Reason:|,NodeList:|,RestartCnt:|';

/** States after which the job never runs again (unless requeued, which restarts it as PENDING). */
const ENDED = new Set(['BOOT_FAIL', 'CANCELLED', 'COMPLETED', 'DEADLINE', 'FAILED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'PREEMPTED', 'TIMEOUT', 'REVOKED', 'SPECIAL_EXIT']);
/** States of a job that has not started (this attempt). */
const WAITING = new Set(['PENDING', 'CONFIGURING', 'REQUEUED', 'REQUEUE_FED', 'REQUEUE_HOLD', 'RESV_DEL_HOLD']);

export const jobEnded = (s: JobState | null): boolean => s === null || ENDED.has(s.state);
export const jobWaiting = (s: JobState): boolean => WAITING.has(s.state);

/** Parses `squeue -h -r -t all -O <SQUEUE_FIELDS>` output. */
export function parseSqueue(text: string): Map<string, JobState> {
  const out = new Map<string, JobState>();
  for (const line of text.split('\n')) {
    const f = line.split('|').map((x) => x.trim());
    if (f.length < 5 || !f[0]) continue;
    const restarts = Number(f[4]);
    out.set(f[0], {
      id: f[0],
      // "CANCELLED by 1000" (sacct's spelling) → CANCELLED
      state: f[1]!.split(/\s+/)[0]!.toUpperCase(),
      reason: f[2] && f[2] !== 'None' && f[2] !== '(null)' ? f[2] : null,
      nodes: f[3] && f[3] !== '(null)' ? f[3] : null,
      restarts: Number.isInteger(restarts) ? restarts : 0,
    });
  }
  return out;
}

/** Parses `sacct -n -P -X -o JobID,State,NodeList` (for jobs squeue has forgotten). */
export function parseSacct(text: string): Map<string, JobState> {
  const out = new Map<string, JobState>();
  for (const line of text.split('\n')) {
    const [id, state, nodes] = line.split('|').map((x) => x.trim());
    if (!id || !state) continue;
    out.set(id, { id, state: state.split(/\s+/)[0]!.toUpperCase(), reason: null, nodes: nodes && nodes !== 'None assigned' ? nodes : null, restarts: 0 });
  }
  return out;
}

/** The queue state in words, as the window and the CLI show it. */
export function queueText(s: JobState | null): string {
  if (!s) return 'left the queue';
  const st = s.state.toLowerCase().replace(/_/g, ' ');
  if (s.state === 'PENDING') return `pending: ${s.reason ?? 'queued'}`;
  if (s.state === 'RUNNING') return `running on ${s.nodes ?? 'a node'}`;
  if (s.state === 'COMPLETING') return `completing${s.nodes ? ` on ${s.nodes}` : ''}`;
  return s.reason ? `${st}: ${s.reason}` : st;
}

/** Asks the queue about these jobs (squeue, then sacct for the ones it no longer lists). */
export async function queryJobs(exec: HostExec, ids: string[]): Promise<Map<string, JobState>> {
  if (ids.length === 0) return new Map();
  const r = await exec.exec(shellCommand(['squeue', '-h', '-r', '-t', 'all', '-j', ids.join(','), '-O', SQUEUE_FIELDS]));
  const err = r.stderr.toString().trim();
  // squeue exits 1 with "Invalid job id specified" when none of the ids is known any more.
  if (r.code !== 0 && !/invalid job id/i.test(err)) {
    throw new CodedError(r.code === 127 ? 'not_found' : 'scheduler_error', r.code === 127 ? `squeue was not found on ${exec.label}: is it a Slurm login node?` : `squeue failed on ${exec.label} (exit ${r.code}): ${err.slice(-300)}`);
  }
  const found = parseSqueue(r.stdout.toString());
  const missing = ids.filter((id) => !found.has(id));
  if (missing.length) {
    // Where accounting is kept, sacct still knows how a job ended; elsewhere it fails and the job is just gone.
    const a = await exec.exec(shellCommand(['sacct', '-n', '-P', '-X', '-j', missing.join(','), '-o', 'JobID,State,NodeList'])).catch(() => null);
    if (a && a.code === 0) for (const [id, s] of parseSacct(a.stdout.toString())) if (missing.includes(id)) found.set(id, s);
  }
  return found;
}

/** A poll's answer for one job: its state (null: the queue no longer knows it), or why the queue could not be asked. */
type Listener = (s: JobState | null, error?: Error) => void;

/**
 * Polls one cluster's queue for every job followed there. Listeners hear each poll's state of
 * their job (null: the queue no longer knows it), or the error that kept a poll from asking;
 * `now` asks at once.
 */
export class QueueWatcher {
  private readonly listeners = new Map<string, Set<Listener>>();
  private exec: HostExec | null = null;
  private connecting: Promise<HostExec> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private busy = 0;
  private pollMs: number;

  constructor(
    private readonly connect: () => Promise<HostExec>,
    pollMs: number,
  ) {
    this.pollMs = pollMs;
  }

  /** The poll period in milliseconds. */
  get period(): number {
    return this.pollMs;
  }

  /** The shortest period any run on this cluster asked for wins. */
  setPollMs(ms: number): void {
    this.pollMs = Math.min(this.pollMs, ms);
  }

  /** The open connection to the login node (made on first use, remade after a failure). */
  async connection(): Promise<HostExec> {
    if (this.exec) return this.exec;
    this.connecting ??= this.connect().then(
      (e) => {
        this.exec = e;
        this.connecting = null;
        void e.gone.then(() => {
          if (this.exec === e) this.exec = null;
        });
        return e;
      },
      (err: unknown) => {
        this.connecting = null;
        throw err;
      },
    );
    return this.connecting;
  }

  /** Runs a command on the login node over the watcher's connection (dropped and remade on failure). */
  async run<T>(fn: (exec: HostExec) => Promise<T>): Promise<T> {
    this.busy++;
    try {
      const exec = await this.connection();
      try {
        return await fn(exec);
      } catch (e) {
        if (!(e instanceof CodedError) || e.code === 'ssh_error') this.drop();
        throw e;
      }
    } finally {
      this.busy--;
      this.closeIfIdle();
    }
  }

  async now(ids: string[]): Promise<Map<string, JobState>> {
    return this.run((exec) => queryJobs(exec, ids));
  }

  watch(id: string, listener: Listener): () => void {
    const set = this.listeners.get(id) ?? new Set();
    set.add(listener);
    this.listeners.set(id, set);
    this.schedule(0);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(id);
      this.closeIfIdle();
    };
  }

  private schedule(ms: number): void {
    if (this.timer || this.polling) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.poll();
    }, ms);
  }

  private async poll(): Promise<void> {
    if (this.listeners.size === 0) return;
    this.polling = true;
    try {
      const ids = [...this.listeners.keys()];
      const states = await this.now(ids);
      for (const id of ids) for (const l of [...(this.listeners.get(id) ?? [])]) l(states.get(id) ?? null);
    } catch (e) {
      for (const set of [...this.listeners.values()]) for (const l of [...set]) l(null, e as Error);
    } finally {
      this.polling = false;
    }
    if (this.listeners.size > 0) this.schedule(this.pollMs);
  }

  /** Nothing followed and nothing asked: the connection closes (a CLI run then exits). */
  private closeIfIdle(): void {
    if (this.listeners.size > 0 || this.busy > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.drop();
  }

  private drop(): void {
    this.exec?.close();
    this.exec = null;
  }

  /** Stops polling and closes the connection (the app quits). */
  stop(): void {
    this.listeners.clear();
    this.closeIfIdle();
  }
}
