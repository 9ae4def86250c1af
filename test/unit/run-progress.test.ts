/**
 * A running run's progress line, fed a recorded CPU run's events as the tail feeds them: the context
 * round moves the bar and gets an ETA (it had neither), the fraction never goes back, and the last
 * line is the whole run done.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RunProgress } from '../../src/main/core/run-progress';
import { decodeAll } from '../../src/shared/events-reader';
import { FIXTURE_RUNS_DIR } from '../helpers/real-runs';

const events = decodeAll(readFileSync(join(FIXTURE_RUNS_DIR, 'cpu-tiny-4users-offload', 'events.jsonl'))).events;

describe('run progress', () => {
  it('moves through the context round with an ETA, never goes back, and ends at 1', () => {
    const p = new RunProgress();
    const lines: Array<ReturnType<RunProgress['line']> & { type: string }> = [];
    // Wall time follows the run's own clock (ns → ms).
    for (const e of events) if (p.note(e, e.t / 1e6)) lines.push({ ...p.line(e.t / 1e6), type: e.type });
    const context = lines.filter((l) => l.stage === 'context');
    const contextDone = context.filter((l) => l.type === 'req');
    // Each user's context prefilled moves the bar; ETA from the second one on (elapsed > 0).
    expect(contextDone.length).toBe(4);
    expect(contextDone.map((l) => l.message)).toEqual([1, 2, 3, 4].map((n) => `context round: ${n}/4 users' contexts prefilled`));
    expect(contextDone.at(-1)!.fraction).toBeCloseTo(1 / 5, 9); // the context round is 1 of rounds + 1 = 5
    expect(contextDone.slice(1).every((l) => l.etaS !== null)).toBe(true);
    const fractions = lines.map((l) => l.fraction ?? 0);
    for (let i = 1; i < fractions.length; i++) expect(fractions[i]).toBeGreaterThanOrEqual(fractions[i - 1]!);
    expect(lines.filter((l) => l.stage === 'rounds').some((l) => /^round 2\/4 \(\d\/4 users done\)$/.test(l.message))).toBe(true);
    expect(lines.some((l) => l.message === 'rounds: all 4 done' && l.fraction === 1)).toBe(true);
    expect(lines.at(-1)).toMatchObject({ fraction: 1, etaS: null, message: 'done' });
  });

  it('before run.start: the stage in words, no fraction', () => {
    const p = new RunProgress();
    p.note(events.find((e) => e.type === 'phase' && e.name === 'load_model')!, 0);
    expect(p.line(0)).toEqual({ stage: 'load_model', fraction: null, etaS: null, message: 'building the model' });
  });
});
