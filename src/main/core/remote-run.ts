/**
 * Runs on a host, detached from the connection that started them, and the tail that brings their
 * events home.
 *
 * Remote layout (root = ~/.cache/kvscope unless overridden):
 *   <root>/agent-<hash>/kvscope_agent/   the deployed agent (deploy.ts)
 *   <root>/runs/<folder>/events.jsonl    written by the agent (--out); <folder> is the run id, with
 *                                        a random suffix when the id was chosen by the user (--out
 *                                        DIR), so two machines' runs never share a folder
 *                        pid             the launcher's pid = the run's process group id
 *                        exit            the agent's exit status, written when it ends
 *                        agent.stderr    the agent's progress and errors
 *
 * The launcher is `setsid sh -c …`: a new session and process group, no controlling terminal, all
 * fds on files, so closing or losing the SSH connection neither signals nor blocks it. Cancel sends
 * TERM to the whole group, waits a grace period, then KILL (the agent answers TERM by writing
 * run.end "cancelled" and exiting 143).
 *
 * The tail is a small stdlib Python program sent as the program text of `python -` (so it needs no
 * deployed file), started from a byte offset: it streams new bytes of events.jsonl to stdout and,
 * when the run has ended (the exit file exists) and every byte is out, prints one JSON status line
 * on stderr. After a dropped connection the local side reconnects with backoff and starts a new
 * tail at the last byte it has stored whole (EventLineDecoder.committedOffset): nothing is lost and
 * nothing is duplicated, so the local events.jsonl is a byte-for-byte copy of the remote one.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { AgentWorkload, PushMessage, RunListing, RunRequest, RunStarted, SweepRequest, SweepRow } from '../../shared/api';
import { EventLineDecoder, type BadLine } from '../../shared/events-reader';
import { MAX_LINE_BYTES, type KvEvent } from '../../shared/protocol';
import { CodedError } from '../../shared/result';
import { defaultOf, flagOf, isWorkloadOption, optionArg, optionOf, WORKLOAD_OPTIONS, type EngineName } from '../../shared/workload-options';
import { checkPythonPath } from './python-path';
import { checkRunId, type RunMeta, type RunStore } from './run-store';
import type { LiveIndex } from './run-index-store';
import { shellCommand, shellQuote } from './shell-quote';
import type { HostExec } from './ssh/host-exec';
import type { HostService } from './hosts';
import { RunProgress } from './run-progress';

/**
 * Maps the workload to the agent's options: every key must be a row of the option table that
 * `run` takes and that the workload's engine takes, every value is checked against its row and
 * fused to its option (`--name=value`), in the table's order.
 */
export function agentRunArgs(w: AgentWorkload): string[] {
  const values = w as Record<string, unknown>;
  for (const name of Object.keys(values)) {
    if (values[name] === undefined || values[name] === null) continue;
    if (!isWorkloadOption(name) || !optionOf(name).commands.includes('run')) {
      throw new CodedError('invalid_argument', `${name} is not an option of the agent's run`, { field: name });
    }
  }
  const engine = w.engine ?? defaultOf('engine');
  const args: string[] = [];
  for (const o of WORKLOAD_OPTIONS) {
    const v = values[o.name];
    if (v === undefined || v === null) continue;
    args.push(optionArg(o.name, v));
    if (typeof engine === 'string' && !o.engines.includes(engine as EngineName)) {
      throw new CodedError('invalid_argument', `${flagOf(o.name)} is taken by ${o.engines.join(', ')} only, not by --engine ${engine}`, { field: flagOf(o.name).slice(2) });
    }
  }
  return args;
}

/** Random lowercase letters and digits from the OS's CSPRNG (folder names that must not collide). */
function randomTag(chars: number): string {
  return [...randomBytes(chars)].map((b) => '0123456789abcdefghijklmnopqrstuvwxyz'[b % 36]).join('');
}

/** A run id: sortable, unique, and safe as a folder name anywhere (RunStore's id rule). */
export function newRunId(host: string, users?: number, now = new Date()): string {
  const ts = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
  const h = host.replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 40) || 'host';
  return `${ts}-${h}${users ? `-u${users}` : ''}-${randomTag(6)}`;
}

/**
 * The run's folder name on the host. A generated id is already unique (a timestamp and a random
 * tag); an id the user chose (the CLI's `--out DIR` names the run after DIR) is not: another
 * laptop or checkout may use the same name on the same host, so it gets a random tag too.
 */
export function remoteRunName(runId: string, chosenByUser: boolean): string {
  return chosenByUser ? `${runId}-${randomTag(8)}` : runId;
}

export interface LaunchSpec {
  exec: HostExec;
  python: string;
  /** Absolute folder holding kvscope_agent/ on the host. */
  agentDir: string;
  /** Absolute run folder on the host (created). */
  remoteDir: string;
  agentArgs: string[];
}

const SETSID_PY = 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])';

/** Starts the agent detached; resolves with its process group id once the pid file exists. */
export async function launchDetached(spec: LaunchSpec): Promise<number> {
  const { remoteDir } = spec;
  const agent = shellCommand([spec.python, '-m', 'kvscope_agent', 'run', ...spec.agentArgs, '--out', remoteDir]);
  // Inside the new session: record the group id, ignore TERM in the shell itself (a trap with a
  // command is reset for children, so the agent still gets TERM), run the agent, record its status.
  const inner = [
    'echo $$ > pid.tmp && mv pid.tmp pid',
    'trap : TERM INT HUP',
    `PYTHONPATH=${shellQuote(spec.agentDir)}`,
    'export PYTHONPATH',
    `${agent} > agent.stdout 2> agent.stderr < /dev/null`,
    'echo $? > exit.tmp',
    'mv exit.tmp exit',
  ].join('; ');
  const q = shellQuote(remoteDir);
  const cmd = [
    `mkdir -p ${q}`,
    `cd ${q}`,
    `if [ -e pid ]; then echo 'kvscope: run folder already in use' >&2; exit 3; fi`,
    // `kvscope-run <folder>` becomes $0/$1 of the launcher: visible in ps, checked by cancel.
    // setsid(1) is util-linux; where it is missing (macOS, busybox) the host's Python calls
    // setsid(2) and execs the same launcher, so the pid is still the group id.
    `if command -v setsid > /dev/null 2>&1; then (setsid sh -c ${shellQuote(inner)} kvscope-run ${q} > /dev/null 2>&1 < /dev/null &); ` +
      `else (${shellQuote(spec.python)} -c ${shellQuote(SETSID_PY)} sh -c ${shellQuote(inner)} kvscope-run ${q} > /dev/null 2>&1 < /dev/null &); fi`,
    'i=0; while [ ! -s pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done',
    'cat pid',
  ].join(' && ');
  // The script goes in on stdin of `sh -s`, so only two plain words meet the user's login shell
  // (which may be csh or fish, whose syntax differs from POSIX sh's).
  const r = await spec.exec.exec('sh -s', cmd + '\n');
  const pgid = Number(r.stdout.toString().trim());
  if (r.code !== 0 || !Number.isInteger(pgid) || pgid <= 1) {
    throw new CodedError('io_error', `could not start the agent on ${spec.exec.label} (exit ${r.code}): ${r.stderr.toString().trim().slice(0, 500) || 'no pid written'}`);
  }
  return pgid;
}

/**
 * TERM to the run's process group, KILL after `graceMs`. The group id is re-read from the run's
 * pid file when it is still there, and a group is only signalled if its leader is our launcher for
 * this run folder (so a recycled pid is never hit).
 */
export async function cancelDetached(exec: HostExec, remoteDir: string, pgid: number | null, graceMs = 5000): Promise<'terminated' | 'killed' | 'not-running'> {
  const q = shellQuote(remoteDir);
  const steps = Math.max(1, Math.round(graceMs / 100));
  // `kill -s SIG -- -PGID`: dash's builtin kill refuses `kill -TERM -- -PGID` ("Illegal number"),
  // and a host's login shell may be dash; the -s form works in dash, bash, zsh and procps kill.
  // A group is named by a negative pid after `--` (POSIX kill: "-pid" means process group).
  const script = [
    `pg=$(cat ${q}/pid 2>/dev/null || echo ${pgid ?? ''})`,
    `case "$pg" in ''|*[!0-9]*) echo not-running; exit 0;; esac`,
    // Only our launcher for this folder: `sh -c … kvscope-run <folder>`.
    `ps -o args= -p "$pg" 2>/dev/null | grep -qF -- ${shellQuote(`kvscope-run ${remoteDir}`)} || { kill -s 0 -- -"$pg" 2>/dev/null && [ -e ${q}/pid ] || { echo not-running; exit 0; }; }`,
    `kill -s TERM -- -"$pg" 2>/dev/null || { echo not-running; exit 0; }`,
    `i=0; while kill -s 0 -- -"$pg" 2>/dev/null && [ $i -lt ${steps} ]; do sleep 0.1; i=$((i+1)); done`,
    `if kill -s 0 -- -"$pg" 2>/dev/null; then kill -s KILL -- -"$pg" 2>/dev/null; echo killed; else echo terminated; fi`,
  ].join('\n');
  const r = await exec.exec('sh -s', script + '\n');
  const word = r.stdout.toString().trim().split('\n').pop();
  if (word === 'terminated' || word === 'killed' || word === 'not-running') return word;
  throw new CodedError('io_error', `cancel on ${exec.label} failed (exit ${r.code}): ${r.stderr.toString().trim().slice(0, 300)}`);
}

/** The tail program (stdlib Python 3.6+), sent as stdin of `python - <run dir> <offset>`. */
export const TAIL_PY = String.raw`
import json, os, sys, time
run_dir, offset = sys.argv[1], int(sys.argv[2])
poll = float(sys.argv[3]) if len(sys.argv) > 3 else 0.02
# "scheduler": the run is a batch job on another node; its pid means nothing here and the
# scheduler's queue, not this program, says when it died (core/slurm).
pid_liveness = (sys.argv[4] if len(sys.argv) > 4 else "pid") == "pid"
path = os.path.join(run_dir, "events.jsonl")
out = sys.stdout.buffer
ppid = os.getppid()
def free_bytes():
    try:
        st = os.statvfs(run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir) or "/")
        return st.f_bavail * st.f_frsize
    except OSError:
        return None
def stderr_tail():
    try:
        with open(os.path.join(run_dir, "agent.stderr"), "rb") as f:
            f.seek(0, 2); n = f.tell(); f.seek(max(0, n - 4000))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
def alive():
    try:
        with open(os.path.join(run_dir, "pid")) as f:
            pg = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None
    try:
        os.kill(-pg, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
def end(kind, code=None, size=None):
    out.flush()
    sys.stderr.write(json.dumps({"end": kind, "code": code, "size": size, "free_bytes": free_bytes(), "stderr": stderr_tail()}) + "\n")
    sys.stderr.flush()
    sys.exit(0)
f = None
started = time.monotonic()
while True:
    if not os.path.isdir(run_dir):
        if f is not None:
            while True:
                b = f.read(1 << 20)
                if not b: break
                out.write(b)
        end("gone", size=f.tell() if f else None)
    finished = os.path.exists(os.path.join(run_dir, "exit"))
    state = alive() if pid_liveness else True
    if f is None:
        try:
            f = open(path, "rb")
            f.seek(offset)
        except FileNotFoundError:
            f = None
    got = False
    if f is not None:
        while True:
            b = f.read(1 << 20)
            if not b: break
            out.write(b)
            got = True
        out.flush()
    if finished:
        try:
            with open(os.path.join(run_dir, "exit")) as e:
                code = int(e.read().strip())
        except (OSError, ValueError):
            code = None
        end("exit", code=code, size=f.tell() if f else None)
    if state is False and not os.path.exists(os.path.join(run_dir, "exit")):
        end("dead", size=f.tell() if f else None)
    if state is None and time.monotonic() - started > 30:
        end("dead", size=f.tell() if f else None)
    if os.getppid() != ppid:
        sys.exit(0)  # the SSH session that started us is gone
    if not got:
        time.sleep(poll)
`;

export interface TailEnd {
  end: 'exit' | 'gone' | 'dead';
  code: number | null;
  size: number | null;
  free_bytes: number | null;
  stderr: string;
}

/** The tail's status line (the host writes it: every field is type-checked, anything else is dropped). */
function parseTailEnd(stderr: string): TailEnd | null {
  const lines = stderr.trim().split('\n');
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i]!.trim();
    if (!l.startsWith('{"end"')) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(l) as Record<string, unknown>;
    } catch {
      return null;
    }
    if (o.end !== 'exit' && o.end !== 'gone' && o.end !== 'dead') return null;
    return { end: o.end, code: n(o.code), size: n(o.size), free_bytes: n(o.free_bytes), stderr: typeof o.stderr === 'string' ? o.stderr.slice(-4000) : '' };
  }
  return null;
}

/**
 * The most bytes of one unfinished line the local copy holds while it waits for its newline. The
 * protocol's lines are at most 1 MiB; a longer one is still stored byte for byte (readers report
 * it as a bad line) up to this, and a host that sends more without a newline is not sending an
 * event log: following stops with `line_too_long` instead of buffering without end.
 */
export const MAX_UNTERMINATED_LINE_BYTES = 8 * MAX_LINE_BYTES;

/**
 * The local copy of a run's events.jsonl. Only whole lines are written (the bytes up to the
 * decoder's committed offset), so the file is always a prefix of the remote file made of complete
 * lines, and its length is exactly where the next tail starts.
 */
export class LocalEventSink {
  private fd: number;
  private decoder!: EventLineDecoder;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes on disk (all complete lines). */
  written = 0;
  lastSeq: number | null = null;
  runEnd: Extract<KvEvent, { type: 'run.end' }> | null = null;
  runStart: Extract<KvEvent, { type: 'run.start' }> | null = null;
  badLines = 0;
  /** Hears each bad line of what arrives (not of what the file held at construction). */
  onBadLine: ((b: BadLine) => void) | null = null;

  constructor(
    readonly file: string,
    private readonly onEvent?: (e: KvEvent) => void,
  ) {
    mkdirSync(join(file, '..'), { recursive: true });
    this.fd = openSync(file, existsSync(file) ? 'r+' : 'w+');
    // Recover from a crash: keep whole lines only, and learn the last seq from them.
    const size = fstatSync(this.fd).size;
    let keep = 0;
    if (size > 0) {
      const buf = Buffer.alloc(Math.min(size, 4 << 20));
      const start = size - buf.length;
      readSync(this.fd, buf, 0, buf.length, start);
      const nl = buf.lastIndexOf(0x0a);
      keep = nl === -1 ? (start === 0 ? 0 : start) : start + nl + 1;
      if (keep < size) ftruncateSync(this.fd, keep);
      if (keep > 0) {
        // Re-read the existing lines once for the last seq and run.start/run.end.
        const all = readFileSync(file);
        const d = new EventLineDecoder({ onEvent: (e) => this.note(e) });
        d.push(all.subarray(0, keep));
      }
    }
    this.written = keep;
    this.resetDecoder();
  }

  private note(e: KvEvent): void {
    this.lastSeq = e.seq;
    if (e.type === 'run.start') this.runStart = e;
    else if (e.type === 'run.end') this.runEnd = e;
  }

  /** Forget a partial line (the next tail re-sends it from `written`). */
  resetDecoder(): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.decoder = new EventLineDecoder(
      {
        onEvent: (e) => {
          this.note(e);
          this.onEvent?.(e);
        },
        onBadLine: (b) => {
          this.badLines++;
          this.onBadLine?.(b);
        },
      },
      { startOffset: this.written },
    );
  }

  push(chunk: Buffer): void {
    this.decoder.push(chunk);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const commit = this.decoder.committedOffset - this.written;
    if (commit <= 0) {
      if (this.pendingBytes > MAX_UNTERMINATED_LINE_BYTES) {
        const held = this.pendingBytes;
        this.pending = [];
        this.pendingBytes = 0;
        throw new CodedError('too_large', `the host sent ${held} bytes without a newline at byte ${this.written} of the log (an event line is at most ${MAX_LINE_BYTES} bytes): not an event log`, { offset: this.written });
      }
      return;
    }
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    let off = 0;
    try {
      while (off < commit) off += writeSync(this.fd, all, off, commit - off, this.written + off);
    } catch (e) {
      // A short write then ENOSPC would leave half a line: cut back to the last whole line.
      try {
        ftruncateSync(this.fd, this.written);
      } catch {
        /* the next start truncates to the last newline anyway */
      }
      throw e;
    }
    this.written += commit;
    const rest = all.subarray(commit);
    this.pending = rest.length ? [Buffer.from(rest)] : [];
    this.pendingBytes = rest.length;
  }

  /** The stream is over: a last line without a newline is kept too, byte-identical. */
  finish(): void {
    if (this.pendingBytes > 0) {
      const all = Buffer.concat(this.pending, this.pendingBytes);
      writeSync(this.fd, all, 0, all.length, this.written);
      this.written += all.length;
      this.decoder.end();
      this.pending = [];
      this.pendingBytes = 0;
    }
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* closed */
    }
  }

}

export interface TailProgress {
  stage: string;
  fraction: number | null;
  etaS: number | null;
  message: string;
}

export interface TailOptions {
  store: RunStore;
  runId: string;
  remoteDir: string;
  python: string;
  /** Opens a fresh transport (first attempt and every reconnect). */
  connect: () => Promise<HostExec>;
  /** A transport already open for the first attempt. */
  initial?: HostExec;
  onEvents?: (events: KvEvent[]) => void;
  onProgress?: (p: TailProgress) => void;
  /** Give up reconnecting after this long without a working connection (default 10 min). */
  reconnectWindowMs?: number;
  pollSeconds?: number;
  /** Set to stop the tail (cancel / app quit); the run's status is then left to the caller. */
  signal?: AbortSignal;
  /** The process group, for ending a run whose folder vanished. */
  pgid?: number | null;
  /** "scheduler": a batch job's run (no pid to watch; only its exit file ends the tail). */
  liveness?: 'pid' | 'scheduler';
}

export interface TailResult {
  status: RunListing['status'];
  error: { code: string; message: string } | null;
  bytes: number;
  lastSeq: number | null;
  reconnects: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Tails a run to its end, through reconnects; writes the store's events.jsonl and meta.json. */
export async function tailRun(o: TailOptions): Promise<TailResult> {
  const runDir = o.store.runDir(o.runId);
  let batch: KvEvent[] = [];
  let lastFlush = Date.now();
  const runProgress = new RunProgress();
  let lastProgress = 0;
  const flush = () => {
    if (batch.length && o.onEvents) o.onEvents(batch);
    batch = [];
    lastFlush = Date.now();
  };
  const progress = (force = false) => {
    const now = Date.now();
    if (!o.onProgress || (!force && now - lastProgress < 250)) return;
    lastProgress = now;
    o.onProgress(runProgress.line(now));
  };
  const logFile = join(runDir, 'events.jsonl');
  // The run's index grows with every event while this process follows it (run-index-store.ts).
  let liveIndex: LiveIndex | null = null;
  const sink = new LocalEventSink(logFile, (e) => {
    liveIndex?.push(e);
    batch.push(e);
    // Phases and rounds are reported at once; requests done (users × rounds) at most every 250 ms.
    if (runProgress.note(e, Date.now())) progress(e.type !== 'req');
    if (batch.length >= 5000) flush();
  });
  const meta = await o.store.readMeta(o.runId).catch((): RunMeta => ({ id: o.runId, name: o.runId, host: 'local', status: 'running', createdAt: new Date().toISOString() }));
  // One meta write at a time: RunStore.writeMeta renames a per-process temp file, so two at once
  // would race on it (the periodic save and the final one).
  let metaChain: Promise<void> = Promise.resolve();
  const saveMeta = (patch: Partial<RunMeta>): Promise<void> => {
    Object.assign(meta, patch);
    metaChain = metaChain
      .catch(() => undefined)
      .then(() => o.store.writeMeta({ ...meta, bytes_received: sink.written, last_seq: sink.lastSeq ?? undefined }));
    return metaChain;
  };
  await saveMeta({ status: 'running', remote_dir: o.remoteDir, tail_pid: process.pid });
  sink.onBadLine = (b) => liveIndex?.badLine(b);
  liveIndex = await o.store.index.startLive(logFile);
  const metaTimer = setInterval(() => void saveMeta({}).catch(() => undefined), 1000);
  // Whatever is left after the last chunk goes out within 50 ms.
  const flushTimer = setInterval(flush, 50);
  let reconnects = 0;
  let backoff = 250;
  let downSince: number | null = null;
  const window = o.reconnectWindowMs ?? 10 * 60_000;
  let exec: HostExec | undefined = o.initial;
  let result: TailResult | null = null;
  try {
    while (!result) {
      if (o.signal?.aborted) break;
      try {
        if (!exec) {
          exec = await o.connect();
        }
        const startAt = sink.written;
        sink.resetDecoder();
        let localError: Error | null = null;
        let stopTail: (() => void) | null = null;
        const handle = await exec.stream(shellCommand([o.python, '-', o.remoteDir, String(startAt), String(o.pollSeconds ?? 0.02), o.liveness ?? 'pid']), TAIL_PY, (chunk) => {
          if (localError) return;
          try {
            sink.push(chunk);
          } catch (e) {
            // This machine's disk (full, read-only): stop; what is stored stays, the run goes on remotely.
            localError = e as Error;
            stopTail?.();
            return;
          }
          // Batches of whatever arrived, at most one push per 25 ms (a chunk is up to 1 MiB).
          if (Date.now() - lastFlush >= 25) flush();
          if (downSince !== null) {
            downSince = null;
            backoff = 250;
          }
        });
        stopTail = () => handle.stop();
        if (localError) handle.stop();
        const onAbort = () => handle.stop();
        o.signal?.addEventListener('abort', onAbort);
        const done = await handle.done;
        o.signal?.removeEventListener('abort', onAbort);
        if (o.signal?.aborted) break;
        if (localError) {
          const le = localError as Error;
          result =
            le instanceof CodedError && le.code === 'too_large'
              ? // Resuming would read the same bytes again: an error, not an incomplete run.
                { status: 'error', error: { code: 'line_too_long', message: `${le.message}; stopped following, ${sink.written} bytes of whole lines kept` }, bytes: sink.written, lastSeq: sink.lastSeq, reconnects }
              : {
                  status: 'incomplete',
                  error: { code: 'local_io', message: `cannot store the run on this machine (${le.message}); ${sink.written} bytes kept, the run goes on on the host: free space, then ${resumeHint(o.runId)}` },
                  bytes: sink.written,
                  lastSeq: sink.lastSeq,
                  reconnects,
                };
          break;
        }
        const end = parseTailEnd(done.stderr);
        if (!end && done.code !== null) {
          // The tail program itself failed on a live connection (no python, a broken interpreter):
          // reconnecting cannot help, so the run ends here with what was received.
          const why = done.code === 127 ? `${o.python} was not found on the host` : `exit ${done.code}`;
          result = {
            status: 'error',
            error: { code: 'tail_failed', message: `cannot follow the run (${why}): ${done.stderr.trim().slice(-300)}` },
            bytes: sink.written,
            lastSeq: sink.lastSeq,
            reconnects,
          };
          break;
        }
        if (!end) {
          // Why the link went (ssh2's "Keepalive timeout" for a silent one), said in the progress.
          const why = await Promise.race([exec.gone, new Promise<string>((r) => setImmediate(() => r('the connection closed')))]);
          throw new CodedError('ssh_error', why);
        }
        downSince = null;
        sink.finish();
        flush();
        result = finishStatus(end, sink, o.remoteDir, reconnects);
        if (end.end === 'gone' && o.pgid) {
          // Nothing of the run may stay alive: its folder is gone, so stop what still writes there.
          await cancelDetached(exec, o.remoteDir, o.pgid, 2000).catch(() => undefined);
        }
      } catch (e) {
        if (o.signal?.aborted) break;
        if (e instanceof CodedError && e.code === 'invalid_argument') throw e;
        exec?.close();
        exec = undefined;
        // Retrying cannot fix a refused host key or refused credentials: say so now, keep the run resumable.
        if (e instanceof CodedError && ['host_key_changed', 'host_key_unknown', 'auth_failed'].includes(e.code)) {
          result = { status: 'incomplete', error: { code: e.code, message: `${e.message}; ${sink.written} bytes kept, ${resumeHint(o.runId)} once this is fixed` }, bytes: sink.written, lastSeq: sink.lastSeq, reconnects };
          break;
        }
        downSince ??= Date.now();
        if (Date.now() - downSince > window) {
          result = {
            status: 'incomplete',
            error: { code: 'connection_lost', message: `lost the connection to the host for over ${Math.round(window / 1000)} s (${(e as Error).message}); ${sink.written} bytes kept, ${resumeHint(o.runId)} when the host is back` },
            bytes: sink.written,
            lastSeq: sink.lastSeq,
            reconnects,
          };
          break;
        }
        reconnects++;
        o.onProgress?.({ stage: 'reconnect', fraction: null, etaS: null, message: `connection lost (${(e as Error).message}); reconnecting in ${(backoff / 1000).toFixed(2)} s` });
        await sleep(backoff, o.signal);
        backoff = Math.min(backoff * 2, 8000);
      }
    }
  } finally {
    clearInterval(metaTimer);
    clearInterval(flushTimer);
    flush();
    sink.close();
    exec?.close();
    // No longer followed here: the run's index is the log's again (RunManager builds its file).
    o.store.index.stopLive(logFile);
  }
  // meta.json may be unwritable (a full local disk): the outcome is still returned, and a later
  // start of the app marks the run incomplete from its stale "running".
  if (!result) {
    // Stopped from here (cancel or quit): the caller decides the final status.
    await saveMeta({ status: 'incomplete' }).catch(() => undefined);
    return { status: 'incomplete', error: null, bytes: sink.written, lastSeq: sink.lastSeq, reconnects };
  }
  await saveMeta({ status: result.status, endedAt: new Date().toISOString(), ...(result.error ? { error: result.error } : {}), tail_pid: undefined }).catch(() => undefined);
  progress(true);
  return result;
}

/** How a user resumes a run, in the desktop app or the CLI. */
export const resumeHint = (runId: string): string => `resume it (Resume in the Runs view, or \`kvscope resume ${runId}\`)`;

function finishStatus(end: TailEnd, sink: LocalEventSink, remoteDir: string, reconnects: number): TailResult {
  const base = { bytes: sink.written, lastSeq: sink.lastSeq, reconnects };
  const diskFull = end.free_bytes !== null && end.free_bytes < 256 * 1024;
  const diskNote = diskFull ? ` The host's disk is full (${end.free_bytes} bytes free where ${remoteDir} is).` : '';
  const stderrTail = end.stderr.trim().split('\n').slice(-5).join(' | ');
  if (end.end === 'gone') {
    return { ...base, status: 'error', error: { code: 'remote_dir_deleted', message: `the run folder ${remoteDir} was deleted on the host while the run was going; kept the ${sink.written} bytes received (seq ≤ ${sink.lastSeq ?? 'none'})` } };
  }
  if (end.end === 'dead') {
    return {
      ...base,
      status: 'error',
      error: { code: diskFull ? 'disk_full' : 'agent_died', message: `the agent stopped without recording an exit status (killed, or out of disk).${diskNote}${stderrTail ? ` Last output: ${stderrTail}` : ''}` },
    };
  }
  const runEnd = sink.runEnd;
  if (runEnd) {
    const st = runEnd.status;
    if (st === 'ok') return { ...base, status: 'ok', error: null };
    if (st === 'cancelled') return { ...base, status: 'cancelled', error: null };
    const e = runEnd.error;
    return { ...base, status: 'error', error: { code: e?.code ?? 'agent_error', message: `${e?.message ?? 'the agent reported an error'}${diskNote}` } };
  }
  if (end.code === 143) return { ...base, status: 'cancelled', error: null };
  return {
    ...base,
    status: 'error',
    error: {
      code: diskFull ? 'disk_full' : 'agent_error',
      message: `the agent exited with status ${end.code} without ending the run.${diskNote}${stderrTail ? ` Last output: ${stderrTail}` : ''}`,
    },
  };
}

/** The run's folder on its host, from its meta.json. */
function remoteDirOf(meta: RunMeta, what: string): string {
  if (typeof meta.remote_dir !== 'string' || !meta.remote_dir) throw new CodedError('invalid_argument', `${what}: run ${meta.id} never started on a host`);
  return meta.remote_dir;
}

/** Statuses of a run whose log ended with its run.end: nothing is left to follow. */
const ENDED = new Set<RunMeta['status']>(['ok', 'cancelled']);

/** The remote folder of a run under a root. */
export const remoteRunDir = (root: string, runId: string): string => posix.join(root, 'runs', runId);

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

/** One run folder found on a host (for `kvscope clean`). */
export interface RemoteRunFolder {
  path: string;
  name: string;
  /** "running": its process group is alive; "ended": it has an exit file; "dead": neither. */
  state: 'running' | 'ended' | 'dead';
  mtime_s: number;
  bytes: number;
}

const LIST_RUNS_PY = String.raw`
import json, os, sys, time
root = os.path.join(sys.argv[1], "runs")
out = []
try:
    names = sorted(os.listdir(root))
except OSError:
    names = []
for n in names:
    d = os.path.join(root, n)
    if not os.path.isdir(d) or os.path.islink(d):
        continue
    state = "dead"
    if os.path.exists(os.path.join(d, "exit")):
        state = "ended"
    elif not os.path.exists(os.path.join(d, "pid")):
        # Being started (mkdir comes before the launcher writes pid): only an old one is dead.
        if time.time() - os.lstat(d).st_mtime < 120:
            state = "running"
    else:
        try:
            with open(os.path.join(d, "pid")) as f:
                os.kill(-int(f.read().strip()), 0)
            state = "running"
        except PermissionError:
            state = "running"
        except (OSError, ValueError):
            pass
    size = 0; mt = os.lstat(d).st_mtime
    for dp, dn, fn in os.walk(d):
        for x in fn:
            try:
                st = os.lstat(os.path.join(dp, x)); size += st.st_size; mt = max(mt, st.st_mtime)
            except OSError:
                pass
    out.append({"path": d, "name": n, "state": state, "mtime_s": int(mt), "bytes": size})
# Deployed agent folders, and whether a live process was launched with one on its PYTHONPATH
# (the launcher's command line names it: PYTHONPATH=<folder>).
cmdlines = []
for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
    if pid.isdigit():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdlines.append(f.read().decode("utf-8", "replace"))
        except OSError:
            pass
agents = []
try:
    anames = sorted(os.listdir(sys.argv[1]))
except OSError:
    anames = []
for n in anames:
    d = os.path.join(sys.argv[1], n)
    if not (n.startswith("agent-") or n.startswith(".agent-")) or not os.path.isdir(d) or os.path.islink(d):
        continue
    size = 0
    for dp, dn, fn in os.walk(d):
        for x in fn:
            try:
                size += os.lstat(os.path.join(dp, x)).st_size
            except OSError:
                pass
    in_use = any(("PYTHONPATH=" + d) in c or ("PYTHONPATH='" + d) in c for c in cmdlines)
    agents.append({"path": d, "name": n, "state": "running" if in_use else "ended", "mtime_s": int(os.lstat(d).st_mtime), "bytes": size})
print(json.dumps({"runs": out, "agents": agents}))
`;

/**
 * Lists the run folders under `<root>/runs` on a host, and the deployed agent folders
 * (`agent-<hash>`, and `.agent-*` temp uploads); an agent folder is "running" while a live process
 * was launched with it.
 */
export async function listRemoteRuns(exec: HostExec, python: string, root: string): Promise<{ runs: RemoteRunFolder[]; agents: RemoteRunFolder[] }> {
  const r = await exec.exec(shellCommand([python, '-', root]), LIST_RUNS_PY);
  if (r.code !== 0) throw new CodedError('io_error', `listing runs on ${exec.label} failed (exit ${r.code}): ${r.stderr.toString().trim().slice(-300)}`);
  return JSON.parse(r.stdout.toString()) as { runs: RemoteRunFolder[]; agents: RemoteRunFolder[] };
}

/** Deletes run folders (never one that is still running; each path quoted, `--` before them). */
export async function removeRemoteRuns(exec: HostExec, folders: RemoteRunFolder[]): Promise<void> {
  const doomed = folders.filter((f) => f.state !== 'running').map((f) => f.path);
  for (let i = 0; i < doomed.length; i += 200) {
    const r = await exec.exec(shellCommand(['rm', '-rf', '--', ...doomed.slice(i, i + 200)]));
    if (r.code !== 0) throw new CodedError('io_error', `removing run folders on ${exec.label} failed: ${r.stderr.toString().trim().slice(-300)}`);
  }
}
