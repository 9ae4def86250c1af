import { describe, expect, it } from 'vitest';
import { DEFAULT_FORM, MODELS, parseBytes, validateRunForm } from '../../src/renderer/model/run-form';
import type { HostProbe } from '../../src/shared/api';

describe('New run form validation', () => {
  it('defaults to the seed model, a preset that fits one 80 GB GPU (70B in FP8, not bf16)', () => {
    expect(DEFAULT_FORM.model).toBe('llama-3.1-70b-fp8');
    expect(MODELS).toContain(DEFAULT_FORM.model);
  });

  it('reads byte sizes', () => {
    expect(parseBytes('55e9')).toBe(55e9);
    expect(parseBytes('20 GiB')).toBe(20 * 1024 ** 3);
    expect(parseBytes('lots')).toBeNull();
  });

  it('names the field in every error', () => {
    const v = validateRunForm({ ...DEFAULT_FORM, hosts: [], rounds: 'ten', host_pool: 'big', gpu_pool: '-1' });
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.errors.map((e) => e.field).sort()).toEqual(['gpu_pool', 'host_pool', 'hosts', 'rounds']);
    for (const e of v.errors) expect(e.message.startsWith(`${e.field}:`)).toBe(true);
  });

  it('makes one run for one host and one user count, a sweep otherwise', () => {
    const one = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], users: '4', gpu_pool: '20GB' });
    expect(one.ok && one.run?.workload).toMatchObject({ users: 4, gpu_kv_bytes: 20e9, host_kv_bytes: 55e9, rounds: 10, context_tokens: 16000 });
    const sweep = validateRunForm({ ...DEFAULT_FORM, hosts: ['local', 'h100'] });
    expect(sweep.ok && sweep.sweep).toMatchObject({ hosts: ['local', 'h100'], users: Array.from({ length: 15 }, (_, i) => i + 2) });
    expect(sweep.ok && sweep.sweep?.workload.free_gpu_memory_fraction).toBe(0.9);
    const py = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], users: '2', python: ' /usr/bin/python3 ' });
    expect(py.ok && py.run?.python).toBe('/usr/bin/python3');
    expect(one.ok && 'python' in one.run!).toBe(false);
  });

  it('sends the offload policy and copy overlap for the built-in engine only', () => {
    const torch = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], users: '4', offload_policy: 'lazy-keep', copy_overlap: 'on' });
    expect(torch.ok && torch.run?.workload).toMatchObject({ offload_policy: 'lazy-keep', copy_overlap: true });
    const off = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], users: '4', copy_overlap: 'off' });
    expect(off.ok && off.run?.workload).toMatchObject({ offload_policy: 'lazy', copy_overlap: false });
    expect(DEFAULT_FORM.offload_policy).toBe('lazy'); // the agent's default, TensorRT-LLM's behaviour
    // auto (the default) leaves the choice to the agent's --copy-overlap auto: nothing is sent.
    expect(DEFAULT_FORM.copy_overlap).toBe('auto');
    const auto = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], users: '4' });
    expect(auto.ok && auto.run?.workload).toMatchObject({ offload_policy: 'lazy' });
    expect(auto.ok && auto.run?.workload).not.toHaveProperty('copy_overlap');
    const real = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], users: '4', engine: 'vllm', offload_policy: 'write-through' });
    expect(real.ok && real.run?.workload).not.toHaveProperty('offload_policy');
    expect(real.ok && real.run?.workload).not.toHaveProperty('copy_overlap');
  });

  it('refuses an engine the probed host does not have, naming the host', () => {
    const probe = { engines: [{ name: 'torch', available: true, version: '2.5', reason: null }, { name: 'vllm', available: false, version: null, reason: 'No module named vllm' }] } as unknown as HostProbe;
    const v = validateRunForm({ ...DEFAULT_FORM, hosts: ['gpu1'], engine: 'vllm' }, { gpu1: probe });
    expect(!v.ok && v.errors[0]).toMatchObject({ field: 'engine' });
    expect(!v.ok && v.errors[0]!.message).toContain('gpu1');
    expect(validateRunForm({ ...DEFAULT_FORM, hosts: ['gpu1'], engine: 'torch' }, { gpu1: probe }).ok).toBe(true);
    // Probed with another interpreter: the probe does not speak for this one.
    const other = { ...probe, python: { executable: '/usr/bin/python3', version: '3.11' } } as HostProbe;
    expect(validateRunForm({ ...DEFAULT_FORM, hosts: ['gpu1'], engine: 'vllm', python: '/opt/venv/bin/python' }, { gpu1: other }).ok).toBe(true);
    expect(validateRunForm({ ...DEFAULT_FORM, hosts: ['gpu1'], engine: 'vllm', python: '/usr/bin/python3' }, { gpu1: other }).ok).toBe(false);
  });
});
