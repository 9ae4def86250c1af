/**
 * The --slurm-* options of `kvscope run | sweep | hosts`: any of them (or `--slurm` alone) makes
 * the host a Slurm login node for this command, on top of the options saved for it in the app
 * (clusters.json); `kvscope hosts --host H --save-slurm` saves them.
 */
import type { Command } from 'commander';
import type { ClusterOptions } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { checkClusterOptions } from '../../main/core/slurm/options';

export interface SlurmCliOptions {
  slurm?: boolean;
  slurmPartition?: string;
  slurmAccount?: string;
  slurmGpus?: string;
  slurmGpuType?: string[];
  slurmTime?: string;
  slurmSbatch?: string[];
  slurmSetup?: string;
  slurmSharedDir?: string;
  slurmArrayLimit?: string;
  slurmPoll?: string;
}

/** A repeatable option's values, in order. */
const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

export function addSlurmOptions(cmd: Command): Command {
  return cmd
    .option('--slurm', 'the host is a Slurm login node: submit with sbatch (implied by any --slurm-* option or saved cluster options)')
    .option('--slurm-partition <name>', 'sbatch --partition')
    .option('--slurm-account <name>', 'sbatch --account')
    .option('--slurm-gpus <n>', 'GPUs per job (--gres=gpu:N)')
    .option('--slurm-gpu-type <type>', 'card type (--gres=gpu:<type>:N); repeat it and a sweep runs one job array per type', collect)
    .option('--slurm-time <limit>', 'sbatch --time (minutes, HH:MM:SS, D-HH:MM:SS)')
    .option('--slurm-sbatch <option>', 'an extra sbatch option written as an #SBATCH line (e.g. --qos=high); repeatable', collect)
    .option('--slurm-setup <line>', 'shell line run in the job before the agent (e.g. "module load cuda && source ~/venv/bin/activate")')
    .option('--slurm-shared-dir <dir>', 'folder on the shared filesystem for the agent and runs (default: --remote-root, ~/.cache/kvscope)')
    .option('--slurm-array-limit <n>', 'sweeps: run at most N array elements at once (--array=...%N)')
    .option('--slurm-poll <seconds>', 'how often squeue is asked (default 5)');
}

function num(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new CodedError('invalid_argument', `${flag}: ${JSON.stringify(v)} is not a number`, { field: flag });
  return n;
}

/** The options given on the command line (checked), or undefined when no Slurm option was given. */
export function slurmFromCli(o: SlurmCliOptions): ClusterOptions | undefined {
  const raw: Record<string, unknown> = {
    partition: o.slurmPartition,
    account: o.slurmAccount,
    gpus: num('--slurm-gpus', o.slurmGpus),
    gpuTypes: o.slurmGpuType,
    timeLimit: o.slurmTime,
    sbatch: o.slurmSbatch,
    setup: o.slurmSetup,
    sharedDir: o.slurmSharedDir,
    arrayLimit: num('--slurm-array-limit', o.slurmArrayLimit),
    pollSeconds: num('--slurm-poll', o.slurmPoll),
  };
  for (const k of Object.keys(raw)) if (raw[k] === undefined) delete raw[k];
  if (!o.slurm && Object.keys(raw).length === 0) return undefined;
  return checkClusterOptions(raw);
}
