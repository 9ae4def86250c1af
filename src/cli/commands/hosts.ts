/**
 * `kvscope hosts [--probe]`, and the connection options every host command shares (--ssh-config,
 * --known-hosts, --identity, --accept-new, --python, --remote-root). In the CLI an unknown host
 * key is refused unless --accept-new is given (then recorded, as ssh's StrictHostKeyChecking
 * accept-new does); a key passphrase or password is asked on the terminal, never echoed, and only
 * when there is a terminal.
 */
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import type { HostProbe, SlurmProbe } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { formatBytes } from '../../shared/format';
import { HostService } from '../../main/core/hosts';
import { ClusterStore } from '../../main/core/slurm';
import { addSlurmOptions, slurmFromCli, type SlurmCliOptions } from './slurm-options';
import { appPaths, defaultDataDir, findAppRoot } from '../../main/core/paths';
import type { ConnectPrompts } from '../../main/core/ssh/connect';
import { writeStdout, writeStderr } from '../terminal';

export interface HostCliOptions {
  sshConfig?: string;
  knownHosts?: string;
  identity?: string;
  acceptNew?: boolean;
  python?: string;
  remoteRoot?: string;
  dataDir?: string;
}

export function addHostOptions(cmd: Command): Command {
  return cmd
    .option('--ssh-config <file>', 'ssh config file (default ~/.ssh/config)')
    .option('--known-hosts <file>', 'known_hosts file (default: UserKnownHostsFile from the config, ~/.ssh/known_hosts)')
    .option('--identity <file>', 'private key tried before the config\'s IdentityFile')
    .option('--accept-new', 'trust and record an unknown host key (a CHANGED key is always refused)')
    .option('--python <path>', 'Python interpreter on the host (default python3): a venv or conda env\'s python')
    .option('--remote-root <dir>', 'folder on the host for the agent and runs (default ~/.cache/kvscope)');
}

/** Reads a line from the terminal without echoing it. */
function askHidden(question: string): Promise<string | null> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.resolve(null);
  return new Promise((resolve) => {
    writeStderr(question);
    let buf = '';
    stdin.setRawMode(true);
    stdin.resume();
    const done = (v: string | null) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      writeStderr('\n');
      resolve(v);
    };
    const onData = (b: Buffer) => {
      for (const ch of b.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done(buf);
        if (ch === '\u0003' || ch === '\u0004') return done(null);
        if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
        else buf += ch;
      }
    };
    stdin.on('data', onData);
  });
}

export function cliPrompts(opts: HostCliOptions): ConnectPrompts {
  return {
    unknownHostKey: async (q) => {
      if (opts.acceptNew) {
        writeStderr(`kvscope: recording the new host key of ${q.hop}: ${q.keyType} ${q.fingerprint}\n`);
        return true;
      }
      writeStderr(
        `kvscope: the host key of ${q.hop} is not known (${q.keyType} ${q.fingerprint}).\n` +
          `  Check the fingerprint with the host's owner, then run again with --accept-new to trust and record it.\n`,
      );
      return false;
    },
    passphrase: (q) => askHidden(`${q.attempt > 1 ? 'Wrong passphrase. ' : ''}Enter passphrase for key '${q.keyFile}': `),
    password: (q) => askHidden(`${q.attempt > 1 ? 'Permission denied, please try again. ' : ''}${q.user}@${q.host}'s password: `),
  };
}

export function agentSourceDir(): string {
  return appPaths(findAppRoot(dirname(fileURLToPath(import.meta.url)))).agentDir;
}

export function hostServiceFromCli(opts: HostCliOptions): HostService {
  return new HostService({
    dataDir: opts.dataDir ?? defaultDataDir(),
    agentSourceDir: agentSourceDir(),
    prompts: cliPrompts(opts),
    sshConfigFile: opts.sshConfig,
    knownHostsFile: opts.knownHosts,
    identityFile: opts.identity,
    remoteRoot: opts.remoteRoot,
    python: opts.python,
  });
}

export function describeProbe(p: HostProbe): string[] {
  const lines: string[] = [];
  const gpus = p.gpus.length
    ? p.gpus
        .map((g) => `GPU ${g.index}: ${g.name}, ${g.memory_total_bytes !== null ? formatBytes(g.memory_total_bytes) : '?'}${g.pcie_gen ? `, PCIe Gen${g.pcie_gen} x${g.pcie_width ?? '?'}` : ''}${g.c2c ? ', NVLink-C2C' : ''}`)
        .join('; ')
    : 'no NVIDIA GPU';
  lines.push(`  ${gpus}`);
  lines.push(`  driver ${p.driver_version ?? '-'}, CUDA ${p.cuda_version ?? '-'}, Python ${p.python?.version ?? '-'} (${p.python?.executable ?? '-'}), torch ${p.torch?.version ?? 'not importable'}${p.torch ? ` (cuda ${p.torch.cuda ?? 'none'}, available: ${p.torch.cuda_available})` : ''}`);
  lines.push(`  engines: ${p.engines.map((e) => `${e.name} ${e.available ? e.version ?? 'yes' : 'no'}`).join(', ')}`);
  lines.push(`  disk free ${p.disk_free_bytes !== null ? formatBytes(p.disk_free_bytes) : '?'}, RAM ${p.ram_total_bytes !== null ? formatBytes(p.ram_total_bytes) : '?'} (${p.ram_available_bytes !== null ? formatBytes(p.ram_available_bytes) : '?'} available), probe ${p.elapsed_ms} ms`);
  for (const n of p.notes) lines.push(`  note: ${n}`);
  if (p.slurm) lines.push(...describeSlurm(p.slurm));
  return lines;
}

/** A cluster's scheduler side, for `hosts --probe`. */
export function describeSlurm(s: SlurmProbe): string[] {
  const lines = [`  Slurm: ${s.version ?? 'not found'}, default account ${s.defaultAccount ?? '-'}`];
  for (const p of s.partitions) {
    lines.push(`  partition ${p.name}${p.default ? ' (default)' : ''}: ${p.available}, ${p.nodes} node(s), time limit ${p.timeLimit}, GPU types ${p.gpuTypes.join(', ') || 'none'}${p.gres.length ? ` (gres ${p.gres.join(', ')})` : ''}`);
  }
  lines.push(`  shared folder ${s.sharedDir.path}: ${s.sharedDir.writable ? 'writable' : `NOT writable (${s.sharedDir.error ?? '?'})`}`);
  for (const n of s.notes) lines.push(`  note: ${n}`);
  return lines;
}

export function registerHosts(program: Command): void {
  addSlurmOptions(addHostOptions(
    program
      .command('hosts')
      .description('list the hosts you can run on (~/.ssh/config aliases, hosts added in the app, local); --probe connects and probes each')
      .option('--probe', 'connect to each host and probe GPUs, driver, CUDA, Python, torch, engines, disk and RAM (and Slurm, for a cluster)')
      .option('--host <alias...>', 'only these hosts')
      .option('--save-slurm', 'make the --host a Slurm cluster with the --slurm-* options given (saved with the app\'s hosts)')
      .option('--forget-slurm', 'make the --host a plain host again')
      .option('--json', 'print JSON'),
  )).action(async (opts: HostCliOptions & SlurmCliOptions & { probe?: boolean; json?: boolean; host?: string[]; saveSlurm?: boolean; forgetSlurm?: boolean }) => {
    const service = hostServiceFromCli(opts);
    const clusters = new ClusterStore(service.opts.dataDir);
    const slurm = slurmFromCli(opts);
    if (opts.saveSlurm || opts.forgetSlurm) {
      if (opts.host?.length !== 1) throw new CodedError('invalid_argument', '--save-slurm and --forget-slurm need exactly one --host', { field: 'host' });
      const saved = await clusters.saveFor(service, opts.host[0]!, opts.forgetSlurm ? null : (slurm ?? {}));
      writeStderr(`kvscope: ${saved.alias} is ${saved.cluster ? `a Slurm cluster: ${JSON.stringify(saved.cluster)}` : 'a plain host'}\n`);
    }
    let list = await clusters.annotate(await service.listHosts());
    if (opts.host?.length) list = list.filter((h) => opts.host!.includes(h.alias));
    const out = (s: string) => writeStdout(s + '\n');
    const warnings = [...new Set(list.flatMap((h) => h.warnings))];
    for (const w of warnings) writeStderr(`kvscope: warning: ${w}\n`);
    const probes = new Map<string, HostProbe | Error>();
    if (opts.probe) {
      await Promise.all(
        list.map(async (h) => {
          try {
            const base = await service.probe(h.alias);
            probes.set(h.alias, h.cluster || (slurm && h.source !== 'local') ? await clusters.probe(service, h.alias, base, slurm) : base);
          } catch (e) {
            probes.set(h.alias, e as Error);
          }
        }),
      );
    }
    if (opts.json) {
      out(JSON.stringify(list.map((h) => ({ ...h, probe: probes.has(h.alias) ? (probes.get(h.alias) instanceof Error ? { error: (probes.get(h.alias) as Error).message } : probes.get(h.alias)) : undefined })), null, 2));
    } else {
      for (const h of list) {
        const where = h.source === 'local' ? 'this machine (agent as a child process)' : `${h.user ?? ''}@${h.hostname ?? '?'}:${h.port ?? 22}${h.proxyJump.length ? ` via ${h.proxyJump.join(' -> ')}` : ''}`;
        out(`${h.alias.padEnd(20)} ${h.source.padEnd(10)} ${where}${h.cluster ? ` · Slurm cluster${h.cluster.partition ? ` (partition ${h.cluster.partition})` : ''}` : ''}`);
        const p = probes.get(h.alias);
        if (p instanceof Error) out(`  probe failed: ${p.message}`);
        else if (p) for (const l of describeProbe(p)) out(l);
      }
    }
    if ([...probes.values()].some((p) => p instanceof Error)) process.exitCode = 1;
  });
}
