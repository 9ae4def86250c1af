/**
 * Hosts: Local and every host from ~/.ssh/config or added in the app, with what a probe found
 * (GPUs, memory, PCIe generation × width or NVLink-C2C, driver, CUDA, Python, torch, engines).
 * Host-key and passphrase questions come as pushes and are answered in PromptDialog.
 */
import { useEffect, useState } from 'react';
import type { HostEntry, HostInput, HostProbe } from '../../../shared/api';
import { formatBytes } from '../../../shared/format';
import { useApi } from '../../bridge/api-context';
import { setProbe, useProbes } from '../../host-probes';
import { ClusterSettings, SlurmProbeResult } from './ClusterSettings';

export const LOCAL_HOST: HostEntry = { alias: 'local', source: 'local', hostname: null, user: null, port: null, proxyJump: [], identityFiles: [], python: 'python3', warnings: [] };

/** The host list with Local always first, whatever the core answered. */
export function withLocal(hosts: HostEntry[]): HostEntry[] {
  return hosts.some((h) => h.source === 'local' || h.alias === 'local') ? hosts : [LOCAL_HOST, ...hosts];
}

export function useHosts(): { hosts: HostEntry[]; error: string | null; reload: () => void } {
  const api = useApi();
  const [hosts, setHosts] = useState<HostEntry[]>([LOCAL_HOST]);
  const [error, setError] = useState<string | null>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    void api.listHosts().then((r) => {
      if (r.ok) {
        setHosts(withLocal(r.value));
        setError(null);
      } else setError(r.error.message);
    });
  }, [api, n]);
  return { hosts, error, reload: () => setN((x) => x + 1) };
}

export function gpuLink(g: HostProbe['gpus'][number]): string {
  if (g.c2c) return 'NVLink-C2C';
  if (g.pcie_gen && g.pcie_width) return `PCIe Gen${g.pcie_gen} ×${g.pcie_width}`;
  return 'link unknown';
}

function ProbeResult({ p }: { p: HostProbe }) {
  return (
    <div className="probe" data-testid="probe">
      {p.gpus.length === 0 ? (
        <p>No NVIDIA GPU found{p.notes.length ? ` (${p.notes.join('; ')})` : ''}. CPU runs only.</p>
      ) : (
        <ul>
          {p.gpus.map((g) => (
            <li key={g.index}>
              GPU {g.index}: <strong>{g.name}</strong> · {formatBytes(g.memory_total_bytes)} ({formatBytes(g.memory_free_bytes)} free) · {gpuLink(g)}
            </li>
          ))}
        </ul>
      )}
      <p className="muted">
        {[p.os, p.driver_version && `driver ${p.driver_version}`, p.cuda_version && `CUDA ${p.cuda_version}`, p.python && `Python ${p.python.version}`, p.torch && `torch ${p.torch.version}${p.torch.cuda_available ? '' : ' (no CUDA)'}`, p.ram_total_bytes && `RAM ${formatBytes(p.ram_total_bytes)}`, p.disk_free_bytes && `disk free ${formatBytes(p.disk_free_bytes)}`]
          .filter(Boolean)
          .join(' · ')}
      </p>
      <p>
        Engines:{' '}
        {p.engines.map((e) => (
          <span key={e.name} className={e.available ? 'engine ok' : 'engine missing'} title={e.reason ?? ''}>
            {e.name}
            {e.version ? ` ${e.version}` : ''}
            {e.available ? '' : ' (not available)'}
          </span>
        ))}
      </p>
      {p.notes.length > 0 && <p className="muted">{p.notes.join(' · ')}</p>}
    </div>
  );
}

/** A host added in the app (kept in the data folder), for machines not in ~/.ssh/config. */
function AddHostForm({ onSaved }: { onSaved: () => void }) {
  const api = useApi();
  const [f, setF] = useState({ alias: '', hostname: '', user: '', port: '', identityFile: '', proxyJump: '', python: '' });
  const [error, setError] = useState<{ field: string | null; message: string } | null>(null);
  const set = (k: keyof typeof f) => (e: React.ChangeEvent<HTMLInputElement>) => setF({ ...f, [k]: e.target.value });
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const input: HostInput = { alias: f.alias.trim(), hostname: f.hostname.trim() };
    if (f.user.trim()) input.user = f.user.trim();
    if (f.port.trim()) input.port = Number(f.port);
    if (f.identityFile.trim()) input.identityFile = f.identityFile.trim();
    if (f.proxyJump.trim()) input.proxyJump = f.proxyJump.trim();
    if (f.python.trim()) input.python = f.python.trim();
    const r = await api.saveHost(input);
    if (r.ok) {
      setError(null);
      setF({ alias: '', hostname: '', user: '', port: '', identityFile: '', proxyJump: '', python: '' });
      onSaved();
    } else setError({ field: typeof r.error.detail?.field === 'string' ? r.error.detail.field : null, message: r.error.message });
  };
  const field = (k: keyof typeof f, label: string, placeholder = '') => (
    <label className={`field${error?.field === k ? ' invalid' : ''}`}>
      {label}
      <input value={f[k]} onChange={set(k)} placeholder={placeholder} aria-invalid={error?.field === k} data-field={k} />
    </label>
  );
  return (
    <form className="add-host" onSubmit={(e) => void submit(e)} aria-label="Add a host">
      <h2>Add a host</h2>
      <div className="add-host-fields">
        {field('alias', 'Name', 'gpu-box')}
        {field('hostname', 'Host name', 'gpu1.example.org')}
        {field('user', 'User', 'optional')}
        {field('port', 'Port', '22')}
        {field('identityFile', 'Key file', '~/.ssh/id_ed25519')}
        {field('proxyJump', 'ProxyJump', 'bastion,user@jump:22')}
        {field('python', 'Python', 'python3')}
        <button type="submit" className="primary" data-action="add-host">
          Add host
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error.message}
        </p>
      )}
    </form>
  );
}

export function HostsView() {
  const api = useApi();
  const { hosts, error, reload } = useHosts();
  const probes = useProbes();
  const [busy, setBusy] = useState<Record<string, boolean>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const probe = async (alias: string) => {
    setBusy((b) => ({ ...b, [alias]: true }));
    setErrors((e) => ({ ...e, [alias]: '' }));
    const r = await api.probeHost(alias);
    setBusy((b) => ({ ...b, [alias]: false }));
    if (r.ok) setProbe(alias, r.value);
    else setErrors((e) => ({ ...e, [alias]: `${r.error.code}: ${r.error.message}` }));
  };
  return (
    <section className="hosts-view">
      <header className="view-header">
        <h1>Hosts</h1>
        <a className="button" href="#/new">
          New run…
        </a>
      </header>
      {error && (
        <p className="warn" role="alert">
          Could not read the host list ({error}); Local is still available.
        </p>
      )}
      <table className="hosts-table">
        <thead>
          <tr>
            <th>Host</th>
            <th>From</th>
            <th>Connects to</th>
            <th>Python</th>
            <th>Probe</th>
          </tr>
        </thead>
        <tbody>
          {hosts.map((h) => (
            <tr key={h.alias} data-host={h.alias}>
              <td>
                <strong>{h.alias === 'local' ? 'Local' : h.alias}</strong>
                {h.warnings.map((w) => (
                  <div key={w} className="warn">
                    {w}
                  </div>
                ))}
              </td>
              <td>{h.source === 'ssh-config' ? '~/.ssh/config' : h.source === 'app' ? 'added here' : 'this machine'}</td>
              <td>
                {h.source === 'local' ? 'child process, no SSH' : `${h.user ? `${h.user}@` : ''}${h.hostname ?? h.alias}${h.port && h.port !== 22 ? `:${h.port}` : ''}`}
                {h.proxyJump.length > 0 && <div className="muted">via {h.proxyJump.join(' → ')}</div>}
              </td>
              <td>{h.python}</td>
              <td>
                <button type="button" onClick={() => void probe(h.alias)} disabled={busy[h.alias]} data-action="probe" title="Connect and probe GPUs, drivers and engines">
                  {busy[h.alias] ? 'Probing…' : probes[h.alias] ? 'Probe again' : 'Connect & probe'}
                </button>{' '}
                <a href={`#/new?host=${encodeURIComponent(h.alias)}`}>New run here</a>
                {h.source === 'app' && (
                  <>
                    {' '}
                    <button type="button" data-action="remove-host" title="Remove this host from the app's list" onClick={() => void api.removeHost(h.alias).then(reload)}>
                      Remove
                    </button>
                  </>
                )}
                {errors[h.alias] && (
                  <p className="error" role="alert">
                    {errors[h.alias]}
                  </p>
                )}
                {probes[h.alias] && <ProbeResult p={probes[h.alias]!} />}
                {probes[h.alias]?.slurm && <SlurmProbeResult s={probes[h.alias]!.slurm!} />}
                <ClusterSettings host={h} onSaved={reload} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <AddHostForm onSaved={reload} />
    </section>
  );
}
