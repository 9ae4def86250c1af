/**
 * The generated Slurm batch script, run by bash here as a compute node would run it (without
 * Slurm: the array index and restart count are the environment Slurm would set), with a stand-in
 * interpreter that records the argv and environment the agent would get. Hostile values in every
 * field the user controls must arrive as the same bytes, and the set-up line must run exactly
 * once, in the job's shell, before the agent. The real-Slurm tests are in
 * test/integration/slurm.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { jobScript } from '../../src/main/core/slurm/job-script';

const HOSTILE = ["it's", '$(touch CANARY)', '`touch CANARY`', '"; touch CANARY; "', '--out=/elsewhere', 'a\\b', '${HOME}', '*', '', ' spaced  words '];

let dir: string;
let python: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kvscope-jobscript-'q' $x "));
  // A stand-in for Python: the placement program (-c) prints {}, the agent (-m) records its argv
  // (NUL separated), PYTHONPATH and a variable the set-up line exports.
  python = join(dir, "py thon's");
  writeFileSync(
    python,
    ['#!/bin/sh', 'if [ "$1" = -c ]; then echo "{}"; exit 0; fi', 'printf "%s\\0" "$@" > argv.bin', 'printf "%s" "$PYTHONPATH" > pythonpath.txt', 'printf "%s" "${KV_FROM_SETUP-unset}" > setup-env.txt', 'exit 0'].join('\n') + '\n',
  );
  chmodSync(python, 0o755);
});

function run(script: string, env: Record<string, string>): { code: number | null; stderr: string } {
  const file = join(dir, 'job.sh');
  writeFileSync(file, script);
  // The job's working directory is neither the run folder nor the script's: the script must not care.
  const cwd = join(dir, 'elsewhere');
  mkdirSync(cwd, { recursive: true });
  const r = spawnSync('/bin/bash', [file], { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, encoding: 'utf8' });
  return { code: r.status, stderr: r.stderr };
}

describe('the Slurm job script', () => {
  it('passes every agent option and path as the same bytes, in each array element', () => {
    const runA = join(dir, "run 'a' $(touch CANARY)");
    const runB = join(dir, 'run-b');
    const argsA = HOSTILE.map((v, i) => `--opt${i}=${v}`);
    const script = jobScript({ python, agentDir: join(dir, 'agent "dir"'), elements: [{ runDir: runA, agentArgs: argsA }, { runDir: runB, agentArgs: ['--users=2'] }], array: true });
    expect(spawnSync('/bin/bash', ['-n'], { input: script }).status).toBe(0);
    for (const [index, runDir, args] of [['0', runA, argsA], ['1', runB, ['--users=2']]] as const) {
      const r = run(script, { SLURM_ARRAY_TASK_ID: index });
      expect(r.code, r.stderr).toBe(0);
      const attempt = join(runDir, 'attempt-0');
      const argv = readFileSync(join(attempt, 'argv.bin'), 'utf8').split('\0').slice(0, -1);
      expect(argv).toEqual(['-m', 'kvscope_agent', 'run', ...args, '--out', attempt]);
      expect(readFileSync(join(attempt, 'pythonpath.txt'), 'utf8')).toBe(join(dir, 'agent "dir"'));
      expect(readFileSync(join(attempt, 'exit'), 'utf8').trim()).toBe('0');
      expect(readFileSync(join(attempt, 'placement.json'), 'utf8').trim()).toBe('{}');
    }
    expect(existsSync(join(dir, 'elsewhere', 'CANARY'))).toBe(false);
    expect(existsSync(join(dir, 'CANARY'))).toBe(false);
  });

  it('an unknown array index stops the job before it writes anything', () => {
    const script = jobScript({ python, agentDir: dir, elements: [{ runDir: join(dir, 'r'), agentArgs: [] }], array: true });
    const r = run(script, { SLURM_ARRAY_TASK_ID: '7' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no run for array task 7/);
    expect(existsSync(join(dir, 'r'))).toBe(false);
  });

  it('a requeued start writes to the next attempt folder', () => {
    const script = jobScript({ python, agentDir: dir, elements: [{ runDir: join(dir, 'r'), agentArgs: [] }], array: false });
    expect(run(script, { SLURM_RESTART_COUNT: '2' }).code).toBe(0);
    expect(readFileSync(join(dir, 'r', 'attempt-2', 'exit'), 'utf8').trim()).toBe('0');
    expect(existsSync(join(dir, 'r', 'attempt-0'))).toBe(false);
  });

  it('runs the set-up line exactly once, in the job shell, before the agent', () => {
    // Evaluated once (in the attempt folder, where the agent runs): the single-quoted $(…) stays
    // text. Evaluated twice, or inside double quotes on the way, it would make the canary.
    const setup = `printf '%s\\n' '$(touch CANARY-setup)' "it's" >> said.txt; export KV_FROM_SETUP=yes`;
    const script = jobScript({ python, agentDir: dir, setup, elements: [{ runDir: join(dir, 'r'), agentArgs: [] }], array: false });
    expect(run(script, {}).code).toBe(0);
    const attempt = join(dir, 'r', 'attempt-0');
    expect(readFileSync(join(attempt, 'said.txt'), 'utf8')).toBe(`$(touch CANARY-setup)\nit's\n`);
    for (const d of [attempt, dir, join(dir, 'elsewhere')]) expect(existsSync(join(d, 'CANARY-setup'))).toBe(false);
    expect(readFileSync(join(dir, 'r', 'attempt-0', 'setup-env.txt'), 'utf8')).toBe('yes');
  });

  it('a set-up line that fails (or is not even valid shell) records why, and the agent never starts', () => {
    const canary = join(dir, 'CANARY-broken');
    for (const [setup, status] of [
      [`'; touch ${canary}; '`, '127'],
      [`echo "unterminated; touch ${canary}`, '2'],
      ['false', '1'],
    ] as const) {
      const runDir = join(dir, `r-${status}`);
      const script = jobScript({ python, agentDir: dir, setup, elements: [{ runDir, agentArgs: [] }], array: false });
      expect(run(script, {}).code).toBe(Number(status));
      const attempt = join(runDir, 'attempt-0');
      expect(readFileSync(join(attempt, 'exit'), 'utf8').trim()).toBe(status);
      expect(readFileSync(join(attempt, 'agent.stderr'), 'utf8')).toMatch(new RegExp(`set-up line failed with status ${status}; the agent was not started`));
      expect(existsSync(join(attempt, 'argv.bin'))).toBe(false);
    }
    expect(existsSync(canary)).toBe(false);
  });

  it('extra sbatch options are #SBATCH lines before the first command', () => {
    const script = jobScript({ python, agentDir: dir, sbatch: ['--qos=high', '--comment=$(touch CANARY)'], elements: [{ runDir: dir, agentArgs: [] }], array: false });
    const lines = script.split('\n');
    expect(lines.slice(0, 3)).toEqual(['#!/bin/bash', '#SBATCH --qos=high', '#SBATCH --comment=$(touch CANARY)']);
    // Comments to bash: running the script never evaluates them.
    expect(run(script, {}).code).toBe(0);
    expect(existsSync(join(dir, 'elsewhere', 'CANARY'))).toBe(false);
  });
});
