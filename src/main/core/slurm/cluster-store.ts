/**
 * Which hosts are Slurm login nodes, and their submission options: `clusters.json` in the data
 * folder (shared by the app and the CLI, as hosts.json is), keyed by host alias. Any alias can be
 * a cluster: one from ~/.ssh/config or one added in the app. Written atomically; a file that does
 * not parse reads as no clusters and is never overwritten by a read.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterOptions, HostEntry, HostProbe } from '../../../shared/api';
import { CodedError } from '../../../shared/result';
import { LOCAL_HOST, type HostService } from '../hosts';
import { writeFileAtomic } from '../settings';
import { checkClusterOptions, mergeClusterOptions } from './options';
import { probeSlurm } from './probe';

export class ClusterStore {
  constructor(readonly dataDir: string) {}

  get file(): string {
    return join(this.dataDir, 'clusters.json');
  }

  async all(): Promise<Record<string, ClusterOptions>> {
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(this.file, 'utf8'));
    } catch {
      return {};
    }
    const out: Record<string, ClusterOptions> = {};
    if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
      for (const [alias, o] of Object.entries(raw as Record<string, unknown>)) {
        try {
          out[alias] = checkClusterOptions(o);
        } catch {
          /* an entry edited by hand into something invalid is skipped, not used half-checked */
        }
      }
    }
    return out;
  }

  async get(alias: string): Promise<ClusterOptions | null> {
    return (await this.all())[alias] ?? null;
  }

  /** Saves (options) or forgets (null) a host's cluster options; returns what is stored. */
  async save(alias: string, options: ClusterOptions | null): Promise<ClusterOptions | null> {
    if (typeof alias !== 'string' || !alias || alias.length > 256) throw new CodedError('invalid_argument', 'a cluster needs a host alias', { field: 'alias' });
    if (alias === LOCAL_HOST) throw new CodedError('invalid_argument', 'Local cannot be a Slurm cluster: add the login node as a host', { field: 'alias' });
    const all = await this.all();
    const clean = options === null ? null : checkClusterOptions(options);
    if (clean === null) delete all[alias];
    else all[alias] = clean;
    await writeFileAtomic(this.file, JSON.stringify(all, null, 2) + '\n', { mode: 0o600 });
    return clean;
  }

  /** Makes a listed host a cluster (options) or a plain host again (null); returns its entry. */
  async saveFor(hosts: HostService, alias: string, options: ClusterOptions | null): Promise<HostEntry> {
    const listed = (await hosts.listHosts()).find((h) => h.alias === alias && h.source !== 'local');
    if (!listed) throw new CodedError('not_found', `no host named ${JSON.stringify(alias)} (add it in Hosts or ~/.ssh/config first)`, { field: 'alias' });
    return { ...listed, cluster: await this.save(alias, options) };
  }

  /**
   * A cluster host's probe: the login node's own (`base`) plus the scheduler's side (Slurm
   * version, partitions and GPU types, default account, the shared folder writable or not).
   */
  async probe(hosts: HostService, alias: string, base: HostProbe, override?: ClusterOptions): Promise<HostProbe> {
    const o = mergeClusterOptions(await this.get(alias), override);
    const exec = await hosts.connect(alias);
    try {
      return { ...base, slurm: await probeSlurm(exec, o.sharedDir ?? hosts.opts.remoteRoot ?? '~/.cache/kvscope') };
    } finally {
      exec.close();
    }
  }

  /** The host list with each host's cluster options (null for a plain host). */
  async annotate(hosts: HostEntry[]): Promise<HostEntry[]> {
    const all = await this.all();
    return hosts.map((h) => ({ ...h, cluster: all[h.alias] ?? null }));
  }
}
