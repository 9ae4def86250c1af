/**
 * settings.json in the user data folder: read once, validated with Ajv, written atomically.
 * A file that cannot be read as valid settings is never half-used or overwritten: it is moved aside
 * as `settings.json.broken-<timestamp>` (so nothing the user wrote is lost), the defaults are used,
 * and the snapshot says what happened so the Settings view can show it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import type { Settings, SettingsSnapshot, WorkloadDefaults } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { numberDefault, numberSchema, SETTINGS_WORKLOAD_OPTIONS, settingsWorkloadDefaults } from '../../shared/workload-options';

/** The seed's workload (the agent's option table, shared/workload-options.ts); sampling as the agent's --sample-ms default. */
export const DEFAULT_SETTINGS: Settings = Object.freeze({
  version: 1,
  workload: Object.freeze(settingsWorkloadDefaults()),
  runsDir: null,
  pythonByHost: Object.freeze({}) as Record<string, string>,
  sampleMs: numberDefault('sample_ms'),
  theme: 'system',
  recentRuns: Object.freeze([]) as unknown as string[],
}) as Settings;

/** How many runs File → Recent lists. */
export const RECENT_LIMIT = 10;

/**
 * The schema. Missing keys take their defaults (an older file stays valid); keys of a newer version
 * are kept when rewritten (additionalProperties at the top level); a wrong type or range is an error.
 */
const SETTINGS_SCHEMA = {
  type: 'object',
  properties: {
    version: { const: 1, default: 1 },
    workload: {
      type: 'object',
      default: {},
      additionalProperties: false,
      // Each key's type, bounds and default are its option's (SETTINGS_WORKLOAD_OPTIONS).
      properties: Object.fromEntries(
        Object.entries(SETTINGS_WORKLOAD_OPTIONS).map(([key, name]) => [key, { ...numberSchema(name), default: DEFAULT_SETTINGS.workload[key as keyof WorkloadDefaults] }]),
      ),
    },
    runsDir: { type: ['string', 'null'], minLength: 1, maxLength: 4096, default: null },
    pythonByHost: {
      type: 'object',
      default: {},
      propertyNames: { minLength: 1, maxLength: 256 },
      additionalProperties: { type: 'string', minLength: 1, maxLength: 4096 },
    },
    sampleMs: { ...numberSchema('sample_ms'), default: DEFAULT_SETTINGS.sampleMs },
    theme: { enum: ['system', 'dark', 'light'], default: DEFAULT_SETTINGS.theme },
    recentRuns: { type: 'array', items: { type: 'string', maxLength: 256 }, maxItems: 100, default: [] },
  },
} as const;

let compiled: ValidateFunction | null = null;
function validator(): ValidateFunction {
  // useDefaults fills missing keys in place; strict:false for `default` inside `type: [..]` unions.
  compiled ??= new Ajv({ allErrors: true, useDefaults: true, strict: false }).compile(SETTINGS_SCHEMA);
  return compiled;
}

/** "workload.usersMin: must be >= 1" — the field a form should mark, from an Ajv error. */
function describe(e: ErrorObject): { field: string; message: string } {
  const field = e.instancePath.replace(/^\//, '').replace(/\//g, '.') || (e.params as { missingProperty?: string }).missingProperty || '(settings)';
  return { field, message: `${field}: ${e.message ?? 'invalid'}` };
}

/**
 * Validates (and completes with defaults) a settings object, returning a fresh copy.
 * Throws CodedError('invalid_argument') naming the first bad field in `detail.field`.
 */
export function validateSettings(input: unknown): Settings {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new CodedError('invalid_argument', 'settings must be a JSON object', { field: '(settings)' });
  }
  const copy = JSON.parse(JSON.stringify(input)) as Record<string, unknown>;
  const validate = validator();
  if (!validate(copy)) {
    const all = (validate.errors ?? []).map(describe);
    const first = all[0] ?? { field: '(settings)', message: 'invalid settings' };
    throw new CodedError('invalid_argument', first.message, { field: first.field, errors: all });
  }
  const s = copy as unknown as Settings;
  if (s.workload.usersMin > s.workload.usersMax) {
    throw new CodedError('invalid_argument', 'workload.usersMax: must be at least usersMin', { field: 'workload.usersMax' });
  }
  return s;
}

/** Hooks for tests that simulate a crash at the worst moment. */
export interface AtomicWriteHooks {
  beforeRename?: (tmpPath: string) => void | Promise<void>;
}

/**
 * Writes a file so that a reader (or a crash) sees either the old bytes or the new, never a mix:
 * write a temp file in the same folder, fsync it, rename over the target, fsync the folder (the
 * rename itself is durable only once the directory entry is flushed; POSIX, as in git's lockfiles).
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, options: { mode?: number; hooks?: AtomicWriteHooks } = {}): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  let renamed = false;
  try {
    const fh = await open(tmp, 'wx', options.mode ?? 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await options.hooks?.beforeRename?.(tmp);
    await rename(tmp, file);
    renamed = true;
  } finally {
    if (!renamed) await unlink(tmp).catch(() => undefined);
  }
  if (process.platform !== 'win32') {
    // Windows cannot open a folder for fsync; NTFS journals the rename itself.
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}

function clone(s: Settings): Settings {
  return JSON.parse(JSON.stringify(s)) as Settings;
}

/**
 * The settings of this session. `file: null` keeps them in memory only (tests, a core started
 * without a data folder).
 */
export class SettingsStore {
  private current: Settings = clone(DEFAULT_SETTINGS);
  private recoveredInfo: SettingsSnapshot['recovered'] = null;
  private loaded = false;
  private readonly listeners = new Set<(s: Settings) => void>();

  constructor(
    readonly file: string | null,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Reads the file once (later calls return the cached settings). A broken file is moved aside. */
  async load(): Promise<Settings> {
    if (this.loaded) return clone(this.current);
    this.loaded = true;
    if (!this.file) return clone(this.current);
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return clone(this.current);
      // Unreadable (permissions, a folder in its place): leave it where it is, but say so.
      this.recoveredInfo = { movedTo: '', reason: `settings.json could not be read (${(e as Error).message}); defaults in use` };
      return clone(this.current);
    }
    let reason: string | null = null;
    try {
      this.current = validateSettings(JSON.parse(text));
    } catch (e) {
      reason = e instanceof SyntaxError ? `not valid JSON (${e.message})` : (e as Error).message;
    }
    if (reason !== null) {
      const stamp = this.now().toISOString().replace(/[:.]/g, '-');
      const movedTo = `${this.file}.broken-${stamp}`;
      await rename(this.file, movedTo);
      this.current = clone(DEFAULT_SETTINGS);
      this.recoveredInfo = { movedTo, reason: `settings.json was invalid: ${reason}; it was moved to ${movedTo} and the defaults are in use` };
    }
    return clone(this.current);
  }

  get recovered(): SettingsSnapshot['recovered'] {
    return this.recoveredInfo;
  }

  /** Validates, then writes atomically; the app-kept recentRuns list is preserved, not taken from input. */
  async save(input: unknown): Promise<Settings> {
    await this.load();
    const next = validateSettings(input);
    next.recentRuns = [...this.current.recentRuns];
    await this.persist(next);
    return clone(next);
  }

  /** Puts a run first in File → Recent. */
  async noteRecent(runId: string): Promise<string[]> {
    await this.load();
    const recent = [runId, ...this.current.recentRuns.filter((r) => r !== runId)].slice(0, RECENT_LIMIT);
    if (recent.join('\n') === this.current.recentRuns.join('\n')) return recent;
    await this.persist({ ...this.current, recentRuns: recent });
    return recent;
  }

  /** Empties File → Recent. */
  async clearRecent(): Promise<void> {
    await this.load();
    if (this.current.recentRuns.length) await this.persist({ ...this.current, recentRuns: [] });
  }

  /** Called after every successful write (the shell rebuilds its Recent menu). */
  onChange(listener: (s: Settings) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async persist(next: Settings): Promise<void> {
    if (this.file) await writeFileAtomic(this.file, JSON.stringify(next, null, 2) + '\n');
    this.current = next;
    for (const l of this.listeners) l(clone(next));
  }
}
