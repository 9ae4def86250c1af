/**
 * New run's pre-flight check and host-following defaults, against real answers: probes recorded on
 * this Debian CPU machine (python3 without torch, Debian's python3 with it) and on an H100, the
 * pool lines of recorded runs, and the agent's own refusal of a pool too small for one request.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HostProbe } from '../../src/shared/api';
import type { PoolEvent, RunStartEvent } from '../../src/shared/protocol';
import { cpuStartingForm, hostCompute, planPools, requestSize } from '../../src/renderer/model/pool-plan';
import { DEFAULT_FORM, engineMissing, formPlans, validateRunForm } from '../../src/renderer/model/run-form';
import { realRuns } from '../helpers/real-runs';

const cpuProbe = JSON.parse(readFileSync('test/fixtures/probes/debian12-cpu-python3-without-torch.json', 'utf8')) as HostProbe;
const h100 = { ...(JSON.parse(readFileSync('bench/results/h100-2026-11-28/probe-h100.json', 'utf8')) as HostProbe), alias: 'h100' };
const debianTorch = cpuProbe.torch_pythons![0]!.executable;

describe('New run pre-flight', () => {
  it('a host whose python3 lacks torch: the engine is refused, naming the interpreters that have it; choosing one clears it', () => {
    const form = { ...DEFAULT_FORM, hosts: ['local'], ...cpuStartingForm(10, 64, 64) };
    const v = validateRunForm(form, { local: cpuProbe });
    expect(v.ok).toBe(false);
    expect(!v.ok && v.errors.find((e) => e.field === 'engine')?.message).toBe(`engine: ${cpuProbe.python!.executable} on local does not import torch — use ${debianTorch} (Python field)`);
    const fixed = validateRunForm({ ...form, python: debianTorch }, { local: cpuProbe });
    expect(fixed.ok).toBe(true);
    expect(fixed.ok && fixed.run?.python).toBe(debianTorch);
    // An interpreter the probe tried and that did not import torch is refused too.
    expect(engineMissing({ engine: 'torch', python: '/nowhere/python3' }, 'local', cpuProbe)).toMatch(/does not import torch/);
    // Not probed: nothing is claimed.
    expect(engineMissing({ engine: 'torch', python: '' }, 'gpu1', undefined)).toBeNull();
  });

  it('the device follows the chosen interpreter: the CPU here, CUDA on the H100', () => {
    expect(hostCompute(cpuProbe, '')).toEqual({ device: 'cpu', gpuFreeBytes: null });
    expect(hostCompute(cpuProbe, debianTorch)).toEqual({ device: 'cpu', gpuFreeBytes: null });
    expect(hostCompute(h100, '')).toEqual({ device: 'cuda', gpuFreeBytes: h100.gpus[0]!.memory_free_bytes });
    expect(hostCompute(undefined, '')).toEqual({ device: null, gpuFreeBytes: null });
    // A Slurm login node's probe (no GPU there) says nothing of the compute nodes: no CPU starting form.
    expect(hostCompute({ ...cpuProbe, slurm: { version: 'slurm 22.05.8', partitions: [], defaultAccount: null, sharedDir: { path: '~/.cache/kvscope', writable: true, error: null }, notes: [] } }, '')).toEqual({ device: null, gpuFreeBytes: null });
  });

  it('a CPU host starts from the tiny model with a GPU pool for 2 of its 4 users and a host pool for all', () => {
    const start = cpuStartingForm(10, 64, 64);
    expect(start).toMatchObject({ model: 'tiny', users: '4', context_tokens: '512' });
    const form = { ...DEFAULT_FORM, hosts: ['local'], python: debianTorch, ...start };
    const plan = formPlans(form, { local: cpuProbe })[0]!.plan!;
    expect(plan.device).toBe('cpu');
    expect(plan.gpuUsers).toBe(2);
    expect(plan.hostUsers).toBeGreaterThanOrEqual(4);
    expect(plan.gpu).toMatch(/^\d\.\d\d MB = \d+ blocks: 2 users at once, 58 blocks of 16\.4 kB a user \(1,856 tokens at the last round\) — 4 users take turns: the others wait in the host pool$/);
  });

  it('block sizes and pool blocks are those of the recorded runs\' pool lines (CPU fp32, H100 bf16 and FP8)', () => {
    const runs = realRuns({ maxBytes: 20e6 });
    expect(runs.length).toBeGreaterThan(3);
    for (const r of runs) {
      const start = r.events.find((e): e is RunStartEvent => e.type === 'run.start')!;
      const gpuLine = r.events.find((e): e is PoolEvent => e.type === 'pool' && e.pool === 'gpu');
      const c = start.config as Record<string, number | string>;
      if (!gpuLine || typeof c.model !== 'string' || c.block_tokens !== 32) continue;
      const device = String(c.device).startsWith('cuda') ? 'cuda' : 'cpu';
      const w = { model: c.model, users: [Number(c.users)], rounds: Number(c.rounds), context_tokens: Number(c.context_tokens), new_tokens: Number(c.new_tokens), output_tokens: Number(c.output_tokens) };
      const gpu = typeof c.gpu_kv_bytes === 'number' ? { bytes: c.gpu_kv_bytes } : { fraction: 0.9 };
      const plan = planPools(w, gpu, Number(c.host_kv_bytes), { device, gpuFreeBytes: null })!;
      expect(plan.blockBytes, r.name).toBe(gpuLine.block_bytes);
      // A pool given in bytes: the blocks it makes are the pool line's.
      if ('bytes' in gpu) expect(plan.gpu, r.name).toContain(` = ${gpuLine.capacity_blocks.toLocaleString('en-US')} blocks: `);
    }
  });

  it('refuses a GPU pool smaller than one request before launch, with the numbers the agent refuses it with', () => {
    const form = { ...DEFAULT_FORM, hosts: ['local'], python: debianTorch, model: 'tiny', users: '4', rounds: '10', context_tokens: '512', gpu_pool: '100000', host_pool: '8e6' };
    const v = validateRunForm(form, { local: cpuProbe });
    expect(!v.ok && v.errors).toEqual([{ field: 'gpu_pool', message: 'gpu_pool: 100 kB holds 6 blocks of 16.4 kB; one request needs 58 (1,856 tokens)' }]);
    // The agent, run here, refuses the same pool with the same counts (before building any weights).
    const agent = spawnSync(debianTorch, ['-m', 'kvscope_agent', 'run', '--model=tiny', '--device=cpu', '--users=4', '--rounds=10', '--context-tokens=512', '--gpu-kv-bytes=100000', '--host-kv-bytes=8e6', '--trace=off', '--sample-ms=0', `--out=${mkdtempSync(join(tmpdir(), 'kvscope-refuse-'))}`], {
      cwd: 'resources/agent',
      env: { ...process.env, PYTHONPATH: '.' },
      encoding: 'utf8',
    });
    if (agent.error || /No module named 'torch'/.test(agent.stderr)) return; // no python3-torch here: the counts above still stand
    expect(agent.status).toBe(2);
    expect(agent.stderr).toContain('100000 bytes hold 6 blocks of 16384 bytes; one request needs 58 (1856 tokens)');
  });

  it('a 70B bf16 model does not fit an 80 GB card: refused by name; the FP8 seed model fits and the plan says how many users', () => {
    const seed = { ...DEFAULT_FORM, hosts: ['h100'], users: '2-16' };
    const ok = validateRunForm(seed, { h100 });
    expect(ok.ok).toBe(true);
    const plan = formPlans(seed, { h100 })[0]!.plan;
    expect(plan!.gpuUsers).toBeGreaterThanOrEqual(2);
    expect(plan!.gpu).toMatch(/^at most .* up to \d+ users at once/);
    const big = validateRunForm({ ...seed, model: 'llama-3.1-70b' }, { h100 });
    expect(!big.ok && big.errors).toEqual([{ field: 'model', message: "model: llama-3.1-70b's weights (141 GB) do not fit GPU 0's 85.0 GB free" }]);
  });

  it('a request\'s size is the agent\'s (context + rounds × (new + output) + output, in 32-token blocks)', () => {
    expect(requestSize({ rounds: 10, context_tokens: 16000, new_tokens: 64, output_tokens: 64 })).toEqual({ tokens: 17344, blocks: 542 });
  });
});
