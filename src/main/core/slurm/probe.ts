/**
 * Probe of a Slurm login node in one round trip: Slurm's version (`sinfo --version`), its
 * partitions with their node counts, time limits and generic resources (`sinfo`, GPU types read
 * from gres such as `gpu:h100:8(S:0-1)`), the user's default account (`sacctmgr`, where
 * accounting is kept) and whether the shared folder is writable (a file made and removed there).
 */
import type { SlurmProbe } from '../../../shared/api';
import { CodedError } from '../../../shared/result';
import { homePath, shellCommand } from '../shell-quote';
import type { HostExec } from '../ssh/host-exec';

const MARK = '@@kvscope:';

/** `gpu:h100:8(S:0-1)` → h100; `gpu:4` → none; several, comma separated. */
export function gpuTypesOf(gres: string): string[] {
  const out: string[] = [];
  for (const g of gres.split(/,(?![^(]*\))/)) {
    const m = /^gpu:([A-Za-z][A-Za-z0-9_.+-]*):\d+/.exec(g.trim());
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Parses `sinfo -h -o '%P|%a|%D|%l|%G'` (one line per partition and node group). */
export function parsePartitions(text: string): SlurmProbe['partitions'] {
  const byName = new Map<string, SlurmProbe['partitions'][number]>();
  for (const line of text.split('\n')) {
    const [rawName, available, nodes, limit, gres] = line.split('|').map((x) => x.trim());
    if (!rawName || available === undefined) continue;
    const isDefault = rawName.endsWith('*');
    const name = rawName.replace(/\*$/, '');
    const p = byName.get(name) ?? { name, default: isDefault, available, nodes: 0, timeLimit: limit ?? '', gpuTypes: [], gres: [] };
    p.nodes += Number(nodes) || 0;
    if (gres && gres !== '(null)') {
      for (const g of gres.split(/,(?![^(]*\))/)) if (!p.gres.includes(g)) p.gres.push(g);
      for (const t of gpuTypesOf(gres)) if (!p.gpuTypes.includes(t)) p.gpuTypes.push(t);
    }
    byName.set(name, p);
  }
  return [...byName.values()];
}

/** `root`: the shared folder as configured (absolute or `~/…`). */
export async function probeSlurm(exec: HostExec, root: string): Promise<SlurmProbe> {
  const dir = homePath(root.replace(/^~\//, ''));
  const script = [
    `echo ${MARK}version; ${shellCommand(['sinfo', '--version'])} 2>&1`,
    `echo ${MARK}partitions; ${shellCommand(['sinfo', '-h', '-o', '%P|%a|%D|%l|%G'])} 2>&1`,
    `echo ${MARK}account; ${shellCommand(['sacctmgr', '-n', '-P', 'show', 'user'])} "$(id -un)" format=DefaultAccount 2>&1`,
    `echo ${MARK}shared; d=${dir}; echo "$d"; t="$d/.kvscope-write-test-$$"; if mkdir -p "$d" 2>&1 && : > "$t" 2>&1 && rm -f "$t"; then echo writable; fi`,
  ].join('\n');
  const r = await exec.exec('sh -s', script + '\n');
  if (r.code === null) throw new CodedError('ssh_error', `probe of the Slurm cluster ${exec.label} was cut off`);
  const sections = new Map<string, string[]>();
  let cur = '';
  for (const line of r.stdout.toString().split('\n')) {
    if (line.startsWith(MARK)) sections.set((cur = line.slice(MARK.length).trim()), []);
    else if (cur) sections.get(cur)!.push(line);
  }
  const notes: string[] = [];
  const versionText = (sections.get('version') ?? []).join('\n').trim();
  const version = /^slurm(-wlm)?\s+\S+/i.test(versionText) ? versionText.split('\n')[0]! : null;
  if (!version) notes.push(`sinfo did not answer on ${exec.label}: ${versionText.slice(0, 200) || 'no output'} (is it a Slurm login node, with Slurm on the PATH of a non-interactive shell?)`);
  const partText = (sections.get('partitions') ?? []).join('\n');
  const partitions = version ? parsePartitions(partText) : [];
  if (version && partitions.length === 0) notes.push(`sinfo listed no partition: ${partText.trim().slice(0, 200)}`);
  const account = (sections.get('account') ?? []).map((l) => l.trim()).filter(Boolean);
  const defaultAccount = account.length === 1 && /^[A-Za-z0-9_.+-]+$/.test(account[0]!) ? account[0]! : null;
  if (!defaultAccount) notes.push(`no default account from sacctmgr (${account.join(' ').slice(0, 160) || 'no answer'}): accounting may not be kept here`);
  const shared = (sections.get('shared') ?? []).map((l) => l.trimEnd()).filter(Boolean);
  const writable = shared.includes('writable');
  const sharedDir = { path: shared[0] ?? root, writable, error: writable ? null : shared.slice(1).join(' ').slice(0, 300) || 'not writable' };
  return { version, partitions, defaultAccount, sharedDir, notes };
}
