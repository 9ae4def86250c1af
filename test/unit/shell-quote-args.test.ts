/**
 * What reaches the agent's command line besides quoting: every workload value is validated and
 * fused to its option (`--model=<value>`), so no value can become another option.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { copyOverlapAuto } from '../../src/shared/api';
import { OFFLOAD_POLICIES } from '../../src/shared/workload-options';
import { agentRunArgs, newRunId } from '../../src/main/core/runs';
import { checkRunId } from '../../src/main/core/run-store';
import { sweepUsers } from '../../src/main/core/sweep';
import { parseUserCounts } from '../../src/shared/user-counts';

describe('agentRunArgs', () => {
  it('maps the workload to the agent\'s options, one word each', () => {
    expect(agentRunArgs({ model: 'tiny', device: 'cpu', users: 4, rounds: 10, context_tokens: 16000, host_kv_bytes: 55e9, free_gpu_memory_fraction: 0.9, trace: false, sample_ms: 100 })).toEqual([
      '--model=tiny',
      '--device=cpu',
      '--users=4',
      '--rounds=10',
      '--context-tokens=16000',
      '--free-gpu-memory-fraction=0.9',
      '--host-kv-bytes=55000000000',
      '--trace=off',
      '--sample-ms=100',
    ]);
  });

  it('maps the built-in engine\'s offload policy and copy overlap', () => {
    expect(agentRunArgs({ offload_policy: 'lazy-keep', copy_overlap: true })).toEqual(['--offload-policy=lazy-keep', '--copy-overlap=on']);
    expect(agentRunArgs({ offload_policy: 'write-through', copy_overlap: false })).toEqual(['--offload-policy=write-through', '--copy-overlap=off']);
  });

  it('offers exactly the offload policies the bundled agent takes, and knows what its --copy-overlap auto picks', () => {
    // The agent's own list and function, asked through Debian's python3 (engine/__init__.py imports no torch).
    const out = execFileSync('python3', ['-c', 'import json\nfrom kvscope_agent.engine import OFFLOAD_POLICIES, default_copy_overlap\nprint(json.dumps([[p, default_copy_overlap(p)] for p in OFFLOAD_POLICIES]))'], {
      env: { ...process.env, PYTHONPATH: join(__dirname, '../../resources/agent') },
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual(OFFLOAD_POLICIES.map((p) => [p, copyOverlapAuto(p)]));
    expect(copyOverlapAuto('lazy')).toBe(true);
  });

  it('a value that looks like an option stays the value of its own option', () => {
    expect(agentRunArgs({ model: '--out=/etc' })).toEqual(['--model=--out=/etc']);
  });

  it.each([
    [{ users: 0 }, /--users must be an integer ≥ 1/],
    [{ users: 2.5 }, /--users must be an integer/],
    [{ rounds: Number.NaN }, /--rounds/],
    [{ free_gpu_memory_fraction: 1.5 }, /≤ 1/],
    [{ model: '' }, /--model must be a non-empty string/],
    [{ users: '4' as unknown as number }, /--users/],
    [{ offload_policy: 'sometimes' as unknown as 'lazy' }, /--offload-policy must be one of lazy, lazy-keep, write-through/],
    [{ offload_policy: 'lazy; rm -rf /' as unknown as 'lazy' }, /--offload-policy/],
    [{ copy_overlap: 'on' as unknown as boolean }, /--copy-overlap must be true or false/],
  ])('refuses %j', (w, msg) => {
    expect(() => agentRunArgs(w)).toThrow(msg);
  });
});

describe('run ids and user lists', () => {
  it('a new run id is a safe folder name even for a hostile host alias', () => {
    const id = newRunId('a b/../$(x)', 4, new Date('2026-11-27T23:50:01Z'));
    expect(id).toMatch(/^20261127-235001-a_b_\.\.___x_-u4-[a-z0-9]{6}$/);
    expect(() => checkRunId(id)).not.toThrow();
  });

  it('one reader of user-count lists for the CLI and the form: lists, ranges (.. or -), steps, order kept', () => {
    expect(parseUserCounts('2..5')).toEqual([2, 3, 4, 5]);
    expect(parseUserCounts('2-8:2, 16')).toEqual([2, 4, 6, 8, 16]);
    expect(parseUserCounts('2,4,8,16')).toEqual([2, 4, 8, 16]);
    expect(parseUserCounts('2..16:7,3,2')).toEqual([2, 9, 16, 3]);
    expect(parseUserCounts('4')).toEqual([4]);
    expect(parseUserCounts('0..3')).toMatch(/start at 1/);
    expect(parseUserCounts('8-2')).toMatch(/goes up/);
    expect(parseUserCounts('4000..5000')).toMatch(/at most 4096/);
    expect(parseUserCounts('1..300')).toMatch(/more than 256/);
    expect(parseUserCounts(' , ')).toMatch(/at least one/);
    expect(parseUserCounts('many')).toMatch(/not a user count/);
    expect(sweepUsers('2..16:7')).toEqual([2, 9, 16]);
    expect(() => sweepUsers('many')).toThrow(/--users: .*not a user count/);
  });
});
