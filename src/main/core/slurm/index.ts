/**
 * Slurm clusters (a host alias that is a login node): its saved options, the scheduler that turns
 * runs into jobs and sweeps into job arrays, and the probe. `withSlurm` gives a RunManager the
 * scheduler, so the app, `kvscope run` and `kvscope sweep` all send cluster hosts through it.
 */
import type { RunManagerOptions } from '../runs';
import { ClusterStore } from './cluster-store';
import { SlurmRuns } from './slurm-runs';

export { ClusterStore } from './cluster-store';
export { checkClusterOptions, mergeClusterOptions } from './options';
export { SlurmRuns } from './slurm-runs';

export function withSlurm(o: RunManagerOptions): RunManagerOptions & { scheduler: SlurmRuns } {
  const clusters = new ClusterStore(o.hosts.opts.dataDir);
  return { ...o, scheduler: new SlurmRuns({ store: o.store, hosts: o.hosts, clusters, push: o.push, reconnectWindowMs: o.reconnectWindowMs }) };
}
