/**
 * runSettings (the Summary view's "Run settings" panel) over every real log this checkout has
 * (bundled H100 samples, listed at test time since they are replaced from time to time, and the
 * committed CPU fixtures), read with the project's reader and analyser; each expected value is
 * derived from the log's own lines. Synthetic logs cover what older agents and other engines omit.
 */
import { describe, expect, it } from 'vitest';
import { formatBandwidth, formatBytes, formatNs } from '../../src/shared/format';
import type { PoolEvent, RunStartEvent, RunSummary } from '../../src/shared/protocol';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { formatCount } from '../../src/shared/format';
import { runSettings, type SettingSection } from '../../src/renderer/model/run-settings';
import { realRuns } from '../helpers/real-runs';

const runs = realRuns();

function value(sections: SettingSection[], key: string): string | undefined {
  for (const s of sections) for (const r of s.rows) if (r.key === key) return r.value;
  return undefined;
}

function allText(sections: SettingSection[]): string {
  return sections.flatMap((s) => s.rows.flatMap((r) => [r.label, r.value, r.title ?? ''])).join('\n');
}

/** Nothing the panel shows may leak a missing or broken value. */
function expectClean(sections: SettingSection[]): void {
  const text = allText(sections);
  for (const bad of ['undefined', 'NaN', 'null', '[object', 'Infinity']) expect(text).not.toContain(bad);
  for (const s of sections) {
    expect(s.rows.length).toBeGreaterThan(0);
    for (const r of s.rows) expect(r.value.trim()).not.toBe('');
  }
}

describe.skipIf(runs.length === 0)('run settings of the real logs', () => {
  for (const run of runs) {
    it(`${run.name}: every setting comes from the log's own lines`, () => {
      const a = analyzeEvents(run.events);
      const start = run.events.find((e): e is RunStartEvent => e.type === 'run.start')!;
      const end = run.events.find((e) => e.type === 'run.end');
      const poolLine = (p: 'gpu' | 'host') => run.events.find((e): e is PoolEvent => e.type === 'pool' && e.pool === p);
      const s = runSettings(a.start, a.endSummary, a.pools);
      expectClean(s);
      const cfg = start.config;

      expect(value(s, 'users')).toBe(formatCount(cfg.users!));
      expect(value(s, 'rounds')).toContain(formatCount(cfg.rounds!));
      expect(value(s, 'context_tokens')).toContain(formatCount(cfg.context_tokens!));
      expect(value(s, 'round_tokens')).toBe(`${formatCount(cfg.new_tokens!)} new + ${formatCount(cfg.output_tokens!)} output tokens a user`);
      expect(value(s, 'block_tokens')).toContain(formatCount(cfg.block_tokens!));
      expect(value(s, 'engine')).toBe(`${start.engine.name} ${start.engine.version}`);
      expect(value(s, 'model')).toContain(cfg.model!);
      const mc = cfg.model_config as { layers?: number; hidden?: number; kv_heads?: number } | undefined;
      if (mc?.layers !== undefined) expect(value(s, 'model')).toContain(`${formatCount(mc.layers)} layers`);
      if (mc?.hidden !== undefined) expect(value(s, 'model')).toContain(`hidden ${formatCount(mc.hidden)}`);
      if (mc?.kv_heads !== undefined) expect(value(s, 'model')).toContain(`${formatCount(mc.kv_heads)} KV head`);

      // Pools: the pool lines' capacity and capacity × block_bytes.
      const gpu = poolLine('gpu')!;
      expect(value(s, 'gpu_pool')).toContain(`${formatCount(gpu.capacity_blocks)} block`);
      expect(value(s, 'gpu_pool')).toContain(formatBytes(gpu.capacity_blocks * gpu.block_bytes));
      const host = poolLine('host');
      if (cfg.host_kv_bytes === 0 || host?.capacity_blocks === 0) expect(value(s, 'host_pool')).toBe('none — recompute baseline');
      else if (host) expect(value(s, 'host_pool')).toContain(formatBytes(host.capacity_blocks * host.block_bytes));
      // The offload policy only where there is a host pool to offload to (the recompute sample has none).
      const hostPool = !(cfg.host_kv_bytes === 0 || host?.capacity_blocks === 0);
      if (typeof cfg.offload_policy === 'string' && hostPool) expect(value(s, 'offload_policy')).toBe(cfg.offload_policy);
      else expect(value(s, 'offload_policy')).toBeUndefined();
      if (!hostPool) expect(value(s, 'copy_overlap')).toBeUndefined();

      // Engine execution: summary.decode when the agent wrote it, plain_copy when measured.
      const summary = end?.type === 'run.end' ? (end.summary as Record<string, unknown>) : {};
      const decode = summary.decode as { cuda_graphs?: boolean; graphs?: number; capture_ns?: number; replays?: number; off_reason?: string | null; graphs_held?: number } | undefined;
      if (decode?.cuda_graphs === true && decode.graphs === 0 && (decode.graphs_held ?? 0) > 0) {
        // A sweep's later run replays the graphs an earlier run captured: never "0 captured, 693 replays".
        expect(value(s, 'decode')).toBe(`CUDA graphs: ${formatCount(decode.graphs_held!)} graphs reused from the sweep's earlier runs (none captured in this run), ${formatCount(decode.replays!)} replays`);
      } else if (decode?.cuda_graphs === true) {
        expect(value(s, 'decode')).toBe(`CUDA graphs: ${formatCount(decode.graphs!)} captured (${formatNs(decode.capture_ns!)}), ${formatCount(decode.replays!)} replays`);
      } else if (decode?.cuda_graphs === false) {
        expect(value(s, 'decode')).toMatch(/^eager/);
      } else if (cfg.decode_graphs === undefined) {
        // An older log: no decode row rather than a guess.
        expect(value(s, 'decode')).toBeUndefined();
      }
      const pc = summary.plain_copy as { h2d_gb_per_s: number; d2h_gb_per_s: number; blocks: number } | undefined;
      if (pc) {
        expect(value(s, 'plain_copy')).toContain(`H2D ${formatBandwidth(pc.h2d_gb_per_s * 1e9)}`);
        expect(value(s, 'plain_copy')).toContain(`D2H ${formatBandwidth(pc.d2h_gb_per_s * 1e9)}`);
        expect(value(s, 'plain_copy')).toContain(`${formatCount(pc.blocks)} blocks`);
      } else expect(value(s, 'plain_copy')).toBeUndefined();

      // Capture: tracing and telemetry as capabilities says, the card, driver and CUDA.
      const trace = start.capabilities?.trace;
      const graphs = trace?.cuda_graphs === 'launch' ? ' · CUDA graphs traced per launch' : trace?.cuda_graphs === 'nodes' ? ' · CUDA graphs traced per node' : '';
      if (trace?.on) expect(value(s, 'trace')).toBe(`on (${trace.source})${graphs}`);
      else if (trace) expect(value(s, 'trace')).toBe(`off (${trace.source}): ${trace.reason}`);
      const tel = start.capabilities?.telemetry;
      if (tel?.on) expect(value(s, 'telemetry')).toContain(`every ${formatCount(tel.sample_ms as number)} ms`);
      else if (tel) expect(value(s, 'telemetry')).toMatch(/^off/);
      const g0 = start.host.gpus[0];
      if (g0) expect(value(s, 'gpu')).toContain(g0.name);
      else expect(value(s, 'gpu')).toMatch(/^none/);
      if (start.host.driver_version) expect(value(s, 'driver')).toContain(start.host.driver_version);
      if (start.host.cuda_version) expect(value(s, 'driver')).toContain(`CUDA ${start.host.cuda_version}`);
      if (!start.host.driver_version && !start.host.cuda_version) expect(value(s, 'driver')).toBeUndefined();
    });
  }

  it('the bundled samples differ where their settings differ (what the panel is for)', () => {
    const samples = runs.filter((r) => r.name.startsWith('sample:'));
    const shown = new Set(samples.map((r) => {
      const a = analyzeEvents(r.events);
      return allText(runSettings(a.start, a.endSummary, a.pools));
    }));
    // Each sample is a different configuration (users, host pool or model), so no two panels match.
    expect(shown.size).toBe(samples.length);
  });
});

describe('run settings of logs that lack fields', () => {
  const t0 = { seq: 0, t: 0 };
  const minimalStart = {
    ...t0, type: 'run.start', run_id: 'r', protocol: 1, agent_version: '0.0.1', engine: { name: 'vllm', version: '0.11.0' },
    config: {}, host: { hostname: 'box', gpus: [] }, clock: { unix_ns_at_t0: 0 },
  } as RunStartEvent;

  it('no run.start at all: no section', () => {
    expect(runSettings(null, null, {})).toEqual([]);
  });

  it('an empty config: only what is there, no guesses', () => {
    const s = runSettings(minimalStart, null, {});
    expectClean(s);
    expect(value(s, 'engine')).toBe('vllm 0.11.0');
    expect(value(s, 'hostname')).toBe('box');
    expect(value(s, 'gpu')).toBe('none');
    for (const key of ['users', 'rounds', 'context_tokens', 'round_tokens', 'model', 'gpu_pool', 'host_pool', 'offload_policy', 'decode', 'plain_copy', 'trace', 'telemetry', 'driver']) {
      expect(value(s, key), key).toBeUndefined();
    }
    expect(s.map((x) => x.title)).toEqual(['Workload', 'Capture']);
  });

  it('wrong types and nulls (a hand-edited or translated log) never show as text', () => {
    const start = {
      ...minimalStart,
      config: { users: 'four', rounds: null, context_tokens: Number.NaN, model_config: { layers: '32' }, host_kv_bytes: null, offload_policy: 7, decode_graphs: 'yes' },
      host: { hostname: '', gpus: [{ index: 0, name: 'NVIDIA H100', memory_total_bytes: null, pcie_gen: null, pcie_width: null }], driver_version: null, cuda_version: '12.4' },
      capabilities: { trace: { on: false, source: 'cupti', reason: 'no libcupti' } },
    } as unknown as RunStartEvent;
    const summary = { e2e_ns: null, blocks_offloaded: 0, decode: { cuda_graphs: 'maybe' }, plain_copy: { blocks: 3 } } as unknown as RunSummary;
    const s = runSettings(start, summary, {});
    expectClean(s);
    expect(value(s, 'users')).toBeUndefined();
    expect(value(s, 'model')).toBeUndefined();
    expect(value(s, 'offload_policy')).toBeUndefined();
    expect(value(s, 'decode')).toBeUndefined();
    expect(value(s, 'plain_copy')).toBeUndefined();
    expect(value(s, 'gpu')).toBe('NVIDIA H100');
    expect(value(s, 'driver')).toBe('CUDA 12.4');
    expect(value(s, 'trace')).toBe('off (cupti): no libcupti');
    expect(value(s, 'hostname')).toBeUndefined();
  });

  it('a simulated run: the card, the measured runs, the calibration check, what they could not determine and the range', () => {
    const simulated = {
      profile: { id: 'gh200-96', name: 'NVIDIA GH200 96 GB', link: 'NVLink-C2C' },
      source: { run_ids: ['a1', 'b2'], gpu: 'NVIDIA H100 80GB HBM3' },
      method: 'trace-driven replay',
      calibration: {
        self_check: [{ users: 4, e2e_ns: { measured: 1e10, simulated: 0.996e10 }, ttft_ns_mean: { measured: 1e8, simulated: 1.002e8 } }],
        held: { prefill_step_ns: 'held at 15.8 ms, the middle of 0 to 31.6 ms: the runs cannot tell it apart' },
      },
      range: { e2e_ns: [6.41e9, 6.63e9], ttft_ns_mean: [29.3e6, 53.46e6] },
    };
    const s = runSettings({ ...minimalStart, simulated } as unknown as RunStartEvent, null, {});
    expectClean(s);
    expect(s[0]!.title).toBe('Simulation');
    expect(value(s, 'simulated_on')).toBe('NVIDIA GH200 96 GB · NVLink-C2C');
    expect(value(s, 'calibrated_on')).toBe('2 measured runs on NVIDIA H100 80GB HBM3');
    expect(value(s, 'calibration_check')).toBe('users 4: E2E -0.4%, TTFT +0.2%');
    expect(value(s, 'held_prefill_step_ns')).toBe("a prefill step's fixed cost: held at 15.8 ms, the middle of 0 to 31.6 ms");
    expect(s[0]!.rows.find((r) => r.key === 'held_prefill_step_ns')!.title).toBe('the runs cannot tell it apart');
    expect(value(s, 'range')).toBe(`E2E ${formatNs(6.41e9)} to ${formatNs(6.63e9)} · mean TTFT ${formatNs(29.3e6)} to ${formatNs(53.46e6)}`);
    // Every factor measured: no held row, no range; a measured run: no section at all.
    const sure = runSettings({ ...minimalStart, simulated: { ...simulated, calibration: { self_check: [] }, range: undefined } } as unknown as RunStartEvent, null, {});
    expect(value(sure, 'held_prefill_step_ns')).toBeUndefined();
    expect(value(sure, 'range')).toBeUndefined();
    expect(runSettings(minimalStart, null, {}).map((x) => x.title)).not.toContain('Simulation');
    // Junk where numbers belong (a hand-edited log) shows nothing broken.
    const junk = { ...simulated, calibration: { self_check: [{ users: '4', e2e_ns: null }], held: { prefill_step_ns: 7 } }, range: { e2e_ns: [1, 'x'], ttft_ns_mean: 3 } };
    const j = runSettings({ ...minimalStart, simulated: junk } as unknown as RunStartEvent, null, {});
    expectClean(j);
    expect(value(j, 'calibration_check')).toBeUndefined();
    expect(value(j, 'held_prefill_step_ns')).toBeUndefined();
    expect(value(j, 'range')).toBeUndefined();
  });

  it('copy overlap: said when the agent echoed it, absent for older logs', () => {
    expect(value(runSettings({ ...minimalStart, config: { copy_overlap: true } }, null, {}), 'copy_overlap')).toMatch(/^on — /);
    expect(value(runSettings({ ...minimalStart, config: { copy_overlap: false } }, null, {}), 'copy_overlap')).toMatch(/^off — /);
    expect(value(runSettings(minimalStart, null, {}), 'copy_overlap')).toBeUndefined();
    expect(value(runSettings({ ...minimalStart, config: { copy_overlap: 'yes' } }, null, {}), 'copy_overlap')).toBeUndefined();
  });

  it('tracing: how CUDA graph launches were traced, with what that leaves out', () => {
    const withTrace = (trace: Record<string, unknown>) => ({ ...minimalStart, capabilities: { trace } } as unknown as RunStartEvent);
    const launch = runSettings(withTrace({ on: true, source: 'cupti', reason: 'built', cuda_graphs: 'launch' }), null, {});
    expect(value(launch, 'trace')).toBe('on (cupti) · CUDA graphs traced per launch');
    const row = launch.flatMap((x) => x.rows).find((r) => r.key === 'trace')!;
    expect(row.title).toContain('built');
    expect(row.title).toContain('inside a CUDA graph are not recorded');
    const nodes = runSettings(withTrace({ on: true, source: 'cupti', cuda_graphs: 'nodes' }), null, {});
    expect(value(nodes, 'trace')).toBe('on (cupti) · CUDA graphs traced per node');
    expect(nodes.flatMap((x) => x.rows).find((r) => r.key === 'trace')!.title).toBeUndefined();
    // An older agent (no field) or a junk value: no claim either way.
    expect(value(runSettings(withTrace({ on: true, source: 'cupti' }), null, {}), 'trace')).toBe('on (cupti)');
    expect(value(runSettings(withTrace({ on: true, source: 'cupti', cuda_graphs: 3 }), null, {}), 'trace')).toBe('on (cupti)');
  });

  it('no host pool: the recompute baseline, from config or from a pool line of capacity 0', () => {
    const fromConfig = runSettings({ ...minimalStart, config: { host_kv_bytes: 0 } }, null, {});
    expect(value(fromConfig, 'host_pool')).toBe('none — recompute baseline');
    const fromPool = runSettings(minimalStart, null, { gpu: { capacity_blocks: 10, block_tokens: 16, block_bytes: 1000 }, host: { capacity_blocks: 0, block_tokens: 16, block_bytes: 1000 } });
    expect(value(fromPool, 'host_pool')).toBe('none — recompute baseline');
    expect(value(fromPool, 'gpu_pool')).toBe(`10 blocks · ${formatBytes(10_000)} (${formatBytes(1000)} a block)`);
    // The block size falls back to the pool line's when config has none.
    expect(value(fromPool, 'block_tokens')).toBe('16 tokens');
  });

  it('decode: eager with the agent\'s reason, a mid-run fallback, and a running run', () => {
    const sum = (decode: Record<string, unknown>) => ({ decode } as unknown as RunSummary);
    expect(value(runSettings(minimalStart, sum({ cuda_graphs: false, off_reason: 'not a CUDA device', graphs: 0, replays: 0, eager_steps: 40 }), {}), 'decode'))
      .toBe('eager (not a CUDA device), 40 eager steps');
    expect(value(runSettings({ ...minimalStart, config: { decode_graphs: false } }, sum({ cuda_graphs: false, off_reason: 'off', graphs: 0 }), {}), 'decode'))
      .toBe('eager (--decode-graphs off)');
    expect(value(runSettings(minimalStart, sum({ cuda_graphs: false, off_reason: 'capture or replay failed: RuntimeError: x', graphs: 2, replays: 9, eager_steps: 5 }), {}), 'decode'))
      .toBe('eager (capture or replay failed: RuntimeError: x) after 2 captured, 9 replays, 5 eager steps');
    expect(value(runSettings({ ...minimalStart, config: { decode_graphs: true } }, null, {}), 'decode')).toMatch(/^CUDA graphs requested/);
  });

  it('decode: graphs a sweep\'s earlier runs captured are said to be reused, not "0 captured"', () => {
    const sum = (decode: Record<string, unknown>) => ({ decode } as unknown as RunSummary);
    expect(value(runSettings(minimalStart, sum({ cuda_graphs: true, graphs: 0, capture_ns: 0, replays: 693, eager_steps: 0, graphs_held: 6 }), {}), 'decode'))
      .toBe("CUDA graphs: 6 graphs reused from the sweep's earlier runs (none captured in this run), 693 replays");
    expect(value(runSettings(minimalStart, sum({ cuda_graphs: true, graphs: 2, capture_ns: 5e8, replays: 10, eager_steps: 0, graphs_held: 6 }), {}), 'decode'))
      .toBe("CUDA graphs: 2 captured (500.0 ms) + 4 reused from the sweep's earlier runs, 10 replays");
    // One graph, one replay: singular nouns.
    expect(value(runSettings(minimalStart, sum({ cuda_graphs: true, graphs: 0, replays: 1, graphs_held: 1 }), {}), 'decode'))
      .toBe("CUDA graphs: 1 graph reused from the sweep's earlier runs (none captured in this run), 1 replay");
  });

  it('pools: no offload policy or copy overlap row on a run with no host pool', () => {
    const start = { ...minimalStart, config: { host_kv_bytes: 0, offload_policy: 'lazy', copy_overlap: true } } as unknown as RunStartEvent;
    const s = runSettings(start, null, { gpu: { capacity_blocks: 10, block_tokens: 16, block_bytes: 1000 }, host: { capacity_blocks: 0, block_tokens: 16, block_bytes: 1000 } });
    expect(value(s, 'host_pool')).toBe('none — recompute baseline');
    expect(value(s, 'offload_policy')).toBeUndefined();
    expect(value(s, 'copy_overlap')).toBeUndefined();
    const withHost = runSettings({ ...start, config: { ...start.config, host_kv_bytes: 1e6 } } as RunStartEvent, null, {});
    expect(value(withHost, 'offload_policy')).toBe('lazy');
  });
});
