/**
 * The app's side of the agent's workload option table (resources/agent/kvscope_agent/workload_options.json):
 * agentRunArgs, the CLI's run options, the New run form, Settings and the Run settings labels hold
 * to it, and what agentRunArgs sends or refuses is what the bundled agent's own parser takes or
 * refuses (asked through Debian's python3). The agent's parser is held to the table by
 * resources/agent/tests/test_options.py.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import type { AgentWorkload, OffloadPolicy, WorkloadDefaults } from '../../src/shared/api';
import { addWorkloadOptions, workloadFromCli } from '../../src/cli/commands/run';
import { agentRunArgs } from '../../src/main/core/runs';
import { DEFAULT_SETTINGS, validateSettings } from '../../src/main/core/settings';
import { DEFAULT_FORM, validateRunForm, type RunForm } from '../../src/renderer/model/run-form';
import { runSettings } from '../../src/renderer/model/run-settings';
import type { RunStartEvent } from '../../src/shared/protocol';
import {
  OFFLOAD_POLICIES,
  SETTINGS_WORKLOAD_OPTIONS,
  WORKLOAD_OPTIONS,
  bytesText,
  defaultOf,
  flagOf,
  isWorkloadOption,
  optionOf,
  optionValueError,
  parseBytes,
  type WorkloadOption,
  type WorkloadValue,
} from '../../src/shared/workload-options';

const RUN_ROWS = WORKLOAD_OPTIONS.filter((o) => o.commands.includes('run'));
const NUMERIC = RUN_ROWS.filter((o) => o.type === 'int' || o.type === 'bytes' || o.type === 'number');

/** The values at a row's edges the agent takes, and the ones just past them it refuses. */
function edges(o: WorkloadOption): { ok: number[]; bad: number[] } {
  const ok: number[] = [];
  const bad: number[] = [];
  const step = o.type === 'number' ? 0.5 : 1;
  if (o.min !== undefined) {
    bad.push(o.min_exclusive ? o.min : o.min - step);
    if (!o.min_exclusive) ok.push(o.min);
  }
  if (o.max !== undefined) {
    ok.push(o.max);
    bad.push(o.max + step);
  }
  if (typeof o.default === 'number') ok.push(o.default);
  return { ok, bad };
}

/** The bundled agent's parser over several argv lists: null (taken) or the flag it refused. */
function agentVerdicts(argvs: string[][]): Array<string | null> {
  const script = [
    'import json, sys',
    'from kvscope_agent.options import parse_options',
    'out = []',
    'for argv in json.load(sys.stdin):',
    '    _, _, err = parse_options(argv + ["--device=cpu", "--model=tiny", "--out=/tmp/kvscope-options-vitest"], sweep=False)',
    '    out.append(None if err is None else err.option)',
    'print(json.dumps(out))',
  ].join('\n');
  const out = execFileSync('python3', ['-c', script], {
    input: JSON.stringify(argvs),
    env: { ...process.env, PYTHONPATH: join(__dirname, '../../resources/agent') },
    encoding: 'utf8',
  });
  return JSON.parse(out) as Array<string | null>;
}

describe('agentRunArgs from the option table', () => {
  it('sends every run option the table has, at its edges and default, and the agent takes each', () => {
    const argvs: string[][] = [];
    for (const o of RUN_ROWS) {
      if (o.name === 'model' || o.name === 'device') continue; // the agent check below fixes these two
      const values: WorkloadValue[] = o.type === 'choice' ? o.choices!.filter((c) => o.name !== 'engine' || c === 'torch') : o.type === 'on_off' ? [true, false] : o.type === 'text' ? ['x'] : edges(o).ok;
      for (const v of values) {
        const args = agentRunArgs({ [o.name]: v } as AgentWorkload);
        expect(args).toEqual([`${flagOf(o.name)}=${o.type === 'on_off' ? (v ? 'on' : 'off') : String(v)}`]);
        argvs.push(args);
      }
    }
    expect(argvs.length).toBeGreaterThan(RUN_ROWS.length);
    expect(agentVerdicts(argvs)).toEqual(argvs.map(() => null));
  });

  it('refuses what the agent refuses, naming the same option', () => {
    const cases: Array<{ name: string; value: number }> = NUMERIC.flatMap((o) => edges(o).bad.map((value) => ({ name: o.name, value })));
    expect(cases.length).toBeGreaterThan(NUMERIC.length);
    for (const c of cases) expect(() => agentRunArgs({ [c.name]: c.value } as AgentWorkload), `${c.name}=${c.value}`).toThrow(flagOf(c.name));
    // The same values, sent as text past the app's check: the agent refuses each by the same flag.
    expect(agentVerdicts(cases.map((c) => [`${flagOf(c.name)}=${c.value}`]))).toEqual(cases.map((c) => flagOf(c.name)));
  });

  it('refuses a key that is not a run option, and an option the engine does not take', () => {
    expect(() => agentRunArgs({ new_token: 3 } as unknown as AgentWorkload)).toThrow(/new_token is not an option of the agent's run/);
    expect(() => agentRunArgs({ deadline_s: 3 } as unknown as AgentWorkload)).toThrow(/deadline_s/);
    const torchOnly = RUN_ROWS.filter((o) => !o.engines.includes('vllm'));
    expect(torchOnly.map((o) => o.name)).toContain('offload_policy');
    for (const o of torchOnly) {
      const v = o.type === 'on_off' ? true : o.type === 'choice' ? o.choices![0] : o.type === 'text' ? 'x' : (o.default ?? o.min ?? 1);
      expect(() => agentRunArgs({ engine: 'vllm', model: 'm', [o.name]: v } as AgentWorkload)).toThrow(`${flagOf(o.name)} is taken by torch only, not by --engine vllm`);
      expect(agentRunArgs({ engine: 'torch', [o.name]: v } as AgentWorkload)).toHaveLength(2);
    }
  });

  it('the typed workload keys are table options of the types the table gives them', () => {
    // Listing every key: a key added to AgentWorkload without a row here fails to compile.
    const sample: Required<AgentWorkload> = {
      engine: 'torch', model: 'tiny', device: 'cpu', users: 2, rounds: 10, context_tokens: 16000, new_tokens: 64,
      output_tokens: 64, block_tokens: 32, gpu_kv_bytes: 1e9, free_gpu_memory_fraction: 0.9, host_kv_bytes: 55e9,
      seed: 0, trace: true, sample_ms: 100, offload_policy: 'lazy', copy_overlap: true,
    };
    for (const [k, v] of Object.entries(sample)) {
      expect(isWorkloadOption(k), k).toBe(true);
      expect(optionValueError(k, v), k).toBeNull();
    }
    // OffloadPolicy lists exactly the table's policies (a Record over the type must name each member).
    const policies: Record<OffloadPolicy, true> = { lazy: true, 'lazy-keep': true, 'write-through': true };
    expect(Object.keys(policies)).toEqual([...OFFLOAD_POLICIES]);
  });

  it('reads byte sizes with the agent\'s units', () => {
    expect(parseBytes('55e9')).toBe(55e9);
    expect(parseBytes('16GiB')).toBe(16 * 1024 ** 3);
    expect(parseBytes('2k')).toBe(2000);
    expect(parseBytes('-1')).toBeNull();
    expect(parseBytes('3 parsecs')).toBeNull();
    expect(bytesText(55e9)).toBe('55e9');
    expect(bytesText(123)).toBe('123');
  });
});

describe('the CLI\'s run options from the option table', () => {
  const cmd = addWorkloadOptions(new Command('run').exitOverride());
  const longs = new Map(cmd.options.map((o) => [o.long!, o]));

  it('has each run option but users (each command\'s own) with the table\'s default and choices', () => {
    for (const o of RUN_ROWS) {
      if (o.name === 'users') continue;
      const opt = longs.get(flagOf(o.name));
      expect(opt, o.name).toBeDefined();
      const d = o.default === null ? o.default_help! : o.type === 'bytes' ? bytesText(o.default as number) : String(o.default);
      expect(opt!.description, o.name).toContain(`(default: ${d})`);
      if (o.type === 'choice') expect(opt!.argChoices).toEqual(o.choices);
    }
    expect(cmd.options.length).toBe(RUN_ROWS.length - 1);
  });

  it('turns each option\'s text into the workload the agent gets', () => {
    const argv = ['--new-tokens', '0', '--host-kv-bytes', '55GB', '--copy-overlap', 'auto', '--trace', 'off', '--max-batch', '8', '--dtype', 'fp32', '--device', 'cuda:1'];
    const parsed = cmd.parse(argv, { from: 'user' }).opts();
    const w = workloadFromCli(parsed);
    expect(w).toEqual({ device: 'cuda:1', new_tokens: 0, host_kv_bytes: 55e9, trace: false, max_batch: 8, dtype: 'fp32' });
    expect(agentRunArgs(w)).toEqual(['--device=cuda:1', '--new-tokens=0', '--host-kv-bytes=55000000000', '--trace=off', '--max-batch=8', '--dtype=fp32']);
    expect(() => workloadFromCli({ rounds: 'ten' })).toThrow(/--rounds: "ten" is not a number/);
    expect(() => workloadFromCli({ gpuKvBytes: 'big' })).toThrow(/--gpu-kv-bytes: "big" is not a byte count/);
  });
});

describe('the New run form and Settings from the option table', () => {
  it('start from the table\'s defaults', () => {
    expect(DEFAULT_FORM).toMatchObject({
      engine: defaultOf('engine'),
      model: optionOf('model').seed,
      rounds: String(defaultOf('rounds')),
      context_tokens: String(defaultOf('context_tokens')),
      new_tokens: String(defaultOf('new_tokens')),
      output_tokens: String(defaultOf('output_tokens')),
      gpu_pool: String(defaultOf('free_gpu_memory_fraction')),
      host_pool: bytesText(defaultOf('host_kv_bytes') as number),
      trace: defaultOf('trace'),
      sample_ms: String(defaultOf('sample_ms')),
      offload_policy: defaultOf('offload_policy'),
      copy_overlap: defaultOf('copy_overlap'),
    });
    const [lo, hi] = optionOf('users').seed as [number, number];
    expect(DEFAULT_FORM.users).toBe(`${lo}-${hi}`);
    for (const [key, name] of Object.entries(SETTINGS_WORKLOAD_OPTIONS)) {
      if (name !== 'users') expect(DEFAULT_SETTINGS.workload[key as keyof WorkloadDefaults], key).toBe(defaultOf(name));
    }
    expect([DEFAULT_SETTINGS.workload.usersMin, DEFAULT_SETTINGS.workload.usersMax]).toEqual([lo, hi]);
    expect(DEFAULT_SETTINGS.sampleMs).toBe(defaultOf('sample_ms'));
  });

  it('the form takes each whole-number field to its option\'s edges and refuses past them, naming the field', () => {
    const fields = ['rounds', 'context_tokens', 'new_tokens', 'output_tokens', 'sample_ms'] as const;
    for (const field of fields) {
      const { ok, bad } = edges(optionOf(field));
      for (const v of ok) {
        const r = validateRunForm({ ...DEFAULT_FORM, hosts: ['h'], users: '1', model: 'custom.json', [field]: String(v) } as RunForm);
        expect(r.ok ? [] : r.errors, `${field}=${v}`).toEqual([]);
      }
      for (const v of bad.filter((x) => x >= 0)) {
        const r = validateRunForm({ ...DEFAULT_FORM, hosts: ['h'], users: '1', model: 'custom.json', [field]: String(v) } as RunForm);
        expect(!r.ok && r.errors.map((e) => e.field), `${field}=${v}`).toEqual([field]);
      }
    }
  });

  it('Settings refuses a value past its option\'s bounds, naming the key', () => {
    for (const [key, name] of Object.entries(SETTINGS_WORKLOAD_OPTIONS)) {
      for (const v of edges(optionOf(name)).bad) {
        const workload = { ...DEFAULT_SETTINGS.workload, [key]: v, ...(key === 'usersMin' ? { usersMax: Math.max(v, 1) } : {}) };
        expect(() => validateSettings({ ...DEFAULT_SETTINGS, workload }), `${key}=${v}`).toThrow(`workload.${key}`);
      }
    }
    expect(() => validateSettings({ ...DEFAULT_SETTINGS, sampleMs: (optionOf('sample_ms').max ?? 0) + 1 })).toThrow('sampleMs');
  });

  it('the Run settings rows of one option carry its label', () => {
    const start = { type: 'run.start', engine: { name: 'torch', version: '1' }, config: { users: 4, rounds: 3, context_tokens: 512, block_tokens: 32, model: 'tiny', device: 'cpu', seed: 7, host_kv_bytes: 1e6, offload_policy: 'lazy', dtype: 'fp32', max_batch: 16, prefill_chunk_tokens: 2048 } } as unknown as RunStartEvent;
    const rows = new Map(runSettings(start, null, {}).flatMap((s) => s.rows).map((r) => [r.key, r.label]));
    const byOption: Record<string, string> = { users: 'users', rounds: 'rounds', context_tokens: 'context_tokens', block_tokens: 'block_tokens', model: 'model', device: 'device', seed: 'seed', host_pool: 'host_kv_bytes', offload_policy: 'offload_policy', dtype: 'dtype', max_batch: 'max_batch', prefill_chunk: 'prefill_chunk_tokens', engine: 'engine' };
    for (const [row, name] of Object.entries(byOption)) expect(rows.get(row), row).toBe(optionOf(name).label);
  });
});
