/** New run's progress row: the pushes a cancelled run gets, folded; the row ends "cancelled", not "cancelled · start". */
import { describe, expect, it } from 'vitest';
import type { PushMessage } from '../../src/shared/api';
import { foldProgress, progressText, type RunProgressState } from '../../src/renderer/model/run-progress-view';

const fold = (ms: PushMessage[]) => ms.reduce<Record<string, RunProgressState>>(foldProgress, {});

describe('progress rows', () => {
  it('a run cancelled while it starts ends "cancelled", without the last stage\'s words or an ETA', () => {
    const s = fold([
      { kind: 'run-status', runId: 'r', status: 'running', message: 'connecting' },
      { kind: 'progress', runId: 'r', stage: 'start', fraction: null, etaS: null, message: 'starting the agent in /x' },
      { kind: 'progress', runId: 'r', stage: 'context', fraction: 0.1, etaS: 30, message: "context round: 1/4 users' contexts prefilled" },
      { kind: 'run-status', runId: 'r', status: 'cancelled' },
    ]);
    expect(progressText(s.r)).toBe('cancelled');
    expect(s.r!.etaS).toBeNull();
  });
  it('an error keeps its reason; a running run shows its stage and message', () => {
    expect(progressText(fold([{ kind: 'progress', runId: 'r', stage: 'rounds', fraction: 0.5, etaS: 3, message: 'round 3/4' }]).r)).toBe('rounds · round 3/4');
    expect(progressText(fold([{ kind: 'run-status', runId: 'r', status: 'error', message: 'agent_failed: no torch' }]).r)).toBe('error · agent_failed: no torch');
    expect(progressText(undefined)).toBe('starting…');
  });
  it('a Slurm job in the queue says so, and keeps its place once it runs', () => {
    const s = fold([{ kind: 'progress', runId: 'r', stage: 'queue', fraction: null, etaS: null, message: '12 pending: Resources' }]);
    expect(progressText(s.r)).toBe('Slurm job 12 pending: Resources');
    const t = foldProgress(s, { kind: 'progress', runId: 'r', stage: 'context', fraction: 0.1, etaS: 9, message: "context round: 1/4 users' contexts prefilled" });
    expect(t.r!.queue).toBe('12 pending: Resources');
    expect(progressText(t.r)).toBe("context · context round: 1/4 users' contexts prefilled");
  });
});
