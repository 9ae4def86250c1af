/**
 * `kvscope clean`: the run folders and deployed agents on a host (the agent package's
 * programs/list_runs.py, sent as the program text of `<python> - <root>`), and removing those that
 * are not running.
 */
import { CodedError } from '../../../shared/result';
import { readAgentProgram } from '../agent-programs';
import { shellCommand } from '../shell-quote';
import type { HostExec } from '../ssh/host-exec';

/** One run folder found on a host (for `kvscope clean`). */
export interface RemoteRunFolder {
  path: string;
  name: string;
  /** "running": its process group is alive; "ended": it has an exit file; "dead": neither. */
  state: 'running' | 'ended' | 'dead';
  mtime_s: number;
  bytes: number;
}

/**
 * Lists the run folders under `<root>/runs` on a host, and the deployed agent folders
 * (`agent-<hash>`, and `.agent-*` temp uploads); an agent folder is "running" while a live process
 * was launched with it.
 */
export async function listRemoteRuns(exec: HostExec, python: string, root: string, agentSourceDir: string): Promise<{ runs: RemoteRunFolder[]; agents: RemoteRunFolder[] }> {
  const r = await exec.exec(shellCommand([python, '-', root]), await readAgentProgram(agentSourceDir, 'programs/list_runs.py'));
  if (r.code !== 0) throw new CodedError('io_error', `listing runs on ${exec.label} failed (exit ${r.code}): ${r.stderr.toString().trim().slice(-300)}`);
  return JSON.parse(r.stdout.toString()) as { runs: RemoteRunFolder[]; agents: RemoteRunFolder[] };
}

/** Deletes run folders (never one that is still running; each path quoted, `--` before them). */
export async function removeRemoteRuns(exec: HostExec, folders: RemoteRunFolder[]): Promise<void> {
  const doomed = folders.filter((f) => f.state !== 'running').map((f) => f.path);
  for (let i = 0; i < doomed.length; i += 200) {
    const r = await exec.exec(shellCommand(['rm', '-rf', '--', ...doomed.slice(i, i + 200)]));
    if (r.code !== 0) throw new CodedError('io_error', `removing run folders on ${exec.label} failed: ${r.stderr.toString().trim().slice(-300)}`);
  }
}
