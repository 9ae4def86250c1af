/**
 * A cluster host's submission options: checked field by field (a bad value is refused with the
 * field's name before anything is sent), merged (run over saved), and turned into sbatch's argv.
 *
 * Nothing here builds a shell line by hand: the argv goes through shell-quote.ts like every other
 * remote command, and each option is fused to its value (`--partition=<value>`, one word) so a value
 * can never become an option of its own. The names Slurm takes (partitions, accounts, card types,
 * time limits) are held to the characters Slurm itself allows in them, so a `;`, `$( )`, a quote or
 * a newline is refused outright; the set-up line and the extra #SBATCH lines are free text, but one
 * line each (a newline could start a new script line), and they only ever appear quoted (the
 * set-up line) or as a `#SBATCH` comment that sbatch, not a shell, reads.
 */
import type { ClusterOptions } from '../../../shared/api';
import { CodedError } from '../../../shared/result';

/** A Slurm name (partition, account, card type): never starts like an option. */
const NAME = '[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}';
const NAME_RE = new RegExp(`^${NAME}$`);
const PARTITION_RE = new RegExp(`^${NAME}(,${NAME}){0,31}$`);
/** minutes | MM:SS | HH:MM:SS | D-HH | D-HH:MM | D-HH:MM:SS (sbatch(1), --time), or UNLIMITED. */
const TIME_RE = /^(\d{1,7}|\d{1,7}:\d{1,2}|\d{1,4}:\d{1,2}:\d{1,2}|\d{1,4}-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$/i;
/**
 * sbatch options KV Scope sets itself (where the job writes, which element it is, the script it
 * runs); an extra line setting one of them would break the run's bookkeeping, so it is refused.
 */
const RESERVED_SBATCH = ['array', 'a', 'output', 'o', 'error', 'e', 'input', 'i', 'chdir', 'D', 'wrap', 'job-name', 'J', 'parsable', 'open-mode'];

const bad = (field: string, message: string): CodedError => new CodedError('invalid_argument', `${field}: ${message}`, { field: `slurm.${field}` });

/** One line of free text: no newline, carriage return or NUL (each would start a new script line). */
function oneLine(field: string, v: unknown, max: number): string {
  if (typeof v !== 'string') throw bad(field, `must be text, not ${JSON.stringify(v)}`);
  const s = v.trim();
  if (/[\r\n\0\u2028\u2029]/.test(s)) throw bad(field, 'must be one line (no line breaks or NUL)');
  if (s.length > max) throw bad(field, `longer than ${max} characters`);
  return s;
}

function int(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(field, `must be a whole number ${min}..${max}, not ${JSON.stringify(v)}`);
  return v;
}

/** The option name an extra #SBATCH line sets: `--qos=high` → qos, `-p gpu` → p. */
function sbatchOptionName(line: string): string | null {
  const m = /^--?([A-Za-z][A-Za-z0-9-]*)/.exec(line);
  return m ? m[1]! : null;
}

/**
 * Checks every field and returns a clean copy (empty strings dropped, lists de-duplicated).
 * Throws CodedError('invalid_argument') naming the field (`detail.field` = `slurm.<name>`).
 */
export function checkClusterOptions(input: unknown): ClusterOptions {
  if (input === undefined || input === null) return {};
  if (typeof input !== 'object' || Array.isArray(input)) throw new CodedError('invalid_argument', 'cluster options must be an object', { field: 'slurm' });
  const o = input as Record<string, unknown>;
  const known = new Set(['partition', 'account', 'gpus', 'gpuTypes', 'timeLimit', 'sbatch', 'setup', 'sharedDir', 'arrayLimit', 'pollSeconds']);
  for (const k of Object.keys(o)) if (!known.has(k)) throw bad(k, 'is not a cluster option');
  const out: ClusterOptions = {};
  const present = (k: string) => o[k] !== undefined && o[k] !== null && o[k] !== '';
  if (present('partition')) {
    const v = oneLine('partition', o.partition, 4096);
    if (!PARTITION_RE.test(v)) throw bad('partition', `${JSON.stringify(v)} is not a partition name (letters, digits, _ . + -; several separated by commas)`);
    out.partition = v;
  }
  if (present('account')) {
    const v = oneLine('account', o.account, 4096);
    if (!NAME_RE.test(v)) throw bad('account', `${JSON.stringify(v)} is not an account name (letters, digits, _ . + -)`);
    out.account = v;
  }
  if (present('gpus')) out.gpus = int('gpus', o.gpus, 1, 1024);
  if (present('gpuTypes')) {
    if (!Array.isArray(o.gpuTypes)) throw bad('gpuTypes', 'must be a list of card types');
    const types = [...new Set(o.gpuTypes.map((t) => oneLine('gpuTypes', t, 128)).filter(Boolean))];
    for (const t of types) if (!NAME_RE.test(t)) throw bad('gpuTypes', `${JSON.stringify(t)} is not a card type (letters, digits, _ . + -, as in gpu:h100:1)`);
    if (types.length > 16) throw bad('gpuTypes', 'at most 16 card types');
    if (types.length) out.gpuTypes = types;
  }
  if (present('timeLimit')) {
    const v = oneLine('timeLimit', o.timeLimit, 64);
    if (!TIME_RE.test(v)) throw bad('timeLimit', `${JSON.stringify(v)} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)`);
    out.timeLimit = v;
  }
  if (present('sbatch')) {
    if (!Array.isArray(o.sbatch)) throw bad('sbatch', 'must be a list of lines');
    const lines = o.sbatch.map((l) => oneLine('sbatch', l, 1000).replace(/^#SBATCH\s+/, '')).filter(Boolean);
    if (lines.length > 64) throw bad('sbatch', 'at most 64 lines');
    for (const l of lines) {
      const name = sbatchOptionName(l);
      if (!name) throw bad('sbatch', `${JSON.stringify(l)} is not an sbatch option (it starts with - or --)`);
      if (RESERVED_SBATCH.includes(name)) throw bad('sbatch', `--${name} is set by KV Scope itself (where the job writes and what it runs)`);
    }
    if (lines.length) out.sbatch = lines;
  }
  if (present('setup')) {
    const v = oneLine('setup', o.setup, 4096);
    if (v) out.setup = v;
  }
  if (present('sharedDir')) {
    const v = oneLine('sharedDir', o.sharedDir, 1024);
    // `%` starts one of sbatch's filename patterns (%j, %a) in --output, so a folder holding one
    // would write the job's output somewhere else.
    if (v.includes('%')) throw bad('sharedDir', 'cannot contain % (sbatch reads it as a file name pattern)');
    if (!v.startsWith('/') && !/^~\/./.test(v)) throw bad('sharedDir', 'must be an absolute path or start with ~/');
    out.sharedDir = v;
  }
  if (present('arrayLimit')) out.arrayLimit = int('arrayLimit', o.arrayLimit, 1, 100_000);
  if (present('pollSeconds')) {
    const v = o.pollSeconds;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0.2 || v > 600) throw bad('pollSeconds', `must be 0.2..600 seconds, not ${JSON.stringify(v)}`);
    out.pollSeconds = v;
  }
  return out;
}

/** A run's options: the host's saved ones with the request's on top (both checked). */
export function mergeClusterOptions(saved: ClusterOptions | null | undefined, override: ClusterOptions | null | undefined): ClusterOptions {
  return checkClusterOptions({ ...checkClusterOptions(saved ?? {}), ...checkClusterOptions(override ?? {}) });
}

/** `--gres` for one job: `gpu:N` or `gpu:<type>:N` (N defaults to 1 when a type is named). */
export function gresFor(o: ClusterOptions, gpuType: string | null): string | null {
  if (gpuType) return `gpu:${gpuType}:${o.gpus ?? 1}`;
  if (o.gpus) return `gpu:${o.gpus}`;
  return null;
}

/**
 * sbatch's argv for one submission (the script path last). Paths are absolute on the login node;
 * `output` may hold sbatch's %j / %A / %a patterns.
 */
export function sbatchArgv(o: ClusterOptions, spec: { jobName: string; output: string; chdir: string; script: string; gpuType: string | null; array?: { count: number; limit?: number } }): string[] {
  const argv = ['sbatch', '--parsable', `--job-name=${spec.jobName}`, `--output=${spec.output}`, `--chdir=${spec.chdir}`];
  if (o.partition) argv.push(`--partition=${o.partition}`);
  if (o.account) argv.push(`--account=${o.account}`);
  if (o.timeLimit) argv.push(`--time=${o.timeLimit}`);
  const gres = gresFor(o, spec.gpuType);
  if (gres) argv.push(`--gres=${gres}`);
  if (spec.array) argv.push(`--array=0-${spec.array.count - 1}${spec.array.limit ? `%${spec.array.limit}` : ''}`);
  argv.push(spec.script);
  return argv;
}
