/**
 * What the desktop shell shows outside the window while runs go on: the taskbar/dock progress bar
 * and a notification when a long run or a sweep ends. Pure (no electron import): index.ts feeds it
 * the core's pushes and applies its answers with win.setProgressBar and Notification.
 */
import type { PushMessage, RunListing } from '../shared/api';

/** A run shorter than this ends without a notification: the user is probably still watching. */
export const LONG_RUN_MS = 60_000;

/** Electron's setProgressBar: -1 removes the bar; a value above 1 shows it indeterminate (Windows). */
export const PROGRESS_NONE = -1;
export const PROGRESS_INDETERMINATE = 2;

export interface ShellSignal {
  /** New progress bar value, when it changed. */
  progress?: number;
  notification?: { title: string; body: string };
}

const TERMINAL: ReadonlySet<RunListing['status']> = new Set(['ok', 'error', 'cancelled', 'incomplete']);

export class ShellSignals {
  private readonly runs = new Map<string, { startedAt: number; fraction: number | null }>();
  private readonly sweeps = new Map<string, { startedAt: number; runIds: Set<string> }>();
  private lastProgress = PROGRESS_NONE;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly longRunMs = LONG_RUN_MS,
  ) {}

  handle(m: PushMessage): ShellSignal {
    const out: ShellSignal = {};
    if (m.kind === 'progress') {
      // An export of a finished run (core/export: stage "export-<format>") is its own short task:
      // it ends with fraction 1 and no run-status, so it must not keep the run's bar alive.
      const exporting = m.stage.startsWith('export');
      const key = exporting ? `${m.runId}\u0000${m.stage}` : m.runId;
      const task = this.track(key);
      task.fraction = m.fraction === null ? null : Math.min(1, Math.max(0, m.fraction));
      if (exporting && task.fraction === 1) this.runs.delete(key);
    } else if (m.kind === 'run-events') {
      this.track(m.runId);
    } else if (m.kind === 'run-status') {
      if (m.status === 'running') this.track(m.runId);
      else if (TERMINAL.has(m.status)) {
        const run = this.runs.get(m.runId);
        this.runs.delete(m.runId);
        const inSweep = [...this.sweeps.values()].some((s) => s.runIds.has(m.runId));
        if (run && !inSweep && this.now() - run.startedAt >= this.longRunMs) {
          out.notification = {
            title: m.status === 'ok' ? 'KV Scope: run finished' : `KV Scope: run ${m.status === 'error' ? 'failed' : m.status}`,
            body: `${m.runId}${m.message ? `: ${m.message}` : ''}`,
          };
        }
      }
    } else if (m.kind === 'sweep-status') {
      let sweep = this.sweeps.get(m.sweepId);
      if (!sweep) {
        sweep = { startedAt: this.now(), runIds: new Set() };
        this.sweeps.set(m.sweepId, sweep);
      }
      for (const row of m.rows) if (row.runId) sweep.runIds.add(row.runId);
      if (m.done) {
        this.sweeps.delete(m.sweepId);
        for (const id of sweep.runIds) this.runs.delete(id);
        if (this.now() - sweep.startedAt >= this.longRunMs) {
          const okCount = m.rows.filter((r) => r.status === 'ok').length;
          out.notification = { title: 'KV Scope: sweep finished', body: `${okCount} of ${m.rows.length} runs ok (${m.sweepId})` };
        }
      }
    }
    const progress = this.progressValue();
    if (progress !== this.lastProgress) {
      this.lastProgress = progress;
      out.progress = progress;
    }
    return out;
  }

  private track(runId: string) {
    let run = this.runs.get(runId);
    if (!run) {
      run = { startedAt: this.now(), fraction: null };
      this.runs.set(runId, run);
    }
    return run;
  }

  /** One bar for all active runs: the mean known fraction; indeterminate when none is known. */
  private progressValue(): number {
    if (this.runs.size === 0) return PROGRESS_NONE;
    const known = [...this.runs.values()].map((r) => r.fraction).filter((f): f is number => f !== null);
    if (known.length === 0) return PROGRESS_INDETERMINATE;
    return known.reduce((a, b) => a + b, 0) / known.length;
  }
}
