/**
 * `kvscope sweep --host A [--host B ...] --users 2..16 <workload options>`: the seed's sweep, one
 * run per user count per host; hosts in parallel, each host's runs in turn; one host failing does
 * not stop the others. A summary table goes to stdout at the end; exit 0 only if every run was ok.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { SweepRow } from '../../shared/api';
import { formatNs } from '../../shared/format';
import { seedUsers } from '../../shared/workload-options';
import { defaultDataDir, defaultRunsDir } from '../../main/core/paths';
import { RunManager } from '../../main/core/runs';
import { RunStore } from '../../main/core/run-store';
import { sweepUsers, SweepRunner } from '../../main/core/sweep';
import { withSlurm } from '../../main/core/slurm';
import { addHostOptions, hostServiceFromCli, type HostCliOptions } from './hosts';
import { addWorkloadOptions, stderrProgress, workloadFromCli, type WorkloadCliOptions } from './run';
import { addSlurmOptions, slurmFromCli, type SlurmCliOptions } from './slurm-options';
import { writeStdout } from '../terminal';

export function sweepTable(rows: SweepRow[]): string {
  // Cluster rows also name their Slurm job (array element) and card type.
  const jobs = rows.some((r) => r.job_id);
  const head = ['host', 'users', 'status', 'E2E', 'TTFT mean', 'run', ...(jobs ? ['job'] : [])];
  const body = rows.map((r) => [r.gpu_type ? `${r.host}[${r.gpu_type}]` : r.host, String(r.users), r.status, formatNs(r.e2e_ns), formatNs(r.ttft_ns_mean), r.runId ?? '-', ...(jobs ? [r.job_id ?? '-'] : [])]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const lines = [fmt(head), fmt(widths.map((w) => '-'.repeat(w))), ...body.map(fmt)];
  for (const r of rows) if (r.error) lines.push(`${r.host} ${r.users}u: ${r.error}`);
  return lines.join('\n');
}

export function registerSweep(program: Command): void {
  addSlurmOptions(addWorkloadOptions(
    addHostOptions(
      program
        .command('sweep')
        .description('one run per user count per host (hosts in parallel), then a summary table')
        .requiredOption('--host <alias...>', 'hosts (repeat --host, or list several)')
        .option('--users <list>', 'user counts: 2..16, 2,4,8 or 2..16:2 (default: the seed\'s)', `${seedUsers().min}..${seedUsers().max}`)
        .option('--name <text>', 'name prefix of the runs')
        .option('--runs-dir <dir>', 'runs library (default: the app data folder\'s runs/)'),
    ),
  )).action(async (opts: HostCliOptions & WorkloadCliOptions & SlurmCliOptions & { host: string[]; users: string; name?: string; runsDir?: string }) => {
    const users = sweepUsers(opts.users);
    const slurm = slurmFromCli(opts);
    const store = new RunStore(opts.runsDir ? resolve(opts.runsDir) : defaultRunsDir(), null);
    await store.ensure();
    const hosts = hostServiceFromCli({ ...opts, dataDir: defaultDataDir() });
    const progress = stderrProgress();
    const runs = new RunManager(withSlurm({ store, hosts, push: (m) => progress(m) }));
    const sweep = new SweepRunner(runs);
    const rows = await sweep.run({ hosts: [...new Set(opts.host)], users, workload: workloadFromCli(opts), python: opts.python, name: opts.name, ...(slurm ? { slurm } : {}) });
    writeStdout(sweepTable(rows) + '\n');
    process.exitCode = rows.every((r) => r.status === 'ok') ? 0 : 1;
  });
}
