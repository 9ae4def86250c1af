/**
 * `kvscope clean --host H [--older-than DAYS] [--agents] [--dry-run]`: removes a host's old run
 * folders under <root>/runs (and, with --agents, agent versions other than this one). A run whose
 * process group is still alive, or an agent folder a live run was started from, is never removed.
 */
import type { Command } from 'commander';
import { formatBytes } from '../../shared/format';
import { CodedError } from '../../shared/result';
import { listRemoteRuns, removeRemoteRuns } from '../../main/core/runs';
import { addHostOptions, hostServiceFromCli, type HostCliOptions } from './hosts';
import { writeStdout, writeStderr } from '../terminal';

export function registerClean(program: Command): void {
  addHostOptions(
    program
      .command('clean')
      .description("remove a host's finished run folders (never a running one)")
      .requiredOption('--host <alias>', 'an ssh-config alias, a host added in the app, or "local"')
      .option('--older-than <days>', 'only folders untouched for this many days', '0')
      .option('--agents', 'also remove deployed agent folders other than this version (never one a live run uses)')
      .option('--dry-run', 'list what would be removed'),
  ).action(async (opts: HostCliOptions & { host: string; olderThan: string; dryRun?: boolean; agents?: boolean }) => {
    const days = Number(opts.olderThan);
    if (!Number.isFinite(days) || days < 0) throw new CodedError('invalid_argument', `--older-than: ${JSON.stringify(opts.olderThan)} is not a number of days`, { field: 'older-than' });
    const service = hostServiceFromCli(opts);
    const exec = await service.connect(opts.host);
    try {
      const root = await service.rootOn(exec);
      const python = await service.pythonFor(opts.host, opts.python);
      const listed = await listRemoteRuns(exec, python, root, service.opts.agentSourceDir);
      const cutoff = Date.now() / 1000 - days * 86400;
      const current = `agent-${(await service.agentBundle()).hash}`;
      const all = [...listed.runs, ...(opts.agents ? listed.agents : [])];
      const doomed = all.filter((f) => f.state !== 'running' && f.mtime_s <= cutoff && f.name !== current);
      for (const f of all) {
        const verb = doomed.includes(f) ? (opts.dryRun ? 'would remove' : 'remove') : 'keep';
        writeStdout(`${verb.padEnd(12)} ${f.state.padEnd(7)} ${formatBytes(f.bytes).padStart(10)}  ${f.path}\n`);
      }
      if (!opts.dryRun) await removeRemoteRuns(exec, doomed);
        writeStderr(`${opts.dryRun ? 'would remove' : 'removed'} ${doomed.length} of ${all.length} folder(s), ${formatBytes(doomed.reduce((s, f) => s + f.bytes, 0))}\n`);
    } finally {
      exec.close();
    }
  });
}
