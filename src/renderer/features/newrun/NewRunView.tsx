/**
 * New run / sweep: the seed workload's options, validated as you type (each error names its
 * field), on one or several hosts; then deploy and run progress with ETA, and cancel.
 *
 * The form follows the probed host: Local is probed as the view opens (other hosts on a click), a
 * host that computes on the CPU starts from the tiny model and small pools instead of the seed's
 * 70B model and 55 GB host pool, a Python without torch is refused with the interpreters the probe
 * found that have it, and a pre-flight check says how many users the pools hold (refusing a GPU
 * pool smaller than one request) before anything is launched. What the user typed always wins,
 * then Settings values they changed, then the host's starting values, then Settings' and the seed's.
 */
import { useEffect, useMemo, useState } from 'react';
import { copyOverlapAuto, type PushMessage, type SweepRow } from '../../../shared/api';
import { choicesOf, fieldLabel, OFFLOAD_POLICIES, optionOf } from '../../../shared/workload-options';
import { formatNs } from '../../../shared/format';
import { useApi } from '../../bridge/api-context';
import { setProbe, useProbes } from '../../host-probes';
import { routeHref } from '../../router';
import { DEFAULT_FORM, MODELS, engineMissing, formPlans, validateRunForm, type FieldError, type RunForm } from '../../model/run-form';
import { cpuStartingForm, hostCompute } from '../../model/pool-plan';
import { foldProgress, progressText, type RunProgressState } from '../../model/run-progress-view';
import { useHosts } from '../hosts/HostsView';
import { runFormDefaults } from '../settings/run-form-defaults';

const ENGINES = choicesOf('engine') as readonly RunForm['engine'][];
/** The option table's label of a form field that is one agent option. */
const label = fieldLabel;

function Field({ label, name, form, set, errors, hint, type = 'text' }: { label: string; name: keyof RunForm; form: RunForm; set: (f: Partial<RunForm>) => void; errors: FieldError[]; hint?: string; type?: string }) {
  const e = errors.find((x) => x.field === name);
  const id = `f-${name}`;
  return (
    <div className={`field${e ? ' invalid' : ''}`}>
      <label htmlFor={id}>{label}</label>
      <input id={id} type={type} value={String(form[name])} onChange={(ev) => set({ [name]: ev.target.value } as Partial<RunForm>)} aria-invalid={!!e} aria-describedby={e ? `${id}-err` : undefined} />
      {hint && !e && <small className="muted">{hint}</small>}
      {e && (
        <small id={`${id}-err`} className="error" role="alert">
          {e.message}
        </small>
      )}
    </div>
  );
}

export function NewRunView({ host }: { host?: string }) {
  const api = useApi();
  const { hosts } = useHosts();
  const probes = useProbes();
  /** What the user typed or picked. */
  const [edits, setEdits] = useState<Partial<RunForm>>({ hosts: [host ?? 'local'] });
  /** Settings' New run defaults, and those of them the user changed from the built-in ones. */
  const [fromSettings, setFromSettings] = useState<{ all: Partial<RunForm>; changed: Partial<RunForm> }>({ all: {}, changed: {} });
  const [probing, setProbing] = useState<Record<string, string | null>>({});
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [started, setStarted] = useState<{ runIds: string[]; sweepId: string | null } | null>(null);
  const [progress, setProgress] = useState<Record<string, RunProgressState>>({});
  const [sweepRows, setSweepRows] = useState<SweepRow[]>([]);
  const set = (f: Partial<RunForm>) => setEdits((x) => ({ ...x, ...f }));
  // the form starts from Settings' New run defaults (read once, as the view opens).
  useEffect(() => {
    void api.getSettings().then((r) => {
      if (!r.ok) return;
      const all = runFormDefaults(r.value.settings);
      const builtIn = runFormDefaults(r.value.defaults);
      const changed = Object.fromEntries(Object.entries(all).filter(([k, v]) => builtIn[k as keyof RunForm] !== v)) as Partial<RunForm>;
      setFromSettings({ all, changed });
    });
  }, [api]);
  const chosen = edits.hosts ?? DEFAULT_FORM.hosts;
  const python = edits.python ?? DEFAULT_FORM.python;
  // A host that computes on the CPU (every chosen host probed, none with CUDA for this Python).
  const onCpu = chosen.length > 0 && chosen.every((h) => hostCompute(probes[h], python).device === 'cpu');
  const form: RunForm = useMemo(() => {
    const base = { ...DEFAULT_FORM, ...fromSettings.all, ...edits };
    const num = (v: string, d: number) => (/^\d+$/.test(v.trim()) ? Number(v) : d);
    const hostStart = onCpu ? cpuStartingForm(num(base.rounds, 10), num(base.new_tokens, 64), num(base.output_tokens, 64)) : {};
    return { ...DEFAULT_FORM, ...fromSettings.all, ...hostStart, ...fromSettings.changed, ...edits };
  }, [edits, fromSettings, onCpu]);

  // Local is probed as the view opens (no SSH, no prompts): the form needs to know what it computes on.
  const probe = (alias: string) => {
    setProbing((p) => ({ ...p, [alias]: 'probing…' }));
    void api.probeHost(alias).then((r) => {
      if (r.ok) setProbe(alias, r.value);
      setProbing((p) => ({ ...p, [alias]: r.ok ? null : `probe failed: ${r.error.message}` }));
    });
  };
  useEffect(() => {
    if (chosen.includes('local') && !probes.local && probing.local === undefined) probe('local');
  }, [chosen, probes.local]);
  const result = useMemo(() => validateRunForm(form, probes), [form, probes]);
  const errors = result.ok ? [] : result.errors;
  const plans = useMemo(() => formPlans(form, probes), [form, probes]);
  // Chosen hosts whose probed Python lacks torch, with the interpreters there that have it.
  const torchless = form.engine === 'torch' ? form.hosts.map((h) => ({ host: h, probe: probes[h] })).filter((x) => x.probe && !x.probe.slurm && engineMissing(form, x.host, x.probe)) : [];
  // Engines: only those every probed chosen host has; all while none is probed.
  const engines = ENGINES.filter((e) => form.hosts.every((h) => !probes[h] || probes[h]!.engines.some((x) => x.name === e && x.available)));

  useEffect(
    () =>
      api.onPush((m: PushMessage) => {
        if (m.kind === 'progress' || m.kind === 'run-status') setProgress((p) => foldProgress(p, m));
        else if (m.kind === 'sweep-status') {
          setSweepRows(m.rows);
          setStarted((s) => (s && s.sweepId === m.sweepId ? { ...s, runIds: m.rows.map((r) => r.runId).filter((x): x is string => !!x) } : s));
        }
      }),
    [api],
  );

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    if (!result.ok) return;
    setSubmitError(null);
    if (result.run) {
      const r = await api.startRun(result.run);
      if (r.ok) setStarted({ runIds: [r.value.runId], sweepId: null });
      else setSubmitError(`${r.error.code}: ${r.error.message}`);
    } else if (result.sweep) {
      const r = await api.startSweep(result.sweep);
      if (r.ok) setStarted({ runIds: [], sweepId: r.value.sweepId });
      else setSubmitError(`${r.error.code}: ${r.error.message}`);
    }
  };
  const cancel = (runId: string) => void api.cancelRun(runId).then((r) => !r.ok && setSubmitError(`cancel ${runId}: ${r.error.message}`));
  const shown = errors;
  const nRuns = result.ok ? result.users.length * form.hosts.length : null;

  return (
    <section className="newrun-view">
      <h1>New run</h1>
      <form onSubmit={(e) => void submit(e)} className="run-form" noValidate>
        <fieldset>
          <legend>Hosts</legend>
          {hosts.map((h) => (
            <label key={h.alias} className="check">
              <input type="checkbox" checked={form.hosts.includes(h.alias)} onChange={(e) => set({ hosts: e.target.checked ? [...form.hosts, h.alias] : form.hosts.filter((x) => x !== h.alias) })} />
              {h.alias === 'local' ? 'Local' : h.alias}
              <span className="muted" data-host-state={h.alias}>
                {' · '}
                {h.cluster ? 'Slurm cluster' : probes[h.alias] ? (probes[h.alias]!.gpus[0]?.name ?? 'no GPU (CPU runs)') : (probing[h.alias] ?? 'not probed')}
              </span>
              {!h.cluster && !probes[h.alias] && probing[h.alias] !== 'probing…' && (
                <button type="button" className="small" onClick={() => probe(h.alias)} data-action="probe" title="Connect and probe: GPUs, Python, torch; the form then follows the host">
                  Probe
                </button>
              )}
            </label>
          ))}
          {torchless.map(({ host: h, probe: p }) => (
            <div key={h} className="notice torch-pythons" role="status" data-testid="torch-pythons">
              {p!.python?.executable ?? 'python3'} on {h === 'local' ? 'Local' : h} does not import torch.
              {p!.torch_pythons?.length ? (
                <>
                  {' '}
                  Interpreters there that do:
                  {p!.torch_pythons.map((t) => (
                    <button key={t.executable} type="button" className="small" onClick={() => set({ python: t.executable })} data-action="use-python" data-python={t.executable} title={`Run with ${t.executable}`}>
                      Use {t.executable} (Python {t.version}, torch {t.torch}, {t.cuda_available ? 'CUDA' : 'CPU'})
                    </button>
                  ))}
                </>
              ) : (
                ' No interpreter with torch was found there: install PyTorch (Debian: apt-get install python3-torch), or give a venv’s python below.'
              )}
            </div>
          ))}
          {shown.find((x) => x.field === 'hosts') && <small className="error">{shown.find((x) => x.field === 'hosts')!.message}</small>}
        </fieldset>
        <fieldset>
          <legend>Workload</legend>
          <div className={`field${shown.some((x) => x.field === 'engine') ? ' invalid' : ''}`}>
            <label htmlFor="f-engine">{label('engine')}</label>
            <select id="f-engine" value={form.engine} onChange={(e) => set({ engine: e.target.value as RunForm['engine'] })}>
              {(engines.length ? engines : ENGINES).map((e) => (
                <option key={e} value={e}>
                  {e === 'torch' ? 'torch (built in)' : e}
                </option>
              ))}
            </select>
            {shown.find((x) => x.field === 'engine') ? <small className="error">{shown.find((x) => x.field === 'engine')!.message}</small> : <small className="muted">{form.hosts.some((h) => !probes[h]) ? 'probe the hosts to list only the engines they have' : 'engines the chosen hosts have'}</small>}
          </div>
          <div className="field">
            <label htmlFor="f-model">{label('model')}</label>
            <input id="f-model" list="models" value={form.model} onChange={(e) => set({ model: e.target.value })} />
            <datalist id="models">
              {MODELS.map((m) => (
                <option key={m} value={m} />
              ))}
            </datalist>
          </div>
          <Field label={label('users')} name="users" form={form} set={set} errors={shown} hint="4, 2-16, 2-16:2 or 2,4,8 (a sweep: one run per count)" />
          <Field label={label('rounds')} name="rounds" form={form} set={set} errors={shown} />
          <Field label={label('context_tokens')} name="context_tokens" form={form} set={set} errors={shown} />
          <Field label={label('new_tokens')} name="new_tokens" form={form} set={set} errors={shown} />
          <Field label={label('output_tokens')} name="output_tokens" form={form} set={set} errors={shown} />
        </fieldset>
        <fieldset>
          <legend>Pools and tracing</legend>
          <Field label={label('gpu_kv_bytes')} name="gpu_pool" form={form} set={set} errors={shown} hint="fraction of free GPU memory (0.9) or a size (20GB)" />
          <Field label={label('host_kv_bytes')} name="host_pool" form={form} set={set} errors={shown} hint={`${DEFAULT_FORM.host_pool} as in the seed; 0 = no host pool (recompute)`} />
          {/* The pre-flight check: what the pools hold, before anything is launched. */}
          <div className="pool-plan" data-testid="pool-plan" aria-live="polite">
            {plans.map(({ host: h, plan }) =>
              plan ? (
                <div key={h} data-plan-host={h}>
                  {plans.length > 1 && <strong>{h}: </strong>}
                  <p data-plan="gpu">
                    <strong>GPU pool</strong> {plan.gpu}
                  </p>
                  <p data-plan="host">
                    <strong>Host pool</strong> {plan.host}
                  </p>
                </div>
              ) : null,
            )}
          </div>
          <div className="field">
            <label htmlFor="f-offload">{label('offload_policy')}</label>
            <select id="f-offload" value={form.offload_policy} disabled={form.engine !== 'torch'} onChange={(e) => set({ offload_policy: e.target.value as RunForm['offload_policy'] })}>
              {OFFLOAD_POLICIES.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
            <small className="muted">{form.engine !== 'torch' ? 'the built-in engine only: real engines offload their own way' : optionOf('offload_policy').choice_help?.[form.offload_policy]}</small>
          </div>
          <div className="field">
            <label htmlFor="f-overlap">{label('copy_overlap')}</label>
            <select id="f-overlap" value={form.copy_overlap} disabled={form.engine !== 'torch'} onChange={(e) => set({ copy_overlap: e.target.value as RunForm['copy_overlap'] })}>
              <option value="auto">auto ({copyOverlapAuto(form.offload_policy) ? 'on' : 'off'} for {form.offload_policy})</option>
              <option value="on">on</option>
              <option value="off">off</option>
            </select>
            <small className="muted">{form.engine !== 'torch' ? 'the built-in engine only' : 'onboard beside the offload that makes room, on a second copy stream; auto turns it on for lazy offload'}</small>
          </div>
          <label className="check">
            <input type="checkbox" checked={form.trace} onChange={(e) => set({ trace: e.target.checked })} /> {label('trace')} (CUPTI)
          </label>
          <Field label={label('sample_ms')} name="sample_ms" form={form} set={set} errors={shown} />
          <Field label="Name (optional)" name="name" form={form} set={set} errors={shown} />
          <Field label="Python on the host (optional)" name="python" form={form} set={set} errors={shown} hint="default: the host's setting (python3); a venv's python for engines kept there" />
        </fieldset>
        <div className="form-actions">
          <button type="submit" className="primary" disabled={!result.ok} title={!result.ok ? errors.map((x) => x.message).join('\n') : ''}>
            {nRuns && nRuns > 1 ? `Start sweep (${nRuns} runs)` : 'Start run'}
          </button>
          {submitError && (
            <p className="error" role="alert">
              Could not start: {submitError}
            </p>
          )}
        </div>
      </form>
      {started && (
        <section className="run-progress" aria-live="polite">
          <h2>{started.sweepId ? `Sweep ${started.sweepId}` : 'Run'}</h2>
          {started.sweepId && sweepRows.length > 0 && (
            <table>
              <thead>
                <tr>
                  <th>Host</th>
                  <th>Users</th>
                  <th>Status</th>
                  <th>TTFT mean</th>
                  <th>E2E</th>
                </tr>
              </thead>
              <tbody>
                {sweepRows.map((r) => (
                  <tr key={`${r.host}/${r.users}`}>
                    <td>{r.host}</td>
                    <td>{r.users}</td>
                    <td>{r.error ? `${r.status}: ${r.error}` : r.status}</td>
                    <td>{formatNs(r.ttft_ns_mean)}</td>
                    <td>{formatNs(r.e2e_ns)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {started.sweepId && sweepRows.length > 0 && sweepRows.every((r) => r.status !== 'pending' && r.status !== 'running') && (
            <p>
              <a className="button" data-action="compare-sweep" href={routeHref({ view: 'compare', runIds: sweepRows.map((r) => r.runId).filter((x): x is string => !!x) })}>
                Compare this sweep
              </a>
            </p>
          )}
          {started.runIds.map((id) => {
            const p = progress[id];
            return (
              <div key={id} className="progress-row">
                <a href={routeHref({ view: 'live', runId: id })}>{id}</a>{' '}
                <span data-testid="progress-text" data-queue={p?.queue}>{progressText(p)}</span>
                {p?.fraction !== null && p?.fraction !== undefined && <progress max={1} value={p.fraction} />}
                {p?.etaS !== null && p?.etaS !== undefined && (!p.status || p.status === 'running') && <span className="muted" data-testid="progress-eta"> ETA {formatNs(p.etaS * 1e9)}</span>}
                {(!p?.status || p.status === 'running') && (
                  <button type="button" onClick={() => cancel(id)} title="Stop the run's whole process group on the host">
                    Cancel
                  </button>
                )}
              </div>
            );
          })}
        </section>
      )}
    </section>
  );
}
