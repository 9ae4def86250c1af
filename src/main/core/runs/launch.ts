/**
 * Starting a run on a host, detached from the connection that starts it, and stopping it.
 *
 * Remote layout (root = ~/.cache/kvscope unless overridden):
 *   <root>/agent-<hash>/kvscope_agent/   the deployed agent (deploy.ts)
 *   <root>/runs/<folder>/events.jsonl    written by the agent (--out); <folder> is the run id, with
 *                                        a random suffix when the id was chosen by the user (--out
 *                                        DIR), so two machines' runs never share a folder
 *                        pid             the launcher's pid = the run's process group id
 *                        exit            the agent's exit status, written when it ends
 *                        agent.stderr    the agent's progress and errors
 *
 * The launcher is `setsid sh -c …`: a new session and process group, no controlling terminal, all
 * fds on files, so closing or losing the SSH connection neither signals nor blocks it. Cancel sends
 * TERM to the whole group, waits a grace period, then KILL (the agent answers TERM by writing
 * run.end "cancelled" and exiting 143).
 */
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { AgentWorkload } from '../../../shared/api';
import { CodedError } from '../../../shared/result';
import { defaultOf, flagOf, isWorkloadOption, optionArg, optionOf, WORKLOAD_OPTIONS, type EngineName } from '../../../shared/workload-options';
import { shellCommand, shellQuote } from '../shell-quote';
import type { HostExec } from '../ssh/host-exec';

/**
 * Maps the workload to the agent's options: every key must be a row of the option table that
 * `run` takes and that the workload's engine takes, every value is checked against its row and
 * fused to its option (`--name=value`), in the table's order.
 */
export function agentRunArgs(w: AgentWorkload): string[] {
  const values = w as Record<string, unknown>;
  for (const name of Object.keys(values)) {
    if (values[name] === undefined || values[name] === null) continue;
    if (!isWorkloadOption(name) || !optionOf(name).commands.includes('run')) {
      throw new CodedError('invalid_argument', `${name} is not an option of the agent's run`, { field: name });
    }
  }
  const engine = w.engine ?? defaultOf('engine');
  const args: string[] = [];
  for (const o of WORKLOAD_OPTIONS) {
    const v = values[o.name];
    if (v === undefined || v === null) continue;
    args.push(optionArg(o.name, v));
    if (typeof engine === 'string' && !o.engines.includes(engine as EngineName)) {
      throw new CodedError('invalid_argument', `${flagOf(o.name)} is taken by ${o.engines.join(', ')} only, not by --engine ${engine}`, { field: flagOf(o.name).slice(2) });
    }
  }
  return args;
}

/** Random lowercase letters and digits from the OS's CSPRNG (folder names that must not collide). */
function randomTag(chars: number): string {
  return [...randomBytes(chars)].map((b) => '0123456789abcdefghijklmnopqrstuvwxyz'[b % 36]).join('');
}

/** A run id: sortable, unique, and safe as a folder name anywhere (RunStore's id rule). */
export function newRunId(host: string, users?: number, now = new Date()): string {
  const ts = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
  const h = host.replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 40) || 'host';
  return `${ts}-${h}${users ? `-u${users}` : ''}-${randomTag(6)}`;
}

/**
 * The run's folder name on the host. A generated id is already unique (a timestamp and a random
 * tag); an id the user chose (the CLI's `--out DIR` names the run after DIR) is not: another
 * laptop or checkout may use the same name on the same host, so it gets a random tag too.
 */
export function remoteRunName(runId: string, chosenByUser: boolean): string {
  return chosenByUser ? `${runId}-${randomTag(8)}` : runId;
}

export interface LaunchSpec {
  exec: HostExec;
  python: string;
  /** Absolute folder holding kvscope_agent/ on the host. */
  agentDir: string;
  /** Absolute run folder on the host (created). */
  remoteDir: string;
  agentArgs: string[];
}

const SETSID_PY = 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])';

/** Starts the agent detached; resolves with its process group id once the pid file exists. */
export async function launchDetached(spec: LaunchSpec): Promise<number> {
  const { remoteDir } = spec;
  const agent = shellCommand([spec.python, '-m', 'kvscope_agent', 'run', ...spec.agentArgs, '--out', remoteDir]);
  // Inside the new session: record the group id, ignore TERM in the shell itself (a trap with a
  // command is reset for children, so the agent still gets TERM), run the agent, record its status.
  const inner = [
    'echo $$ > pid.tmp && mv pid.tmp pid',
    'trap : TERM INT HUP',
    `PYTHONPATH=${shellQuote(spec.agentDir)}`,
    'export PYTHONPATH',
    `${agent} > agent.stdout 2> agent.stderr < /dev/null`,
    'echo $? > exit.tmp',
    'mv exit.tmp exit',
  ].join('; ');
  const q = shellQuote(remoteDir);
  const cmd = [
    `mkdir -p ${q}`,
    `cd ${q}`,
    `if [ -e pid ]; then echo 'kvscope: run folder already in use' >&2; exit 3; fi`,
    // `kvscope-run <folder>` becomes $0/$1 of the launcher: visible in ps, checked by cancel.
    // setsid(1) is util-linux; where it is missing (macOS, busybox) the host's Python calls
    // setsid(2) and execs the same launcher, so the pid is still the group id.
    `if command -v setsid > /dev/null 2>&1; then (setsid sh -c ${shellQuote(inner)} kvscope-run ${q} > /dev/null 2>&1 < /dev/null &); ` +
      `else (${shellQuote(spec.python)} -c ${shellQuote(SETSID_PY)} sh -c ${shellQuote(inner)} kvscope-run ${q} > /dev/null 2>&1 < /dev/null &); fi`,
    'i=0; while [ ! -s pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done',
    'cat pid',
  ].join(' && ');
  // The script goes in on stdin of `sh -s`, so only two plain words meet the user's login shell
  // (which may be csh or fish, whose syntax differs from POSIX sh's).
  const r = await spec.exec.exec('sh -s', cmd + '\n');
  const pgid = Number(r.stdout.toString().trim());
  if (r.code !== 0 || !Number.isInteger(pgid) || pgid <= 1) {
    throw new CodedError('io_error', `could not start the agent on ${spec.exec.label} (exit ${r.code}): ${r.stderr.toString().trim().slice(0, 500) || 'no pid written'}`);
  }
  return pgid;
}

/**
 * TERM to the run's process group, KILL after `graceMs`. The group id is re-read from the run's
 * pid file when it is still there, and a group is only signalled if its leader is our launcher for
 * this run folder (so a recycled pid is never hit).
 */
export async function cancelDetached(exec: HostExec, remoteDir: string, pgid: number | null, graceMs = 5000): Promise<'terminated' | 'killed' | 'not-running'> {
  const q = shellQuote(remoteDir);
  const steps = Math.max(1, Math.round(graceMs / 100));
  // `kill -s SIG -- -PGID`: dash's builtin kill refuses `kill -TERM -- -PGID` ("Illegal number"),
  // and a host's login shell may be dash; the -s form works in dash, bash, zsh and procps kill.
  // A group is named by a negative pid after `--` (POSIX kill: "-pid" means process group).
  const script = [
    `pg=$(cat ${q}/pid 2>/dev/null || echo ${pgid ?? ''})`,
    `case "$pg" in ''|*[!0-9]*) echo not-running; exit 0;; esac`,
    // Only our launcher for this folder: `sh -c … kvscope-run <folder>`.
    `ps -o args= -p "$pg" 2>/dev/null | grep -qF -- ${shellQuote(`kvscope-run ${remoteDir}`)} || { kill -s 0 -- -"$pg" 2>/dev/null && [ -e ${q}/pid ] || { echo not-running; exit 0; }; }`,
    `kill -s TERM -- -"$pg" 2>/dev/null || { echo not-running; exit 0; }`,
    `i=0; while kill -s 0 -- -"$pg" 2>/dev/null && [ $i -lt ${steps} ]; do sleep 0.1; i=$((i+1)); done`,
    `if kill -s 0 -- -"$pg" 2>/dev/null; then kill -s KILL -- -"$pg" 2>/dev/null; echo killed; else echo terminated; fi`,
  ].join('\n');
  const r = await exec.exec('sh -s', script + '\n');
  const word = r.stdout.toString().trim().split('\n').pop();
  if (word === 'terminated' || word === 'killed' || word === 'not-running') return word;
  throw new CodedError('io_error', `cancel on ${exec.label} failed (exit ${r.code}): ${r.stderr.toString().trim().slice(0, 300)}`);
}

/** The remote folder of a run under a root. */
export const remoteRunDir = (root: string, runId: string): string => posix.join(root, 'runs', runId);
