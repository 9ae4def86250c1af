/**
 * `kvscope run --host <alias|local> [connection options] <workload options> [--out DIR]`: deploy
 * the agent, run it detached, follow it to the end through dropped connections. Progress goes to
 * stderr (deploy, phases, rounds with an ETA); the run folder's path is the last line of stdout;
 * the exit status is 0 only when the run ended "ok". Ctrl+C cancels the run on the host (TERM to
 * its process group, KILL after a grace period).
 */
import { existsSync, readdirSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { AgentWorkload, PushMessage } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { formatNs } from '../../shared/format';
import { choicesOf, defaultText, flagOf, helpText, optionOf, parseBytes, WORKLOAD_OPTIONS, type WorkloadValue } from '../../shared/workload-options';
import { defaultDataDir, defaultRunsDir } from '../../main/core/paths';
import { RunManager } from '../../main/core/runs';
import { RunStore } from '../../main/core/run-store';
import { withSlurm } from '../../main/core/slurm';
import { addHostOptions, hostServiceFromCli, type HostCliOptions } from './hosts';
import { addSlurmOptions, slurmFromCli, type SlurmCliOptions } from './slurm-options';
import { writeStdout, writeStderr } from '../terminal';

/** Commander's attribute for an option: "new_tokens" → "newTokens" (from --new-tokens). */
function cliKey(name: string): string {
  return name.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** The workload options as commander parsed them (strings, keyed by cliKey). */
export type WorkloadCliOptions = Record<string, unknown>;

/**
 * The agent's workload options, from its option table: same names, help and choices; the defaults
 * the help shows are the table's, and an option not given is left to the agent. `users` is each
 * command's own (one count for run, a list for sweep).
 */
export function addWorkloadOptions(cmd: Command): Command {
  for (const o of WORKLOAD_OPTIONS) {
    if (o.name === 'users' || !o.commands.includes('run')) continue;
    const words = o.type === 'choice' ? o.choices! : o.type === 'on_off' ? [...(o.auto ? ['auto'] : []), 'on', 'off'] : null;
    const engines = o.engines.length < choicesOf('engine').length ? `${o.engines.join(', ')} only: ` : '';
    const d = defaultText(o);
    const opt = new Option(`${flagOf(o.name)} <${words ? words.join('|') : (o.unit ?? (o.type === 'int' ? 'n' : o.type === 'number' ? 'x' : 'text'))}>`, `${engines}${helpText(o)}${d !== null ? ` (default: ${d})` : ''}`);
    cmd.addOption(words ? opt.choices(words) : opt);
  }
  return cmd;
}

function num(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n)) throw new CodedError('invalid_argument', `--${name}: ${JSON.stringify(v)} is not a number`, { field: name });
  return n;
}

/** The workload from the parsed options: each given option's text read as its row's type (bounds are agentRunArgs'). */
export function workloadFromCli(o: WorkloadCliOptions): Omit<AgentWorkload, 'users'> {
  const w: Record<string, WorkloadValue> = {};
  for (const row of WORKLOAD_OPTIONS) {
    const text = o[cliKey(row.name)];
    if (row.name === 'users' || !row.commands.includes('run') || text === undefined) continue;
    const flag = flagOf(row.name).slice(2);
    if (row.type === 'int' || row.type === 'number') w[row.name] = num(flag, text)!;
    else if (row.type === 'bytes') {
      const b = typeof text === 'string' ? parseBytes(text) : null;
      if (b === null) throw new CodedError('invalid_argument', `--${flag}: ${JSON.stringify(text)} is not a byte count (e.g. 55e9, 16GiB, 0)`, { field: flag });
      w[row.name] = b;
    } else if (row.type === 'on_off') {
      if (text !== 'auto') w[row.name] = text === 'on';
    } else w[row.name] = String(text);
  }
  return w as Omit<AgentWorkload, 'users'>;
}

/** Writes progress pushes to stderr, one line per stage change or round (never per event). */
export function stderrProgress(prefix = ''): (m: PushMessage) => void {
  let last = '';
  return (m) => {
    let line = '';
    if (m.kind === 'progress') {
      const pct = m.fraction !== null ? ` ${Math.round(m.fraction * 100)}%` : '';
      const eta = m.etaS !== null ? `, ETA ${m.etaS} s` : '';
      line = `${m.stage}:${pct} ${m.message}${eta}`;
    } else if (m.kind === 'run-status' && m.status !== 'running') {
      line = `run ${m.runId} ${m.status}${m.message ? `: ${m.message}` : ''}`;
    }
    if (line && line !== last) {
      last = line;
      writeStderr(`${prefix}${line}\n`);
    }
  };
}

export function registerRun(program: Command): void {
  addSlurmOptions(addWorkloadOptions(
    addHostOptions(
      program
        .command('run')
        .description('run the multi-user multi-round workload on a host and store the run locally')
        .requiredOption('--host <alias>', 'an ssh-config alias, a host added in the app, or "local"')
        .option('--users <n>', `${optionOf('users').help} (default: ${defaultText(optionOf('users'))})`)
        .option('--name <text>', 'run name in the library')
        .option('--out <dir>', 'the local run folder to create (default: a new folder in the runs library)')
        .option('--runs-dir <dir>', 'runs library (default: the app data folder\'s runs/)'),
    ),
  )).action(async (opts: HostCliOptions & WorkloadCliOptions & SlurmCliOptions & { host: string; users?: string; name?: string; out?: string; runsDir?: string; python?: string }) => {
    const workload: AgentWorkload = { ...workloadFromCli(opts) };
    const slurm = slurmFromCli(opts);
    if (slurm && opts.host === 'local') throw new CodedError('invalid_argument', '--slurm options need the login node\'s ssh alias as --host, not local', { field: 'host' });
    const users = num('users', opts.users);
    if (users !== undefined) workload.users = users;
    let runsDir = opts.runsDir ? resolve(opts.runsDir) : defaultRunsDir();
    let runId: string | undefined;
    if (opts.out) {
      const out = resolve(opts.out);
      if (existsSync(out) && readdirSync(out).length > 0) throw new CodedError('invalid_argument', `--out ${out} exists and is not empty`, { field: 'out' });
      runsDir = dirname(out);
      runId = basename(out);
    }
    const store = new RunStore(runsDir, null);
    await store.ensure();
    const hosts = hostServiceFromCli({ ...opts, dataDir: defaultDataDir() });
    const runs = new RunManager(withSlurm({ store, hosts, push: stderrProgress() }));
    const started = await runs.start({ host: opts.host, name: opts.name, python: opts.python, workload, ...(slurm ? { slurm } : {}) }, { runId });
    writeStderr(`run ${started.runId} started on ${opts.host} in ${started.remoteDir}\n`);
    await followToEnd(runs, store, started.runId);
  });
}

/**
 * Follows a run until it ends (`kvscope run` and `kvscope resume`): Ctrl+C cancels it on the host
 * (TERM to its process group, KILL after a grace period); the run folder is the last stdout line;
 * the exit status is 0 only when the run ended "ok".
 */
export async function followToEnd(runs: RunManager, store: RunStore, runId: string): Promise<void> {
  let cancelling = false;
  const onSigint = () => {
    if (cancelling) return;
    cancelling = true;
    writeStderr('cancelling the run on the host (TERM, then KILL after 5 s)...\n');
    void runs.cancel(runId).catch((e: Error) => writeStderr(`kvscope: cancel failed: ${e.message}\n`));
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const r = await runs.wait(runId);
  process.off('SIGINT', onSigint);
  process.off('SIGTERM', onSigint);
  const listing = (await store.list()).find((l) => l.id === runId);
  if (listing && r.status === 'ok') writeStderr(`E2E ${formatNs(listing.e2e_ns)}, TTFT mean ${formatNs(listing.ttft_ns_mean)}, ${r.bytes} bytes, ${r.reconnects} reconnect(s)\n`);
  if (r.error) writeStderr(`kvscope: run ${r.status}: ${r.error.message}\n`);
  writeStdout(`${store.runDir(runId)}\n`);
  process.exitCode = r.status === 'ok' ? 0 : 1;
}
