/**
 * Following a run: the tail program (the agent package's programs/tail.py, sent as the program
 * text of `<python> - <run dir> <offset> <poll> <liveness>`, so it needs no deployed file) streams
 * new bytes of the run's events.jsonl from a byte offset to stdout and, when the run has ended
 * (the exit file exists) and every byte is out, prints one JSON status line on stderr. After a
 * dropped connection the local side reconnects with backoff and starts a new tail at the last byte
 * it has stored whole (EventLineDecoder.committedOffset): nothing is lost and nothing is
 * duplicated, so the local events.jsonl (local-log.ts) is a byte-for-byte copy of the remote one.
 */
import { join } from 'node:path';
import type { RunListing } from '../../../shared/api';
import type { KvEvent } from '../../../shared/protocol';
import { CodedError } from '../../../shared/result';
import { readAgentProgram } from '../agent-programs';
import type { LiveIndex } from '../run-index-store';
import { RunProgress } from '../run-progress';
import type { RunMeta, RunStore } from '../run-store';
import { shellCommand } from '../shell-quote';
import type { HostExec } from '../ssh/host-exec';
import { cancelDetached } from './launch';
import { LocalEventSink } from './local-log';

export interface TailEnd {
  end: 'exit' | 'gone' | 'dead';
  code: number | null;
  size: number | null;
  free_bytes: number | null;
  stderr: string;
}

/** The tail's status line (programs/tail.py; the host writes it: every field is type-checked, anything else is dropped). */
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

export interface TailProgress {
  stage: string;
  fraction: number | null;
  etaS: number | null;
  message: string;
}

export interface TailOptions {
  store: RunStore;
  /** The folder holding kvscope_agent/ on this machine: the tail program is read from it. */
  agentSourceDir: string;
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
  const tailProgram = await readAgentProgram(o.agentSourceDir, 'programs/tail.py');
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
        const handle = await exec.stream(shellCommand([o.python, '-', o.remoteDir, String(startAt), String(o.pollSeconds ?? 0.02), o.liveness ?? 'pid']), tailProgram, (chunk) => {
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
