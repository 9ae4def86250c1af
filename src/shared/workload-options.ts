/**
 * The agent's workload options, read from its own table
 * (resources/agent/kvscope_agent/workload_options.json, which kvscope_agent/options.py builds the
 * agent's parser from): name, type, bounds, default, unit, label, help and the engines that take
 * each. agentRunArgs, the CLI's run and sweep options, the New run form's defaults and bounds, the
 * Settings defaults and the Run settings labels all come from here. test/unit/workload-options.test.ts
 * holds them, and the bundled agent's parser, to the table.
 */
import table from '../../resources/agent/kvscope_agent/workload_options.json';
import type { OffloadPolicy, WorkloadDefaults } from './api';
import { CodedError } from './result';

export type OptionType = 'int' | 'number' | 'bytes' | 'choice' | 'on_off' | 'text';
export type EngineName = 'torch' | 'tensorrt_llm' | 'vllm';
/** A value as the app sends it (on_off options as booleans). */
export type WorkloadValue = number | string | boolean;

export interface WorkloadOption {
  /** snake_case: the run.start config key and the app's workload key. */
  name: string;
  type: OptionType;
  min?: number;
  max?: number;
  /** `min` itself is refused (a fraction of free memory must be above 0). */
  min_exclusive?: boolean;
  choices?: string[];
  choice_help?: Record<string, string>;
  /** on_off: "auto" is also taken, and is what an absent value means. */
  auto?: boolean;
  pattern?: string;
  pattern_help?: string;
  max_length?: number;
  /** The agent's default ("on"/"off"/"auto" for on_off); null: none (default_help says what happens). */
  default: number | string | null;
  default_help?: string;
  sweep_default?: string;
  sweep_list?: boolean;
  /** The seed benchmark's value where the agent's default is not it (model; users as a [lo, hi] range). */
  seed?: unknown;
  off_flag?: string;
  unit?: string;
  label: string;
  help: string;
  engines: EngineName[];
  commands: Array<'run' | 'sweep'>;
}

export const WORKLOAD_OPTIONS: readonly WorkloadOption[] = table.options as WorkloadOption[];
const BY_NAME = new Map(WORKLOAD_OPTIONS.map((o) => [o.name, o]));
const BYTE_UNITS: Record<string, number> = table.byte_units;

/** The option's row; an unknown name is a programming error. */
export function optionOf(name: string): WorkloadOption {
  const o = BY_NAME.get(name);
  if (!o) throw new Error(`${name} is not a workload option (workload_options.json)`);
  return o;
}

export function isWorkloadOption(name: string): boolean {
  return BY_NAME.has(name);
}

/** "new_tokens" → "--new-tokens", the agent's flag. */
export function flagOf(name: string): string {
  return `--${name.replace(/_/g, '-')}`;
}

/** The agent's default as the app holds it: on_off as a boolean ("auto" stays "auto"); null where the agent decides. */
export function defaultOf(name: string): WorkloadValue | null {
  const o = optionOf(name);
  if (o.type === 'on_off' && (o.default === 'on' || o.default === 'off')) return o.default === 'on';
  return o.default;
}

/** A number default (int, number, bytes); throws where the row has none. */
export function numberDefault(name: string): number {
  const d = defaultOf(name);
  if (typeof d !== 'number') throw new Error(`${name} has no number default`);
  return d;
}

/** A form field's label: the option's, with its unit where it counts something ("Context (tokens)"); sizes take their own units. */
export function fieldLabel(name: string): string {
  const o = optionOf(name);
  return o.unit && o.type !== 'bytes' ? `${o.label} (${o.unit})` : o.label;
}

/** The option's choices (choice rows). */
export function choicesOf(name: string): readonly string[] {
  return optionOf(name).choices ?? [];
}

/** "≥ 1 ≤ 4096" / "> 0 ≤ 1": the bounds in words, '' when none. */
function boundsText(o: WorkloadOption): string {
  const lo = o.min !== undefined ? ` ${o.min_exclusive ? '>' : '≥'} ${o.min}` : '';
  const hi = o.max !== undefined ? ` ≤ ${o.max}` : '';
  return `${lo}${hi}`;
}

function inBounds(o: WorkloadOption, v: number): boolean {
  if (o.min !== undefined && (o.min_exclusive ? v <= o.min : v < o.min)) return false;
  return o.max === undefined || v <= o.max;
}

/**
 * Why `v` is not a value the agent takes for the option, or null. Values are as the app sends
 * them: numbers for int/number/bytes, booleans for on_off (absent = the agent's auto), strings.
 */
export function optionValueError(name: string, v: unknown): string | null {
  const o = optionOf(name);
  const flag = flagOf(name);
  const shown = JSON.stringify(v);
  switch (o.type) {
    case 'int':
    case 'bytes':
      return typeof v === 'number' && Number.isInteger(v) && inBounds(o, v) ? null : `${flag} must be an integer${o.type === 'bytes' ? ' byte count' : ''}${boundsText(o)}, not ${shown}`;
    case 'number':
      return typeof v === 'number' && Number.isFinite(v) && inBounds(o, v) ? null : `${flag} must be a number${boundsText(o)}, not ${shown}`;
    case 'choice':
      return typeof v === 'string' && (o.choices ?? []).includes(v) ? null : `${flag} must be one of ${(o.choices ?? []).join(', ')}, not ${shown}`;
    case 'on_off':
      return typeof v === 'boolean' ? null : `${flag} must be true or false${o.auto ? ' (absent: auto)' : ''}, not ${shown}`;
    case 'text': {
      const max = o.max_length ?? 4096;
      if (typeof v !== 'string' || v.length === 0 || v.length > max) return `${flag} must be a non-empty string of at most ${max} characters`;
      if (o.pattern && !new RegExp(`^(?:${o.pattern})$`).test(v)) return `${flag} must be ${o.pattern_help ?? o.pattern}, not ${shown}`;
      return null;
    }
  }
}

/**
 * The one word `--name=value` the agent gets for a checked value. One word: argparse then takes
 * the whole rest as the value, so a value that looks like an option (`--out=/elsewhere`,
 * `--help`) can never become one.
 */
export function optionArg(name: string, v: unknown): string {
  const why = optionValueError(name, v);
  if (why) throw new CodedError('invalid_argument', why, { field: flagOf(name).slice(2) });
  const o = optionOf(name);
  return `${flagOf(name)}=${o.type === 'on_off' ? (v ? 'on' : 'off') : String(v)}`;
}

/** "55e9", "55 GB", "20GiB" → bytes (the agent's units, from the table); null when unreadable. */
export function parseBytes(text: string): number | null {
  const m = /^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (!m) return null;
  const unit = BYTE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return null;
  const v = Number(m[1]) * unit;
  return Number.isFinite(v) ? Math.trunc(v) : null;
}

/** 55e9 → "55e9" (as the seed writes it); sizes that are not whole gigabytes stay plain bytes. */
export function bytesText(bytes: number): string {
  return bytes !== 0 && Number.isInteger(bytes / 1e9) ? `${bytes / 1e9}e9` : String(bytes);
}

/** The default in words for help texts: "16000", "55e9", "on", or what the agent does without one. */
export function defaultText(o: WorkloadOption): string | null {
  if (o.default === null) return o.default_help ?? null;
  return o.type === 'bytes' && typeof o.default === 'number' ? bytesText(o.default) : String(o.default);
}

/** The help text with the choices explained, as the agent's --help has it (without the default). */
export function helpText(o: WorkloadOption): string {
  return o.choice_help && o.choices ? `${o.help}: ${o.choices.map((c) => `${c}: ${o.choice_help![c]}`).join('; ')}` : o.help;
}

/** The seed benchmark's users, a sweep from lo to hi (the agent's own default is one run of `users`). */
export function seedUsers(): { min: number; max: number } {
  const s = optionOf('users').seed;
  if (!Array.isArray(s) || s.length !== 2) throw new Error('workload_options.json: users.seed must be [lo, hi]');
  return { min: Number(s[0]), max: Number(s[1]) };
}

/** The built-in engine's offload policies, in the table's order (test/unit/workload-options.test.ts holds OffloadPolicy to them). */
export const OFFLOAD_POLICIES = choicesOf('offload_policy') as readonly OffloadPolicy[];

/**
 * Settings' New run defaults (settings.json `workload`, camelCase keys kept for the file's sake)
 * and the option each one holds: its bounds, default and label are the option's; usersMin and
 * usersMax hold the seed's sweep range of `users`.
 */
export const SETTINGS_WORKLOAD_OPTIONS: Readonly<Record<keyof WorkloadDefaults, string>> = {
  usersMin: 'users',
  usersMax: 'users',
  contextTokens: 'context_tokens',
  newTokens: 'new_tokens',
  outputTokens: 'output_tokens',
  rounds: 'rounds',
  hostKvBytes: 'host_kv_bytes',
  freeGpuMemoryFraction: 'free_gpu_memory_fraction',
  blockTokens: 'block_tokens',
};

/** The defaults of Settings' New run workload: the seed's users range, the table's defaults. */
export function settingsWorkloadDefaults(): WorkloadDefaults {
  const out = {} as Record<keyof WorkloadDefaults, number>;
  for (const [key, name] of Object.entries(SETTINGS_WORKLOAD_OPTIONS) as Array<[keyof WorkloadDefaults, string]>) out[key] = numberDefault(name);
  const users = seedUsers();
  return { ...out, usersMin: users.min, usersMax: users.max };
}

/** A JSON Schema (Ajv) for one option's number: its type and bounds. */
export function numberSchema(name: string): { type: 'integer' | 'number'; minimum?: number; exclusiveMinimum?: number; maximum?: number } {
  const o = optionOf(name);
  return {
    type: o.type === 'int' ? 'integer' : 'number',
    ...(o.min !== undefined ? (o.min_exclusive ? { exclusiveMinimum: o.min } : { minimum: o.min }) : {}),
    ...(o.max !== undefined ? { maximum: o.max } : {}),
  };
}
