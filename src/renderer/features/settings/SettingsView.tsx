/**
 * Settings (#/settings): the New run defaults (the seed's workload), the runs folder, the Python
 * per host, the nvidia-smi sample period, the theme, and remembered secrets. The core validates
 * (Ajv, the same schema that guards settings.json); an error comes back naming its field, which is
 * marked here. Nothing is saved until Save.
 */
import { useEffect, useRef, useState } from 'react';
import type { Settings, SettingsSnapshot, Theme, WorkloadDefaults } from '../../../shared/api';
import { bytesText, fieldLabel, numberDefault, optionOf, SETTINGS_WORKLOAD_OPTIONS } from '../../../shared/workload-options';
import { useApi } from '../../bridge/api-context';
import { applyTheme, SETTINGS_CHANGED_EVENT } from './theme';

type FieldErrors = Record<string, string>;

/** Settings' New run workload, labelled as its options are (the agent's option table); the host pool in GB. */
const WORKLOAD_FIELDS: Array<{ key: keyof WorkloadDefaults; label: string; step?: string; scale?: number; hint?: string }> = (
  Object.entries(SETTINGS_WORKLOAD_OPTIONS) as Array<[keyof WorkloadDefaults, string]>
).map(([key, name]) => {
  const o = optionOf(name);
  if (key === 'usersMin' || key === 'usersMax') return { key, label: `${o.label} ${key === 'usersMin' ? 'from' : 'to'}` };
  if (o.type === 'bytes') return { key, label: `${o.label} (GB)`, step: 'any', scale: 1e9, hint: `1 GB = 10⁹ bytes, as the seed’s ${bytesText(numberDefault(name))}` };
  return { key, label: fieldLabel(name), ...(o.type === 'number' ? { step: '0.01' } : {}) };
});

/** Errors from the core's Ajv check, keyed by field ("workload.rounds"). */
function errorsFrom(detail: Record<string, unknown> | undefined, message: string): FieldErrors {
  const out: FieldErrors = {};
  const list = Array.isArray(detail?.errors) ? (detail.errors as Array<{ field: string; message: string }>) : [];
  for (const e of list) out[e.field] ??= e.message;
  const field = typeof detail?.field === 'string' ? detail.field : '(settings)';
  out[field] ??= message;
  return out;
}

export function SettingsView() {
  const api = useApi();
  const [snap, setSnap] = useState<SettingsSnapshot | null>(null);
  const [draft, setDraft] = useState<Settings | null>(null);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [status, setStatus] = useState<string | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [desktop, setDesktop] = useState(false);
  // Leaving Settings drops an unsaved theme preview: it stayed on the window while the form,
  // opened again, showed the saved choice ("Follow the OS" checked on a Dark window).
  const savedTheme = useRef<Theme | null>(null);
  savedTheme.current = snap?.settings.theme ?? null;
  useEffect(
    () => () => {
      if (savedTheme.current) applyTheme(savedTheme.current);
    },
    [],
  );

  useEffect(() => {
    void api.getSettings().then((r) => {
      if (!r.ok) return setLoadError(r.error.message);
      setSnap(r.value);
      setDraft(r.value.settings);
    });
    void api.getAppInfo().then((r) => r.ok && setDesktop(r.value.shell === 'electron'));
  }, [api]);

  if (loadError) return <p role="alert" className="error">Could not read the settings: {loadError}</p>;
  if (!snap || !draft) return <p className="loading">Loading settings…</p>;

  const setWorkload = (key: keyof WorkloadDefaults, raw: string, scale = 1) => {
    const n = raw.trim() === '' ? Number.NaN : Number(raw) * scale;
    setDraft({ ...draft, workload: { ...draft.workload, [key]: n } });
  };
  const err = (field: string) => errors[field];
  const pythonRows = Object.entries(draft.pythonByHost);

  const save = async (next: Settings) => {
    setStatus('Saving…');
    // NaN (an empty number box) is sent as null so the core names the field instead of JSON dropping it.
    const wire = JSON.parse(JSON.stringify(next, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v))) as Settings;
    const r = await api.saveSettings(wire);
    if (!r.ok) {
      setErrors(errorsFrom(r.error.detail, r.error.message));
      setStatus(`Not saved: ${r.error.message}`);
      return;
    }
    setErrors({});
    setSnap(r.value);
    setDraft(r.value.settings);
    applyTheme(r.value.settings.theme);
    window.dispatchEvent(new CustomEvent(SETTINGS_CHANGED_EVENT, { detail: r.value.settings }));
    setStatus(r.value.file ? `Saved to ${r.value.file}` : 'Saved for this session');
  };

  const browseRunsDir = async () => {
    const r = await api.openFileDialog({ purpose: 'folder', title: 'Runs folder' });
    if (r.ok && r.value) setDraft({ ...draft, runsDir: r.value });
    else if (!r.ok) setStatus(r.error.message);
  };

  const forget = async () => {
    const r = await api.forgetSecrets();
    setStatus(r.ok ? `Forgot ${r.value.forgotten} saved secret(s).` : `Could not forget: ${r.error.message}`);
    const again = await api.getSettings();
    if (again.ok) setSnap(again.value);
  };

  return (
    <section className="settings" aria-labelledby="settings-title">
      <h1 id="settings-title">Settings</h1>
      {snap.recovered && (
        <p role="alert" className="notice" data-testid="settings-recovered">
          {snap.recovered.reason}
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void save(draft);
        }}
      >
        <fieldset>
          <legend>New run defaults</legend>
          <p className="hint">The seed benchmark’s workload: one run per user count from “users from” to “users to”.</p>
          <div className="grid">
            {WORKLOAD_FIELDS.map((f) => {
              const field = `workload.${f.key}`;
              const value = draft.workload[f.key];
              return (
                <label key={f.key}>
                  {f.label}
                  <input
                    type="number"
                    name={field}
                    step={f.step ?? '1'}
                    value={Number.isFinite(value) ? String(f.scale ? value / f.scale : value) : ''}
                    aria-invalid={err(field) ? true : undefined}
                    title={f.hint}
                    onChange={(e) => setWorkload(f.key, e.target.value, f.scale)}
                  />
                  {err(field) && <span className="field-error">{err(field)}</span>}
                </label>
              );
            })}
          </div>
        </fieldset>

        <fieldset>
          <legend>Runs</legend>
          <label>
            Runs folder (empty: {snap.file ? 'the runs folder beside settings.json' : 'the default'}; takes effect at the next start)
            <span className="row">
              <input
                type="text"
                name="runsDir"
                value={draft.runsDir ?? ''}
                placeholder="default"
                aria-invalid={err('runsDir') ? true : undefined}
                onChange={(e) => setDraft({ ...draft, runsDir: e.target.value.trim() === '' ? null : e.target.value })}
              />
              <button type="button" onClick={() => void browseRunsDir()} disabled={!desktop} title={desktop ? 'Choose a folder' : 'Type the path: a browser cannot browse this machine'}>
                Browse…
              </button>
            </span>
            {err('runsDir') && <span className="field-error">{err('runsDir')}</span>}
          </label>
          <label>
            {fieldLabel('sample_ms')}
            <input
              type="number"
              name="sampleMs"
              step="1"
              value={Number.isFinite(draft.sampleMs) ? String(draft.sampleMs) : ''}
              aria-invalid={err('sampleMs') ? true : undefined}
              onChange={(e) => setDraft({ ...draft, sampleMs: e.target.value === '' ? Number.NaN : Number(e.target.value) })}
            />
            {err('sampleMs') && <span className="field-error">{err('sampleMs')}</span>}
          </label>
        </fieldset>

        <fieldset>
          <legend>Python per host</legend>
          <p className="hint">The interpreter the agent runs with on a host (a venv or conda env with torch); others use python3.</p>
          {pythonRows.map(([host, python], i) => (
            <div className="row" key={i}>
              <input
                aria-label="Host alias"
                value={host}
                onChange={(e) => {
                  const entries = pythonRows.map(([h, p], j) => (j === i ? [e.target.value, p] : [h, p]));
                  setDraft({ ...draft, pythonByHost: Object.fromEntries(entries) as Record<string, string> });
                }}
              />
              <input
                aria-label={`Python for ${host}`}
                name={`pythonByHost.${host}`}
                value={python}
                aria-invalid={err(`pythonByHost.${host}`) ? true : undefined}
                onChange={(e) => setDraft({ ...draft, pythonByHost: { ...draft.pythonByHost, [host]: e.target.value } })}
              />
              <button
                type="button"
                aria-label={`Remove ${host}`}
                onClick={() => setDraft({ ...draft, pythonByHost: Object.fromEntries(pythonRows.filter((_, j) => j !== i)) })}
              >
                Remove
              </button>
            </div>
          ))}
          <button
            type="button"
            onClick={() => {
              let name = 'host';
              for (let n = 2; name in draft.pythonByHost; n++) name = `host-${n}`;
              setDraft({ ...draft, pythonByHost: { ...draft.pythonByHost, [name]: 'python3' } });
            }}
          >
            Add host
          </button>
          {Object.entries(errors)
            .filter(([f]) => f.startsWith('pythonByHost'))
            .map(([f, m]) => (
              <p key={f} className="field-error">
                {m}
              </p>
            ))}
        </fieldset>

        <fieldset>
          <legend>Appearance</legend>
          <div className="row" role="radiogroup" aria-label="Theme">
            {(['system', 'dark', 'light'] as Theme[]).map((t) => (
              <label key={t} className="row" style={{ flexDirection: 'row' }}>
                <input
                  type="radio"
                  name="theme"
                  value={t}
                  checked={draft.theme === t}
                  onChange={() => {
                    setDraft({ ...draft, theme: t });
                    applyTheme(t); // preview; Save keeps it, reload reverts an unsaved choice
                  }}
                />
                {t === 'system' ? 'Follow the OS' : t === 'dark' ? 'Dark' : 'Light'}
              </label>
            ))}
          </div>
        </fieldset>

        <fieldset>
          <legend>Passwords and passphrases</legend>
          <p className="hint" data-testid="secrets-status">
            {snap.secrets.rememberAvailable
              ? `Remembered through the OS keychain: ${snap.secrets.remembered}.`
              : `Kept in memory for this session only: ${snap.secrets.reason ?? 'no OS keychain'}.`}
          </p>
          <button type="button" onClick={() => void forget()}>
            Forget saved passwords
          </button>
        </fieldset>

        {errors['(settings)'] && <p className="field-error">{errors['(settings)']}</p>}
        <div className="actions">
          <button type="submit">Save</button>
          <button type="button" onClick={() => setDraft({ ...snap.defaults, recentRuns: draft.recentRuns })}>
            Reset to defaults
          </button>
          <span role="status" className="hint" data-testid="settings-status">
            {status}
          </span>
        </div>
      </form>
    </section>
  );
}
