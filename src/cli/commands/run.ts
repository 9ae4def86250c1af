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
import { OFFLOAD_POLICIES, type AgentWorkload, type OffloadPolicy, type PushMessage } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { formatNs } from '../../shared/format';
import { defaultDataDir, defaultRunsDir } from '../../main/core/paths';
import { RunManager } from '../../main/core/remote-run';
import { RunStore } from '../../main/core/run-store';
import { withSlurm } from '../../main/core/slurm';
import { addHostOptions, hostServiceFromCli, type HostCliOptions } from './hosts';
import { addSlurmOptions, slurmFromCli, type SlurmCliOptions } from './slurm-options';
import { writeStdout, writeStderr } from '../terminal';

export interface WorkloadCliOptions {
  engine?: string;
  model?: string;
  device?: string;
  rounds?: string;
  contextTokens?: string;
  newTokens?: string;
  outputTokens?: string;
  blockTokens?: string;
  gpuKvBytes?: string;
  freeGpuMemoryFraction?: string;
  hostKvBytes?: string;
  seed?: string;
  trace?: string;
  sampleMs?: string;
  offloadPolicy?: string;
  copyOverlap?: string;
}

/** The agent's workload options, same names and defaults (left to the agent). */
export function addWorkloadOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--engine <name>', 'torch (built in), tensorrt_llm or vllm').choices(['torch', 'tensorrt_llm', 'vllm']))
    .option('--model <name>', 'tiny | llama-3.1-8b | llama-3.1-70b | llama-3.1-70b-fp8 | a config.json path on the host')
    .addOption(new Option('--device <d>', 'cuda or cpu (default: cuda if available)').choices(['cuda', 'cpu']))
    .option('--rounds <n>', 'timed rounds (default 10)')
    .option('--context-tokens <n>', 'context tokens per user (default 16000)')
    .option('--new-tokens <n>', 'new input tokens per round (default 64)')
    .option('--output-tokens <n>', 'output tokens per round (default 64)')
    .option('--block-tokens <n>', 'tokens per KV block (default 32)')
    .option('--gpu-kv-bytes <n>', 'GPU KV pool bytes (else --free-gpu-memory-fraction)')
    .option('--free-gpu-memory-fraction <f>', 'GPU KV pool as a fraction of free GPU memory (default 0.9)')
    .option('--host-kv-bytes <n>', 'host KV pool bytes, 0 = no host pool (default 55e9)')
    .option('--seed <n>', 'random seed')
    .addOption(new Option('--trace <on|off>', 'CUPTI copy tracing').choices(['on', 'off']))
    .option('--sample-ms <n>', 'GPU telemetry period in ms, 0 = off')
    .addOption(new Option('--offload-policy <p>', 'built-in engine: when blocks go to the host (default lazy)').choices([...OFFLOAD_POLICIES]))
    .addOption(new Option('--copy-overlap <auto|on|off>', 'built-in engine: onboard beside the offload that makes room (default auto: on for lazy offload)').choices(['auto', 'on', 'off']));
}

function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new CodedError('invalid_argument', `--${name}: ${JSON.stringify(v)} is not a number`, { field: name });
  return n;
}

export function workloadFromCli(o: WorkloadCliOptions): Omit<AgentWorkload, 'users'> {
  const w: Omit<AgentWorkload, 'users'> = {};
  if (o.engine) w.engine = o.engine as AgentWorkload['engine'];
  if (o.model) w.model = o.model;
  if (o.device) w.device = o.device as AgentWorkload['device'];
  const set = <K extends keyof AgentWorkload>(k: K, v: AgentWorkload[K] | undefined) => {
    if (v !== undefined) (w as AgentWorkload)[k] = v;
  };
  set('rounds', num('rounds', o.rounds));
  set('context_tokens', num('context-tokens', o.contextTokens));
  set('new_tokens', num('new-tokens', o.newTokens));
  set('output_tokens', num('output-tokens', o.outputTokens));
  set('block_tokens', num('block-tokens', o.blockTokens));
  set('gpu_kv_bytes', num('gpu-kv-bytes', o.gpuKvBytes));
  set('free_gpu_memory_fraction', num('free-gpu-memory-fraction', o.freeGpuMemoryFraction));
  set('host_kv_bytes', num('host-kv-bytes', o.hostKvBytes));
  set('seed', num('seed', o.seed));
  if (o.trace) w.trace = o.trace === 'on';
  set('sample_ms', num('sample-ms', o.sampleMs));
  if (o.offloadPolicy) w.offload_policy = o.offloadPolicy as OffloadPolicy;
  if (o.copyOverlap && o.copyOverlap !== 'auto') w.copy_overlap = o.copyOverlap === 'on';
  return w;
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
        .option('--users <n>', 'concurrent users (default 2)')
        .option('--name <text>', 'run name in the library')
        .option('--out <dir>', 'the local run folder to create (default: a new folder in the runs library)')
        .option('--runs-dir <dir>', 'runs library (default: the app data folder\'s runs/)'),
    ),
  )).action(async (opts: HostCliOptions & WorkloadCliOptions & SlurmCliOptions & { host: string; users?: string; name?: string; out?: string; runsDir?: string }) => {
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
