/**
 * The run's settings beside its results (the Summary view's "Run settings" panel): for a run the
 * what-if simulator made, what it simulated and how sure it is (`run.start.simulated`); then
 * workload, pools, engine execution and capture, read from `run.start` (`config`, `host`,
 * `capabilities`), the `pool` lines and `run.end.summary` (docs/protocol.md).
 *
 * Every field is optional: older logs, the TensorRT-LLM/vLLM runners and CPU fixtures lack many.
 * A row is made only from what the log says, never a default guessed here, and no value is ever
 * "undefined", "null" or "NaN" (each field is type-checked before it is formatted). A row that
 * shows one option carries the option table's label (shared/workload-options.ts).
 */
import { formatBandwidth, formatBytes, formatCount, formatNs, plural } from '../../shared/format';
import { poolTitle, type PoolName, type RunStartEvent, type RunSummary } from '../../shared/protocol';
import { optionOf } from '../../shared/workload-options';
import { calibrationCheckText, calibrationFactorName, splitHeldNote } from './calibration-names';
import { linkOf } from './link-bandwidth';

/** A row that shows one agent option is labelled as the option table labels it. */
const labelOf = (name: string): string => optionOf(name).label;

export interface SettingRow {
  /** Stable name of the row (for tests and `data-setting`), e.g. "users", "gpu_pool". */
  key: string;
  label: string;
  value: string;
  /** Longer text for a tooltip (a build log line, a probe error), when the log has one. */
  title?: string;
}

export interface SettingSection {
  title: 'Simulation' | 'Workload' | 'Pools' | 'Engine execution' | 'Capture';
  rows: SettingRow[];
}

/** A pool as the `pool` line declares it (the replay's and the ledger's `pools`). */
export interface PoolDecl {
  capacity_blocks: number;
  block_tokens: number;
  block_bytes: number;
  /** A protocol 2 pool line's tier, medium, and a disk tier's folder and I/O method. */
  tier?: number | null;
  medium?: string;
  path?: string;
  io?: string;
}

type Obj = Record<string, unknown>;

/** A finite number, else null (JSON may carry null, strings or nothing where a number belongs). */
function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** A non-empty string, else null. */
function str(v: unknown): string | null {
  return typeof v === 'string' && v.trim() !== '' ? v : null;
}

function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}

function onOff(v: unknown): string | null {
  return v === true ? 'on' : v === false ? 'off' : null;
}

/** "1,084 blocks · 4.55 GB (4.19 MB a block)". */
function poolText(p: PoolDecl): string {
  return `${plural(p.capacity_blocks, 'block')} · ${formatBytes(p.capacity_blocks * p.block_bytes)} (${formatBytes(p.block_bytes)} a block)`;
}

/** The model's shape from `config.model_config` (the built-in engine writes it; others may not). */
function modelShape(mc: Obj | null): string | null {
  if (!mc) return null;
  const parts: string[] = [];
  const layers = num(mc.layers);
  const hidden = num(mc.hidden);
  const kvHeads = num(mc.kv_heads);
  const heads = num(mc.heads);
  if (layers !== null) parts.push(plural(layers, 'layer'));
  if (hidden !== null) parts.push(`hidden ${formatCount(hidden)}`);
  if (kvHeads !== null) parts.push(`${plural(kvHeads, 'KV head')}${heads !== null ? ` (of ${formatCount(heads)})` : ''}`);
  const w = str(mc.weight_format);
  const kv = str(mc.kv_dtype);
  // "native" means the checkpoint's own dtype: only a quantised format says something here.
  if (w && w !== 'native') parts.push(`${w} weights`);
  if (kv && kv !== 'native') parts.push(`${kv} KV`);
  return parts.length ? parts.join(' · ') : null;
}

/**
 * Decode as the engine ran it: `summary.decode` {cuda_graphs, off_reason, bucket_tokens, graphs,
 * capture_ns, replays, eager_steps} at run end, else what `config.decode_graphs` asked for.
 */
function decodeText(decode: Obj | null, asked: unknown): { value: string; title?: string } | null {
  if (decode) {
    const graphs = num(decode.graphs);
    const capture = num(decode.capture_ns);
    const replays = num(decode.replays);
    const eager = num(decode.eager_steps);
    // graphs_held (agents since 2026-11-28): also the graphs a sweep's earlier runs captured, which
    // this run replayed without capturing any ("0 captured, 693 replays" read as a contradiction).
    const held = num(decode.graphs_held);
    const bucket = num(decode.bucket_tokens);
    const title = bucket !== null ? `graphs are captured per batch size and ${formatCount(bucket)}-token context bucket` : undefined;
    const eagerSteps = eager ? `, ${plural(eager, 'eager step')}` : '';
    if (decode.cuda_graphs === true) {
      const reused = held !== null && graphs !== null && held > graphs ? held - graphs : 0;
      const captured =
        graphs === null
          ? 'on'
          : graphs === 0 && reused > 0
            ? `${plural(reused, 'graph')} reused from the sweep's earlier runs (none captured in this run)`
            : `${formatCount(graphs)} captured${graphs > 0 && capture !== null ? ` (${formatNs(capture)})` : ''}${reused > 0 ? ` + ${formatCount(reused)} reused from the sweep's earlier runs` : ''}`;
      return { value: `CUDA graphs: ${captured}${replays !== null ? `, ${plural(replays, 'replay')}` : ''}${eagerSteps}`, title };
    }
    if (decode.cuda_graphs === false) {
      // The agent's reasons: "off" (--decode-graphs off), "not a CUDA device", "capture or replay
      // failed: …" (engine/decode_graph.py); an older agent wrote no reason when graphs were off.
      const reason = str(decode.off_reason) ?? (asked === false ? 'off' : null);
      // A run whose capture failed mid-run fell back to eager after some graph steps.
      const before = graphs ? ` after ${formatCount(graphs)} captured, ${plural(replays ?? 0, 'replay')}` : '';
      return { value: `eager${reason ? ` (${reason === 'off' ? '--decode-graphs off' : reason})` : ''}${before}${eagerSteps}`, title };
    }
  }
  if (asked === true) return { value: 'CUDA graphs requested (counts come with run.end)' };
  if (asked === false) return { value: 'eager (--decode-graphs off)' };
  return null;
}

/** `summary.plain_copy`: the plain pinned-copy baseline the agent measures before the rounds. */
function plainCopyText(pc: Obj | null): string | null {
  if (!pc) return null;
  const h2d = num(pc.h2d_gb_per_s);
  const d2h = num(pc.d2h_gb_per_s);
  if (h2d === null && d2h === null) return null;
  const rates = [h2d !== null ? `H2D ${formatBandwidth(h2d * 1e9)}` : null, d2h !== null ? `D2H ${formatBandwidth(d2h * 1e9)}` : null].filter(Boolean).join(' · ');
  const blocks = num(pc.blocks);
  const bytes = num(pc.bytes);
  const over = blocks !== null ? ` over ${plural(blocks, 'block')}${bytes !== null ? ` (${formatBytes(bytes)})` : ''}` : bytes !== null ? ` over ${formatBytes(bytes)}` : '';
  return `${rates}${over}`;
}

/** A capability: "on (cupti)" or "off (cupti): device cpu". `detail` adds what is on. */
function capabilityText(c: Obj | null, detail: (c: Obj) => string | null): { value: string; title?: string } | null {
  if (!c) return null;
  const source = str(c.source);
  const reason = str(c.reason);
  if (c.on === true) {
    const d = detail(c);
    // When on, `reason` is how it came up (the tracer's build line): a tooltip, not the value.
    return { value: `on${source ? ` (${source})` : ''}${d ? ` · ${d}` : ''}`, ...(reason ? { title: reason } : {}) };
  }
  if (c.on === false) return { value: `off${source ? ` (${source})` : ''}${reason ? `: ${reason}` : ''}` };
  return null;
}

/**
 * The settings of one run, in sections of rows; sections with no row are left out.
 * @param start the run's `run.start` line (null: not read yet, or the log has none)
 * @param summary `run.end.summary` (null while running or when the run never ended)
 * @param pools the `pool` lines seen so far (the replay's or the ledger's `pools`)
 */
export function runSettings(
  start: RunStartEvent | null,
  summary: RunSummary | null,
  pools: Partial<Record<PoolName, PoolDecl>>,
): SettingSection[] {
  const cfg: Obj = obj(start?.config) ?? {};
  const sum: Obj = obj(summary) ?? {};
  const host = obj(start?.host);
  const caps = obj(start?.capabilities);
  const row = (rows: SettingRow[], key: string, label: string, value: string | null, title?: string | null) => {
    if (value !== null) rows.push({ key, label, value, ...(title ? { title } : {}) });
  };

  // ---- workload ----
  const workload: SettingRow[] = [];
  const users = num(cfg.users);
  const rounds = num(cfg.rounds);
  const ctx = num(cfg.context_tokens);
  const newT = num(cfg.new_tokens);
  const outT = num(cfg.output_tokens);
  const blockTokens = num(cfg.block_tokens) ?? pools.gpu?.block_tokens ?? null;
  const engineName = str(start?.engine?.name);
  const engineVersion = str(start?.engine?.version);
  row(workload, 'users', labelOf('users'), users !== null ? formatCount(users) : null);
  row(workload, 'rounds', labelOf('rounds'), rounds !== null ? `${formatCount(rounds)} timed (after the context round)` : null);
  row(workload, 'context_tokens', labelOf('context_tokens'), ctx !== null ? `${plural(ctx, 'token')} a user` : null);
  const perRound = [newT !== null ? `${formatCount(newT)} new` : null, outT !== null ? `${formatCount(outT)} output` : null].filter(Boolean);
  row(workload, 'round_tokens', 'Each round', perRound.length ? `${perRound.join(' + ')} tokens a user` : null);
  row(workload, 'block_tokens', labelOf('block_tokens'), blockTokens !== null ? plural(blockTokens, 'token') : null);
  row(workload, 'engine', labelOf('engine'), engineName ? `${engineName}${engineVersion ? ` ${engineVersion}` : ''}` : null);
  const model = str(cfg.model);
  const mc = obj(cfg.model_config);
  const shape = modelShape(mc);
  row(workload, 'model', labelOf('model'), model ? `${model}${shape ? ` · ${shape}` : ''}` : shape);
  row(workload, 'device', labelOf('device'), str(cfg.device));
  const seed = num(cfg.seed);
  row(workload, 'seed', labelOf('seed'), seed !== null ? String(seed) : null);

  // ---- pools ----
  const poolRows: SettingRow[] = [];
  const gpuKv = num(cfg.gpu_kv_bytes);
  const frac = num(cfg.free_gpu_memory_fraction);
  // gpu_kv_bytes null means the engine sized the pool from the fraction of free memory.
  const sizedBy = gpuKv !== null ? `--gpu-kv-bytes ${formatBytes(gpuKv)}` : frac !== null && cfg.gpu_kv_bytes === null ? `${frac} of free GPU memory` : null;
  if (pools.gpu) row(poolRows, 'gpu_pool', labelOf('gpu_kv_bytes'), poolText(pools.gpu), sizedBy ? `sized by ${sizedBy}` : null);
  else if (gpuKv !== null) row(poolRows, 'gpu_pool', labelOf('gpu_kv_bytes'), `${formatBytes(gpuKv)} asked (no pool line yet)`);
  const hostKv = num(cfg.host_kv_bytes);
  // docs/protocol.md: capacity 0 (or host_kv_bytes 0) is no host pool, the recompute baseline.
  if (hostKv === 0 || pools.host?.capacity_blocks === 0) row(poolRows, 'host_pool', labelOf('host_kv_bytes'), 'none — recompute baseline');
  else if (pools.host) row(poolRows, 'host_pool', labelOf('host_kv_bytes'), poolText(pools.host), hostKv !== null ? `--host-kv-bytes ${formatBytes(hostKv)}` : null);
  else if (hostKv !== null) row(poolRows, 'host_pool', labelOf('host_kv_bytes'), `${formatBytes(hostKv)} asked (no pool line yet)`);
  // With no host pool nothing is offloaded: the policy and the copy overlap the agent still records
  // would read as if they applied ("Offload policy lazy" on a recompute baseline).
  const noHostPool = hostKv === 0 || pools.host?.capacity_blocks === 0;
  // Tiers below the host pool (protocol 2: a disk), nearest compute first.
  const lower = Object.entries(pools)
    .filter(([p, spec]) => p !== 'gpu' && p !== 'host' && spec)
    .sort((a, b) => (a[1]!.tier ?? 8) - (b[1]!.tier ?? 8));
  for (const [p, spec] of lower) {
    const how = [spec!.medium, spec!.io === 'o_direct' ? 'O_DIRECT' : spec!.io, spec!.path ? `in ${spec!.path}` : null].filter(Boolean).join(', ');
    const asked = p === 'disk' ? num(cfg.disk_kv_bytes) : null;
    row(poolRows, `${p}_pool`, p === 'disk' ? labelOf('disk_kv_bytes') : poolTitle(p), `${poolText(spec!)}${how ? ` · ${how}` : ''}`, asked !== null ? `--disk-kv-bytes ${formatBytes(asked)}` : `tier ${spec!.tier ?? '?'}`);
  }
  if (!noHostPool) row(poolRows, 'offload_policy', labelOf('offload_policy'), str(cfg.offload_policy));
  row(poolRows, 'block_reuse', labelOf('block_reuse'), onOff(cfg.block_reuse));
  // --copy-overlap (agents since 2026-11-28): onboards on a second stream behind the offload
  // chunks they need, instead of every offload then every onboard on one copy stream.
  const overlap = noHostPool ? null : onOff(cfg.copy_overlap);
  row(poolRows, 'copy_overlap', labelOf('copy_overlap'), overlap === 'on' ? 'on — onboards pipelined behind the offloads (two streams)' : overlap === 'off' ? 'off — offloads, then onboards, on one copy stream' : null);

  // ---- engine execution ----
  const exec: SettingRow[] = [];
  const decode = decodeText(obj(sum.decode), cfg.decode_graphs);
  if (decode) row(exec, 'decode', 'Decode', decode.value, decode.title);
  const chunk = num(cfg.prefill_chunk_tokens);
  row(exec, 'prefill_chunk', labelOf('prefill_chunk_tokens'), chunk !== null ? plural(chunk, 'token') : null);
  const maxBatch = num(cfg.max_batch);
  row(exec, 'max_batch', labelOf('max_batch'), maxBatch !== null ? plural(maxBatch, 'request') : null);
  const dtype = str(cfg.dtype);
  row(exec, 'dtype', labelOf('dtype'), dtype);
  row(exec, 'plain_copy', 'Plain pinned copy', plainCopyText(obj(sum.plain_copy)), 'the agent\'s baseline before the rounds: that many blocks copied GPU pool → pinned host pool and back as plain copies, best of its reps (kv_cache.measure_plain_copy)');

  // ---- capture ----
  const capture: SettingRow[] = [];
  // cuda_graphs (agents since 2026-11-28): "launch" = a CUDA graph launch is one CUPTI record and
  // a copy inside a graph is not recorded (the cheap default); "nodes" = every node traced.
  const traceCap = obj(caps?.trace);
  const graphs = str(traceCap?.cuda_graphs);
  const trace = capabilityText(traceCap, () =>
    graphs === 'launch' ? 'CUDA graphs traced per launch' : graphs === 'nodes' ? 'CUDA graphs traced per node' : null,
  );
  const graphNote = graphs === 'launch'
    ? 'copies issued inside a CUDA graph are not recorded (KV copies are issued outside graphs); KVSCOPE_TRACE_GRAPH_LEVEL=0 traces every node at ~1.3 ms of host time per launch of a 1,000-node graph (H100)'
    : null;
  if (trace) row(capture, 'trace', labelOf('trace'), trace.value, [trace.title, graphNote].filter(Boolean).join(' · ') || null);
  else row(capture, 'trace', labelOf('trace'), cfg.trace === true ? 'requested' : cfg.trace === false ? 'off' : null);
  const telemetry = capabilityText(obj(caps?.telemetry), (c) => {
    const every = num(c.sample_ms);
    const pcie = str(c.pcie_source);
    return [every !== null ? `every ${formatCount(every)} ms` : null, pcie ? `PCIe counters from ${pcie}` : null].filter(Boolean).join(' · ') || null;
  });
  const sampleMs = num(cfg.sample_ms);
  if (telemetry) row(capture, 'telemetry', 'GPU telemetry', telemetry.value, telemetry.title);
  else row(capture, 'telemetry', 'GPU telemetry', sampleMs !== null ? (sampleMs > 0 ? `every ${formatCount(sampleMs)} ms asked` : 'off') : null);
  const gpus = Array.isArray(host?.gpus) ? (host.gpus as unknown[]).map(obj).filter((g): g is Obj => g !== null) : [];
  const g0 = gpus[0];
  if (g0) {
    const name = str(g0.name) ?? 'GPU';
    const mem = num(g0.memory_total_bytes);
    const link = linkOf(g0 as unknown as Parameters<typeof linkOf>[0]);
    const linkText = link.bytesPerS !== null || g0.c2c === true ? link.name : null;
    const value = [`${gpus.length > 1 ? `${gpus.length} × ` : ''}${name}`, mem !== null ? formatBytes(mem) : null, linkText].filter(Boolean).join(' · ');
    row(capture, 'gpu', 'GPU', value, str(g0.uuid));
  } else if (host && Array.isArray(host.gpus)) {
    const probe = str(host.probe_error);
    row(capture, 'gpu', 'GPU', probe ? 'none found' : 'none', probe);
  }
  const driver = str(host?.driver_version);
  const cuda = str(host?.cuda_version);
  row(capture, 'driver', 'Driver / CUDA', driver || cuda ? [driver ? `driver ${driver}` : null, cuda ? `CUDA ${cuda}` : null].filter(Boolean).join(' · ') : null);
  const py = str(host?.python_version);
  const torch = str(host?.torch_version);
  row(capture, 'python', 'Python / torch', py || torch ? [py ? `Python ${py}` : null, torch ? `torch ${torch}` : null].filter(Boolean).join(' · ') : null);
  row(capture, 'hostname', 'Host', str(host?.hostname));
  row(capture, 'agent', 'Agent', str(start?.agent_version));

  const sections: SettingSection[] = [
    { title: 'Simulation', rows: simulationRows(obj(start?.simulated)) },
    { title: 'Workload', rows: workload },
    { title: 'Pools', rows: poolRows },
    { title: 'Engine execution', rows: exec },
    { title: 'Capture', rows: capture },
  ];
  return sections.filter((s) => s.rows.length > 0);
}

/** A pair [low, high] of finite numbers, or null. */
function pairOf(v: unknown): [number, number] | null {
  if (!Array.isArray(v) || v.length !== 2) return null;
  const a = num(v[0]);
  const b = num(v[1]);
  return a !== null && b !== null ? [a, b] : null;
}

/**
 * A simulated run's rows (docs/whatif.md): the card it was simulated on, the measured runs it was
 * calibrated on and how closely the calibration replays them, the factors those runs could not
 * determine and this run's E2E and mean TTFT across them. None for a measured run.
 */
function simulationRows(sim: Obj | null): SettingRow[] {
  if (!sim) return [];
  const rows: SettingRow[] = [];
  const row = (key: string, label: string, value: string | null, title?: string | null) => {
    if (value) rows.push({ key, label, value, ...(title ? { title } : {}) });
  };
  const profile = obj(sim.profile);
  const link = str(profile?.link);
  row('simulated_on', 'Simulated on', str(profile?.name) ? `${str(profile?.name)}${link ? ` · ${link}` : ''}` : str(profile?.id), str(sim.method));
  const source = obj(sim.source);
  const ids = Array.isArray(source?.run_ids) ? (source.run_ids as unknown[]).map(str).filter((x): x is string => !!x) : [];
  const gpu = str(source?.gpu);
  row('calibrated_on', 'Calibrated on', ids.length ? `${plural(ids.length, 'measured run')}${gpu ? ` on ${gpu}` : ''}` : null, ids.join(', ') || null);
  const cal = obj(sim.calibration);
  const checks = (Array.isArray(cal?.self_check) ? (cal.self_check as unknown[]) : []).map(obj).flatMap((c) => {
    const err = (x: Obj | null) => {
      const m = num(x?.measured);
      const p = num(x?.simulated);
      return m && p !== null ? p / m - 1 : null;
    };
    const users = num(c?.users);
    const e2eError = err(obj(c?.e2e_ns));
    const ttftError = err(obj(c?.ttft_ns_mean));
    return users !== null && e2eError !== null && ttftError !== null ? [{ users, e2eError, ttftError }] : [];
  });
  row('calibration_check', 'Calibration, replayed on its own card', calibrationCheckText(checks) || null);
  // The held factors that move this run's numbers; an agent before `uncertain` listed only `held`.
  const held = obj(sim.uncertain) ?? obj(cal?.held);
  for (const [factor, note] of Object.entries(held ?? {})) {
    const text = str(note);
    if (!text) continue;
    const { heldAt, why } = splitHeldNote(text);
    row(`held_${factor}`, 'Not determined by the measured runs', `${calibrationFactorName(factor)}: ${heldAt}`, why || null);
  }
  const range = obj(sim.range);
  const e2e = pairOf(range?.e2e_ns);
  const ttft = pairOf(range?.ttft_ns_mean);
  if (e2e && ttft) {
    row('range', 'Across what was not determined', `E2E ${formatNs(e2e[0])} to ${formatNs(e2e[1])} · mean TTFT ${formatNs(ttft[0])} to ${formatNs(ttft[1])}`);
  }
  return rows;
}
