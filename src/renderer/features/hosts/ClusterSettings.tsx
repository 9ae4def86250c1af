/**
 * A host as a Slurm cluster: its submission options (partition, account, GPUs per job, card
 * types, time limit, extra #SBATCH lines, the set-up line, the shared folder, a sweep's array
 * concurrency), saved through saveCluster; and what a probe of the login node found on the
 * scheduler's side. The core checks every value (an error names its field) and quotes them.
 */
import { useState } from 'react';
import type { ClusterOptions, HostEntry, SlurmProbe } from '../../../shared/api';
import { useApi } from '../../bridge/api-context';

type Draft = Record<'partition' | 'account' | 'gpus' | 'gpuTypes' | 'timeLimit' | 'sbatch' | 'setup' | 'sharedDir' | 'arrayLimit' | 'pollSeconds', string>;

/** The form's fields: key, label, placeholder; `sbatch` is one option a line. */
const FIELDS: Array<[keyof Draft, string, string]> = [
  ['partition', 'Partition', 'gpu'],
  ['account', 'Account', 'optional'],
  ['gpus', 'GPUs per job', '1'],
  ['gpuTypes', 'Card types', 'h100, a100'],
  ['timeLimit', 'Time limit', '01:00:00'],
  ['sharedDir', 'Shared folder', '~/.cache/kvscope'],
  ['arrayLimit', 'Sweep: at once', 'all'],
  ['pollSeconds', 'Queue poll (s)', '5'],
  ['setup', 'Set-up line', 'module load cuda && source ~/venv/bin/activate'],
  ['sbatch', 'Extra #SBATCH lines', '--qos=high'],
];

function toDraft(o: ClusterOptions | null | undefined): Draft {
  return {
    partition: o?.partition ?? '',
    account: o?.account ?? '',
    gpus: o?.gpus ? String(o.gpus) : '',
    gpuTypes: (o?.gpuTypes ?? []).join(', '),
    timeLimit: o?.timeLimit ?? '',
    sbatch: (o?.sbatch ?? []).join('\n'),
    setup: o?.setup ?? '',
    sharedDir: o?.sharedDir ?? '',
    arrayLimit: o?.arrayLimit ? String(o.arrayLimit) : '',
    pollSeconds: o?.pollSeconds ? String(o.pollSeconds) : '',
  };
}

/** The draft as options: empty fields left out, numbers as numbers (the core checks the rest). */
export function clusterOptionsFrom(d: Draft): ClusterOptions {
  const o: ClusterOptions = {};
  const text = (k: 'partition' | 'account' | 'timeLimit' | 'setup' | 'sharedDir') => {
    if (d[k].trim()) o[k] = d[k].trim();
  };
  text('partition');
  text('account');
  text('timeLimit');
  text('setup');
  text('sharedDir');
  if (d.gpus.trim()) o.gpus = Number(d.gpus);
  if (d.arrayLimit.trim()) o.arrayLimit = Number(d.arrayLimit);
  if (d.pollSeconds.trim()) o.pollSeconds = Number(d.pollSeconds);
  const types = d.gpuTypes.split(',').map((s) => s.trim()).filter(Boolean);
  if (types.length) o.gpuTypes = types;
  const lines = d.sbatch.split('\n').map((s) => s.trim()).filter(Boolean);
  if (lines.length) o.sbatch = lines;
  return o;
}

/** "Slurm cluster: partition gpu, 1 GPU per job" — the options in one line. */
export function clusterSummary(o: ClusterOptions): string {
  const parts = [o.partition && `partition ${o.partition}`, o.account && `account ${o.account}`, o.gpus && `${o.gpus} GPU${o.gpus > 1 ? 's' : ''} per job`, o.gpuTypes?.length && `cards ${o.gpuTypes.join(', ')}`, o.timeLimit && `time ${o.timeLimit}`, o.arrayLimit && `${o.arrayLimit} at once`];
  return `Slurm cluster${parts.some(Boolean) ? `: ${parts.filter(Boolean).join(', ')}` : ''}`;
}

export function ClusterSettings({ host, onSaved }: { host: HostEntry; onSaved: () => void }) {
  const api = useApi();
  const [open, setOpen] = useState(false);
  const [d, setD] = useState<Draft>(toDraft(host.cluster));
  const [error, setError] = useState<{ field: string | null; message: string } | null>(null);
  if (host.source === 'local') return null;
  const save = async (options: ClusterOptions | null) => {
    const r = await api.saveCluster(host.alias, options);
    if (r.ok) {
      setError(null);
      setOpen(false);
      onSaved();
    } else setError({ field: typeof r.error.detail?.field === 'string' ? r.error.detail.field.replace(/^slurm\./, '') : null, message: r.error.message });
  };
  const field = ([k, label, placeholder]: (typeof FIELDS)[number]) => (
    <label key={k} className={`field${error?.field === k ? ' invalid' : ''}`}>
      {label}
      {k === 'sbatch' ? (
        <textarea value={d[k]} rows={2} placeholder={placeholder} data-field={k} onChange={(e) => setD({ ...d, [k]: e.target.value })} />
      ) : (
        <input value={d[k]} placeholder={placeholder} data-field={k} aria-invalid={error?.field === k} onChange={(e) => setD({ ...d, [k]: e.target.value })} />
      )}
    </label>
  );
  return (
    <div className="cluster-settings" data-cluster={host.cluster ? 'yes' : 'no'}>
      {host.cluster && <div className="muted">{clusterSummary(host.cluster)}</div>}
      <button type="button" data-action="cluster" onClick={() => setOpen(!open)} title="Runs on this host become Slurm jobs (sbatch on the login node)">
        {host.cluster ? 'Slurm options…' : 'Slurm cluster…'}
      </button>
      {open && (
        <form
          className="add-host-fields"
          aria-label={`Slurm options of ${host.alias}`}
          onSubmit={(e) => {
            e.preventDefault();
            void save(clusterOptionsFrom(d));
          }}
        >
          {FIELDS.map(field)}
          <button type="submit" className="primary" data-action="save-cluster">
            Save
          </button>
          {host.cluster && (
            <button type="button" data-action="forget-cluster" onClick={() => void save(null)}>
              Plain host
            </button>
          )}
          {error && (
            <p className="error" role="alert">
              {error.message}
            </p>
          )}
        </form>
      )}
    </div>
  );
}

export function SlurmProbeResult({ s }: { s: SlurmProbe }) {
  return (
    <div className="probe" data-testid="slurm-probe">
      <p>
        <strong>{s.version ?? 'Slurm not found'}</strong>
        {s.defaultAccount && ` · default account ${s.defaultAccount}`}
      </p>
      <ul>
        {s.partitions.map((p) => (
          <li key={p.name}>
            {p.name}
            {p.default ? ' (default)' : ''}: {p.available}, {p.nodes} node{p.nodes === 1 ? '' : 's'}, limit {p.timeLimit}, {p.gpuTypes.length ? `cards ${p.gpuTypes.join(', ')}` : 'no GPU types'}
          </li>
        ))}
      </ul>
      <p className={s.sharedDir.writable ? 'muted' : 'warn'}>
        Shared folder {s.sharedDir.path}: {s.sharedDir.writable ? 'writable' : `not writable (${s.sharedDir.error ?? '?'})`}
      </p>
      {s.notes.length > 0 && <p className="muted">{s.notes.join(' · ')}</p>}
    </div>
  );
}
