/**
 * New run's pre-flight check: how many users' conversations the GPU pool and the host pool hold,
 * worked out before launch from the agent's own sizes (model presets, block of 32 tokens, a
 * request's longest prompt), and a GPU pool too small for one request refused by name, as the
 * agent would refuse it after connecting and deploying. Also the starting values for a host that
 * computes on the CPU (tiny model, pools sized so blocks move). Pure.
 */
import { formatBytes, formatCount, plural } from '../../shared/format';
import { kvBytesPerToken, MODEL_PRESETS, weightBytesGpu, type ComputeDevice } from '../../shared/model-presets';
import type { HostProbe } from '../../shared/api';
import { numberDefault } from '../../shared/workload-options';

/** The agent's --block-tokens default (the form does not change it). */
export const BLOCK_TOKENS = numberDefault('block_tokens');

export interface Workload {
  model: string;
  users: number[];
  rounds: number;
  context_tokens: number;
  new_tokens: number;
  output_tokens: number;
}

/** Where a host's runs compute, from its probe (null: not probed). */
export interface HostCompute {
  device: ComputeDevice | null;
  /** Free memory of GPU 0 before the run, bytes (probe), when there is a GPU. */
  gpuFreeBytes: number | null;
}

/**
 * The device the built-in engine will use on a probed host with this Python: CUDA when that
 * interpreter's torch has it, else the CPU (the agent's default device).
 */
export function hostCompute(probe: HostProbe | undefined, python: string): HostCompute {
  // A Slurm login node's probe says nothing of the compute nodes the job will run on.
  if (!probe || probe.slurm) return { device: null, gpuFreeBytes: null };
  const py = python.trim();
  let cuda: boolean;
  if (!py || py === probe.python?.executable) cuda = probe.torch?.cuda_available ?? false;
  else {
    // Another interpreter: what the probe found of it, else (not found) the host's GPUs.
    const found = probe.torch_pythons?.find((t) => t.executable === py);
    cuda = found ? found.cuda_available : (probe.gpus?.length ?? 0) > 0;
  }
  return { device: cuda ? 'cuda' : 'cpu', gpuFreeBytes: cuda ? (probe.gpus?.[0]?.memory_free_bytes ?? null) : null };
}

/** A request's longest prompt and its output (workload.max_request_tokens), and the blocks it fills. */
export function requestSize(w: Pick<Workload, 'rounds' | 'context_tokens' | 'new_tokens' | 'output_tokens'>): { tokens: number; blocks: number } {
  const tokens = Math.max(1, w.context_tokens + w.rounds * (w.output_tokens + w.new_tokens) + w.output_tokens);
  return { tokens, blocks: Math.ceil((tokens - 1) / BLOCK_TOKENS) };
}

export interface PoolPlan {
  device: ComputeDevice;
  blockBytes: number;
  request: { tokens: number; blocks: number; bytes: number };
  /** One line per pool, for the form. */
  gpu: string;
  host: string;
  /** Users whose longest requests the GPU pool holds at once (null: the agent sizes it at start). */
  gpuUsers: number | null;
  hostUsers: number | null;
  /** Refusals, each naming its field. */
  errors: Array<{ field: 'gpu_pool' | 'host_pool' | 'model'; message: string }>;
}

/**
 * The pools for a workload on a host. `gpuPool` is a fraction of free GPU memory or bytes;
 * `hostBytes` 0 is no host pool. Null for a model that is not a preset (a config.json path: its
 * sizes are only known on the host).
 */
export function planPools(w: Workload, gpuPool: { fraction: number } | { bytes: number }, hostBytes: number, host: HostCompute): PoolPlan | null {
  const m = MODEL_PRESETS[w.model];
  if (!m) return null;
  const device = host.device ?? 'cuda';
  const blockBytes = BLOCK_TOKENS * kvBytesPerToken(m, device);
  const req = requestSize(w);
  const request = { ...req, bytes: req.blocks * blockBytes };
  const most = Math.max(1, ...w.users);
  const errors: PoolPlan['errors'] = [];
  const each = `${plural(request.blocks, 'block')} of ${formatBytes(blockBytes)} a user (${formatCount(request.tokens)} tokens at the last round)`;
  const onDevice = host.device === null ? ' (on a GPU; twice the bytes a block on the CPU — probe the host)' : '';
  let gpu: string;
  let gpuUsers: number | null = null;
  if ('bytes' in gpuPool) {
    const blocks = Math.floor(gpuPool.bytes / blockBytes);
    gpuUsers = Math.floor(blocks / request.blocks);
    gpu = `${formatBytes(gpuPool.bytes)} = ${plural(blocks, 'block')}: ${gpuUsers === 0 ? 'not one' : formatCount(gpuUsers)} user${gpuUsers === 1 ? '' : 's'} at once, ${each}${onDevice}`;
    if (blocks < request.blocks) {
      errors.push({ field: 'gpu_pool', message: `gpu_pool: ${formatBytes(gpuPool.bytes)} holds ${plural(blocks, 'block')} of ${formatBytes(blockBytes)}; one request needs ${formatCount(request.blocks)} (${formatCount(request.tokens)} tokens)` });
    }
  } else if (device === 'cpu') {
    gpu = `on the CPU the agent sizes it to hold every user (${formatBytes(most * request.bytes)}), so nothing is offloaded: give a size, e.g. ${roundedUpSizeText(2 * request.bytes)} for 2 users, to see blocks move`;
    gpuUsers = most;
  } else if (host.gpuFreeBytes !== null) {
    const weights = weightBytesGpu(m);
    if (weights >= host.gpuFreeBytes) {
      errors.push({ field: 'model', message: `model: ${w.model}'s weights (${formatBytes(weights)}) do not fit GPU 0's ${formatBytes(host.gpuFreeBytes)} free` });
      gpu = `no room: the weights alone take ${formatBytes(weights)} of ${formatBytes(host.gpuFreeBytes)} free`;
    } else {
      const bytes = gpuPool.fraction * (host.gpuFreeBytes - weights);
      gpuUsers = Math.floor(Math.floor(bytes / blockBytes) / request.blocks);
      gpu = `at most ${formatBytes(bytes)} (${gpuPool.fraction} × (${formatBytes(host.gpuFreeBytes)} free − ${formatBytes(weights)} of weights), less the agent's workspace): up to ${plural(gpuUsers, 'user')} at once, ${each}`;
    }
  } else {
    gpu = `${gpuPool.fraction} of the GPU's free memory after the weights, sized by the agent at start; ${each}${host.device === null ? ' (probe the host for its free memory)' : ''}`;
  }
  let hostLine: string;
  let hostUsers: number | null = null;
  if (hostBytes === 0) hostLine = 'none: blocks pushed out of the GPU pool are dropped and recomputed (the recompute baseline)';
  else {
    const blocks = Math.floor(hostBytes / blockBytes);
    hostUsers = Math.floor(blocks / request.blocks);
    hostLine = `${formatBytes(hostBytes)} = ${plural(blocks, 'block')}: ${plural(hostUsers, 'user')}' conversations`;
    if (blocks < request.blocks) hostLine += ' — less than one request: offloaded blocks mostly do not fit';
  }
  if (gpuUsers !== null && gpuUsers >= 1 && most > gpuUsers) {
    gpu += ` — ${formatCount(most)} users take turns: ${hostBytes === 0 ? 'the others recompute their context' : 'the others wait in the host pool'}`;
  }
  return { device, blockBytes, request, gpu, host: hostLine, gpuUsers, hostUsers, errors };
}

/** 1_114_112 → "1.2MB": a size as the form takes it, rounded up to two significant digits. */
export function roundedUpSizeText(bytes: number): string {
  const units: Array<[number, string]> = [
    [1e12, 'TB'],
    [1e9, 'GB'],
    [1e6, 'MB'],
    [1e3, 'kB'],
  ];
  for (const [u, name] of units) {
    if (bytes >= u) {
      const v = bytes / u;
      const step = v >= 10 ? 1 : 0.1;
      return `${Number((Math.ceil(v / step) * step).toFixed(1))}${name}`;
    }
  }
  return String(Math.ceil(bytes));
}

/**
 * New run's starting workload on a host that computes on the CPU: the tiny preset, 4 users, a
 * 512-token context, a GPU pool for 2 users (so blocks are offloaded and onboarded) and a host
 * pool for all of them, instead of the seed's 70B model and 55 GB host pool.
 */
export function cpuStartingForm(rounds: number, newTokens: number, outputTokens: number): { model: string; users: string; context_tokens: string; gpu_pool: string; host_pool: string } {
  const users = 4;
  const m = MODEL_PRESETS.tiny!;
  const req = requestSize({ rounds, context_tokens: 512, new_tokens: newTokens, output_tokens: outputTokens });
  const bytes = req.blocks * BLOCK_TOKENS * kvBytesPerToken(m, 'cpu');
  return { model: 'tiny', users: String(users), context_tokens: '512', gpu_pool: roundedUpSizeText(2 * bytes), host_pool: roundedUpSizeText(users * bytes) };
}
