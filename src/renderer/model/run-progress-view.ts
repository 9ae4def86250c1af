/**
 * New run's progress rows as data: each run's latest `progress` and `run-status` pushes folded
 * into one state, and the line the row shows. Pure, unit-tested.
 */
import type { PushMessage } from '../../shared/api';

export interface RunProgressState {
  stage: string;
  fraction: number | null;
  etaS: number | null;
  message: string;
  /** The last run-status (null before one came). */
  status: string | null;
  /** A Slurm job's place in the queue ("pending: Resources", "running on gpu-a07"), from `queue` progress. */
  queue?: string;
}

const EMPTY: RunProgressState = { stage: '', fraction: null, etaS: null, message: '', status: null };

/** The state after one push (other kinds leave it as it was). */
export function foldProgress(prev: Readonly<Record<string, RunProgressState>>, m: PushMessage): Record<string, RunProgressState> {
  if (m.kind === 'progress') {
    const queue = m.stage === 'queue' ? m.message : prev[m.runId]?.queue;
    return { ...prev, [m.runId]: { stage: m.stage, fraction: m.fraction, etaS: m.etaS, message: m.message, status: prev[m.runId]?.status ?? null, ...(queue !== undefined ? { queue } : {}) } };
  }
  if (m.kind !== 'run-status') return prev as Record<string, RunProgressState>;
  const p = prev[m.runId] ?? EMPTY;
  if (m.status === 'running') return { ...prev, [m.runId]: { ...p, status: m.status, message: p.message || (m.message ?? '') } };
  // The end says only itself and its own reason: "cancelled · start" kept the last stage's words.
  return { ...prev, [m.runId]: { ...p, status: m.status, message: m.message ?? '', etaS: null } };
}

/** "round 3/10 (2/4 users done)" while it runs ("Slurm job 12 pending: Resources" while queued); "ok", "cancelled", "error · why" at the end. */
export function progressText(p: RunProgressState | undefined): string {
  if (!p) return 'starting…';
  if (p.stage === 'queue' && (!p.status || p.status === 'running')) return `Slurm job ${p.message}`;
  const head = p.status && p.status !== 'running' ? p.status : p.stage;
  return `${head}${p.message ? ` · ${p.message}` : ''}`;
}
