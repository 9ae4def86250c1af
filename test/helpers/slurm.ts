/**
 * A real Slurm cluster on loopback for the Slurm tests: Debian's munged, slurmctld and slurmd,
 * started from a throw-away configuration in a temp folder (its own munge key and socket, its own
 * ports, state and spool folders, logs). One node (this machine's short host name, on 127.0.0.1)
 * with 2 CPUs and two stand-in GPUs of two card types (gres gpu:h100 on /dev/null and gpu:a100
 * on /dev/zero: Slurm allocates them and sets CUDA_VISIBLE_DEVICES, though no GPU is there) in
 * one partition `debug`; process tracking by /proc (proctrack/linuxproc), no
 * cgroups, no task plugin, no accounting. `AuthInfo=cred_expire=5` shortens Slurm's wait before
 * a requeued job may start again (cred_expire + 1 s: 6 s here, 121 s by default).
 * Nothing here mocks Slurm: the tests' jobs are scheduled, started and killed by these daemons.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort } from './sshd';

const BINARIES: Array<[string, string]> = [
  ['/usr/sbin/munged', 'munge'],
  ['/usr/sbin/slurmctld', 'slurmctld'],
  ['/usr/sbin/slurmd', 'slurmd'],
  ['/usr/bin/sbatch', 'slurm-client'],
  ['/usr/bin/squeue', 'slurm-client'],
  ['/usr/bin/scontrol', 'slurm-client'],
  ['/usr/bin/scancel', 'slurm-client'],
  ['/usr/bin/sinfo', 'slurm-client'],
];

/** Why the Slurm tests cannot run here (which binaries are absent), or null when they can. */
export function slurmSkipReason(): string | null {
  const missing = BINARIES.filter(([p]) => !existsSync(p));
  if (missing.length === 0) return null;
  return `Slurm/munge not installed: ${missing.map(([p]) => p).join(', ')} absent (Debian: apt-get install slurm-wlm munge)`;
}

export interface TestSlurm {
  dir: string;
  /** The slurm.conf every Slurm command must be pointed at (SLURM_CONF). */
  conf: string;
  node: string;
  partition: string;
  /** The card types of the stand-in GPUs, and the index Slurm gives each. */
  gpuTypes: Record<string, string>;
  env: NodeJS.ProcessEnv;
  /** Runs a Slurm command here as the cluster's admin would (stdout). */
  cmd(argv: string[]): string;
  /** squeue's state of a job ("" once it has left the queue). */
  state(jobId: string): string;
  /** Daemon logs, for a failing test's message. */
  logs(): string;
  stop(): Promise<void>;
}

async function until(what: string, timeoutMs: number, fn: () => boolean, diag: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`Slurm test cluster: timed out waiting for ${what}\n${diag()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startSlurm(): Promise<TestSlurm> {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-slurm-'));
  // slurmd and the jobs (any user) must reach the folder; munged checks its key's folder.
  chmodSync(dir, 0o755);
  for (const d of ['ctld', 'spool']) mkdirSync(join(dir, d), { mode: 0o700 });
  // Every Slurm command authenticates through munged's socket: its folder must be reachable.
  mkdirSync(join(dir, 'munge'), { mode: 0o755 });
  const me = userInfo().username;
  const node = hostname().split('.')[0]!;
  const key = join(dir, 'munge', 'munge.key');
  writeFileSync(key, randomBytes(1024), { mode: 0o400 });
  const sock = join(dir, 'munge', 'munge.sock');
  const procs: ChildProcess[] = [];
  const spawnLogged = (bin: string, args: string[], log: string) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, SLURM_CONF: join(dir, 'slurm.conf') } });
    let err = '';
    p.stderr!.on('data', (b: Buffer) => {
      if (err.length < 64_000) err += b.toString();
    });
    p.on('exit', () => writeFileSync(join(dir, log), err));
    procs.push(p);
    return { p, err: () => err };
  };
  const munged = spawnLogged('/usr/sbin/munged', ['-F', '--force', `--socket=${sock}`, `--key-file=${key}`, `--pid-file=${join(dir, 'munge', 'munged.pid')}`, `--seed-file=${join(dir, 'munge', 'munged.seed')}`, `--log-file=${join(dir, 'munged.log')}`], 'munged.stderr');
  await until('munged', 30_000, () => existsSync(sock) || munged.p.exitCode !== null, () => munged.err());
  if (munged.p.exitCode !== null) throw new Error(`munged exited (${munged.p.exitCode}): ${munged.err()}`);
  const [ctldPort, dPort] = [await freePort(), await freePort()];
  const conf = join(dir, 'slurm.conf');
  writeFileSync(
    conf,
    [
      'ClusterName=kvscopetest',
      `SlurmctldHost=${node}(127.0.0.1)`,
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${dPort}`,
      `SlurmUser=${me}`,
      'SlurmdUser=root',
      'AuthType=auth/munge',
      'CredType=cred/munge',
      `AuthInfo=socket=${sock},cred_expire=5`,
      `StateSaveLocation=${join(dir, 'ctld')}`,
      `SlurmdSpoolDir=${join(dir, 'spool')}`,
      `SlurmctldPidFile=${join(dir, 'slurmctld.pid')}`,
      `SlurmdPidFile=${join(dir, 'slurmd.pid')}`,
      `SlurmctldLogFile=${join(dir, 'slurmctld.log')}`,
      `SlurmdLogFile=${join(dir, 'slurmd.log')}`,
      'SlurmctldDebug=info',
      'SlurmdDebug=info',
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'JobCompType=jobcomp/none',
      'MpiDefault=none',
      'SwitchType=switch/none',
      'SchedulerType=sched/backfill',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      'ReturnToService=2',
      // Jobs killed at once after TERM's grace (KillWait): a test's cancel never waits 30 s.
      'KillWait=5',
      'MailProg=/bin/true',
      'GresTypes=gpu',
      `NodeName=${node} NodeAddr=127.0.0.1 CPUs=2 Gres=gpu:h100:1,gpu:a100:1 State=UNKNOWN`,
      'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
    ].join('\n') + '\n',
  );
  // gres.conf is read from beside slurm.conf. Any character device stands in for a GPU's.
  writeFileSync(join(dir, 'gres.conf'), ['AutoDetect=off', `NodeName=${node} Name=gpu Type=h100 File=/dev/null`, `NodeName=${node} Name=gpu Type=a100 File=/dev/zero`].join('\n') + '\n');
  const env = { ...process.env, SLURM_CONF: conf };
  const cmd = (argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { env, encoding: 'utf8', timeout: 30_000 });
  const logs = () =>
    ['slurmctld.log', 'slurmd.log', 'slurmctld.stderr', 'slurmd.stderr', 'munged.stderr']
      .map((f) => (existsSync(join(dir, f)) ? `--- ${f}\n${readFileSync(join(dir, f), 'utf8').split('\n').slice(-25).join('\n')}` : ''))
      .join('\n');
  const ctld = spawnLogged('/usr/sbin/slurmctld', ['-D', '-c', '-f', conf], 'slurmctld.stderr');
  const slurmd = spawnLogged('/usr/sbin/slurmd', ['-D', '-f', conf], 'slurmd.stderr');
  const sinfoState = () => {
    if (ctld.p.exitCode !== null || slurmd.p.exitCode !== null) return 'daemon exited';
    try {
      return cmd(['sinfo', '-h', '-o', '%T']).trim();
    } catch {
      return '';
    }
  };
  let last = '';
  await until('the node to be idle', 60_000, () => (last = sinfoState()) === 'idle' || last === 'daemon exited', () => `sinfo: ${last}\n${ctld.err()}\n${slurmd.err()}\n${logs()}`);
  if (last !== 'idle') throw new Error(`Slurm test cluster: a daemon exited\n${ctld.err()}\n${slurmd.err()}\n${logs()}`);
  return {
    dir,
    conf,
    node,
    partition: 'debug',
    gpuTypes: { h100: '0', a100: '1' },
    env,
    cmd,
    state: (jobId) => {
      try {
        return cmd(['squeue', '-h', '-t', 'all', '-j', jobId, '-o', '%T']).trim();
      } catch {
        return '';
      }
    },
    logs,
    async stop() {
      // Jobs first (their slurmstepd would outlive slurmd), then the daemons this helper started.
      try {
        const ids = cmd(['squeue', '-h', '-o', '%i']).split('\n').filter(Boolean);
        if (ids.length) cmd(['scancel', ...ids]);
        await until('the queue to drain', 30_000, () => cmd(['squeue', '-h', '-t', 'PD,R,CG', '-o', '%i']).trim() === '', () => '').catch(() => undefined);
      } catch {
        /* the controller is gone already */
      }
      for (const p of procs.reverse()) {
        if (p.exitCode !== null || p.signalCode !== null) continue;
        p.kill('SIGTERM');
        await new Promise((r) => p.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
