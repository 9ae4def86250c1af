/**
 * The New run / sweep form as data: what the user typed, validated field by field (the error
 * names the field, as the agent's CLI does for a bad option), turned into a RunRequest or a
 * SweepRequest. Pure, so it is tested without a browser.
 */
import type { AgentWorkload, HostProbe, OffloadPolicy, RunRequest, SweepRequest } from '../../shared/api';
import { parseUserCounts } from '../../shared/user-counts';
import { PRESET_NAMES } from '../../shared/model-presets';
import { bytesText, defaultOf, numberDefault, optionOf, optionValueError, parseBytes, seedUsers } from '../../shared/workload-options';
import { hostCompute, planPools, type PoolPlan } from './pool-plan';

export interface RunForm {
  hosts: string[];
  engine: 'torch' | 'tensorrt_llm' | 'vllm';
  model: string;
  /** "4", "2-16", "2,4,8,16" or "2-16:2" (range with a step). */
  users: string;
  rounds: string;
  context_tokens: string;
  new_tokens: string;
  output_tokens: string;
  /** "0.9" (fraction of free GPU memory) or a byte size "20e9" / "20GB". */
  gpu_pool: string;
  /** Bytes ("55e9", "55GB"); 0 = no host pool (the recompute baseline). */
  host_pool: string;
  trace: boolean;
  sample_ms: string;
  /** The built-in engine's offload policy and copy overlap (sent for engine "torch" only: the
   * real engines offload their own way). */
  offload_policy: OffloadPolicy;
  /** auto = the agent's choice for the policy (copyOverlapAuto), not sent. */
  copy_overlap: 'auto' | 'on' | 'off';
  name: string;
  /** Python on the host(s) for this run; '' = each host's own setting (default python3). */
  python: string;
}

const SEED_USERS = seedUsers();

/** The seed workload's defaults: the agent's option table's (shared/workload-options.ts), with the
 * seed's users (a sweep, 2-16) and model: Llama-3.1-70B in FP8, the only 70B preset whose weights
 * fit one 80 GB GPU (bf16 would need ~141 GB); on a host without an FP8 GPU the agent refuses it at
 * once with an "unsupported" error naming the GPU. */
export const DEFAULT_FORM: RunForm = {
  hosts: [],
  engine: defaultOf('engine') as RunForm['engine'],
  model: String(optionOf('model').seed),
  users: `${SEED_USERS.min}-${SEED_USERS.max}`,
  rounds: String(numberDefault('rounds')),
  context_tokens: String(numberDefault('context_tokens')),
  new_tokens: String(numberDefault('new_tokens')),
  output_tokens: String(numberDefault('output_tokens')),
  gpu_pool: String(numberDefault('free_gpu_memory_fraction')),
  host_pool: bytesText(numberDefault('host_kv_bytes')),
  trace: defaultOf('trace') === true,
  sample_ms: String(numberDefault('sample_ms')),
  offload_policy: defaultOf('offload_policy') as OffloadPolicy,
  copy_overlap: defaultOf('copy_overlap') as RunForm['copy_overlap'],
  name: '',
  python: '',
};

/** The built-in engine's presets (the agent's presets.json). */
export const MODELS = PRESET_NAMES;

export interface FieldError {
  field: keyof RunForm;
  message: string;
}

export { parseBytes };

/** A whole-number field, within its option's bounds (the agent's option table). */
function int(form: RunForm, field: keyof RunForm & string): number | FieldError {
  const raw = String(form[field]).trim();
  if (!/^\d+$/.test(raw)) return { field, message: `${field}: a whole number is needed` };
  const v = Number(raw);
  if (optionValueError(field, v) === null) return v;
  const { min, max } = optionOf(field);
  return { field, message: `${field}: must be ${max !== undefined ? `${min ?? 0}..${max}` : `at least ${min}`}` };
}

/**
 * Why the chosen engine cannot run on a probed host with the form's Python, or null (it can, or
 * the probe cannot say: not probed, or probed with another interpreter than this run's).
 */
export function engineMissing(form: Pick<RunForm, 'engine' | 'python'>, host: string, probe: HostProbe | undefined): string | null {
  if (!probe) return null;
  const py = form.python.trim();
  if (py && probe.python?.executable !== py) {
    // Another interpreter: the probe's list of those that import torch says for the built-in engine.
    if (form.engine !== 'torch' || !probe.torch_pythons) return null;
    return probe.torch_pythons.some((t) => t.executable === py) ? null : `engine: ${py} on ${host} does not import torch (the probe tried it)`;
  }
  const e = probe.engines.find((x) => x.name === form.engine);
  if (e?.available) return null;
  const python = probe.python?.executable ?? (py || 'python3');
  // A Slurm login node's interpreters are not the compute nodes': no interpreter to suggest there.
  if (form.engine === 'torch' && !probe.slurm) {
    const others = probe.torch_pythons ?? [];
    return `engine: ${python} on ${host} does not import torch${others.length ? ` — use ${others.map((t) => t.executable).join(' or ')} (Python field)` : ': install PyTorch there (Debian: apt-get install python3-torch) or give a Python that has it'}`;
  }
  return `engine: ${form.engine} is not available on ${host}${e?.reason ? ` (${e.reason})` : ''}`;
}

/** The pre-flight plan of each chosen host (null where the model is not a preset or a field does not parse). */
export function formPlans(form: RunForm, probes: Record<string, HostProbe | undefined>): Array<{ host: string; plan: PoolPlan | null }> {
  const users = parseUserCounts(form.users);
  const n = (v: string) => (/^\d+$/.test(v.trim()) ? Number(v.trim()) : null);
  const [rounds, ctx, nt, ot] = [n(form.rounds), n(form.context_tokens), n(form.new_tokens), n(form.output_tokens)];
  const hb = parseBytes(form.host_pool);
  const gp = form.gpu_pool.trim();
  const frac = Number(gp);
  const gpu = gp !== '' && optionValueError('free_gpu_memory_fraction', frac) === null ? { fraction: frac } : parseBytes(gp) !== null ? { bytes: parseBytes(gp)! } : null;
  return form.hosts.map((host) => ({
    host,
    plan:
      typeof users === 'string' || rounds === null || ctx === null || nt === null || ot === null || hb === null || gpu === null
        ? null
        : planPools({ model: form.model.trim(), users, rounds, context_tokens: ctx, new_tokens: nt, output_tokens: ot }, gpu, hb, hostCompute(probes[host], form.python)),
  }));
}

export type Validated = { ok: true; users: number[]; run: RunRequest | null; sweep: SweepRequest | null } | { ok: false; errors: FieldError[] };

/**
 * Checks every field; engines a probed host lacks are refused by name. One host and one user
 * count make a run; anything more makes a sweep (one run per user count per host).
 */
export function validateRunForm(form: RunForm, probes: Record<string, HostProbe | undefined> = {}): Validated {
  const errors: FieldError[] = [];
  const take = <T,>(v: T | FieldError): T | null => {
    if (v && typeof v === 'object' && 'field' in (v as object)) {
      errors.push(v as FieldError);
      return null;
    }
    return v as T;
  };
  if (form.hosts.length === 0) errors.push({ field: 'hosts', message: 'hosts: choose at least one host' });
  for (const h of form.hosts) {
    const why = engineMissing(form, h, probes[h]);
    if (why) errors.push({ field: 'engine', message: why });
  }
  if (!form.model.trim()) errors.push({ field: 'model', message: 'model: choose a preset or give a config.json path' });
  const users = parseUserCounts(form.users);
  if (typeof users === 'string') errors.push({ field: 'users', message: `users: ${users}` });
  const rounds = take(int(form, 'rounds'));
  const ctx = take(int(form, 'context_tokens'));
  const nt = take(int(form, 'new_tokens'));
  const ot = take(int(form, 'output_tokens'));
  const sample = take(int(form, 'sample_ms'));
  const workload: AgentWorkload = { engine: form.engine, model: form.model.trim() };
  const gp = form.gpu_pool.trim();
  const frac = Number(gp);
  if (gp !== '' && optionValueError('free_gpu_memory_fraction', frac) === null) workload.free_gpu_memory_fraction = frac;
  else {
    const b = parseBytes(gp);
    if (b === null || optionValueError('gpu_kv_bytes', b) !== null) errors.push({ field: 'gpu_pool', message: 'gpu_pool: a fraction of free GPU memory (0..1] or a size like 20GB' });
    else workload.gpu_kv_bytes = b;
  }
  const hb = parseBytes(form.host_pool);
  if (hb === null || optionValueError('host_kv_bytes', hb) !== null) errors.push({ field: 'host_pool', message: 'host_pool: a size like 55e9 or 55GB (0 = no host pool)' });
  else workload.host_kv_bytes = hb;
  if (!errors.length && typeof users !== 'string') {
    // The pre-flight check: a GPU pool smaller than one request (or weights bigger than the GPU) is
    // refused here, before connecting and deploying, as the agent would refuse it there.
    const w = { model: workload.model!, users, rounds: rounds!, context_tokens: ctx!, new_tokens: nt!, output_tokens: ot! };
    const gpu = workload.gpu_kv_bytes !== undefined ? { bytes: workload.gpu_kv_bytes } : { fraction: workload.free_gpu_memory_fraction! };
    for (const h of form.hosts) {
      for (const e of planPools(w, gpu, hb!, hostCompute(probes[h], form.python))?.errors ?? []) {
        const message = form.hosts.length > 1 ? `${e.message} (on ${h})` : e.message;
        if (!errors.some((x) => x.message === message)) errors.push({ field: e.field, message });
      }
    }
  }
  if (errors.length || typeof users === 'string') return { ok: false, errors };
  Object.assign(workload, { rounds: rounds!, context_tokens: ctx!, new_tokens: nt!, output_tokens: ot!, trace: form.trace, sample_ms: sample! });
  if (form.engine === 'torch') {
    workload.offload_policy = form.offload_policy;
    if (form.copy_overlap !== 'auto') workload.copy_overlap = form.copy_overlap === 'on';
  }
  const name = form.name.trim() || undefined;
  const python = form.python.trim() ? { python: form.python.trim() } : {};
  if (form.hosts.length === 1 && users.length === 1) {
    return { ok: true, users, run: { host: form.hosts[0]!, name, ...python, workload: { ...workload, users: users[0]! } }, sweep: null };
  }
  return { ok: true, users, run: null, sweep: { hosts: form.hosts, users, workload, name, ...python } };
}
