/**
 * The runs library: every run on this machine and the bundled samples, newest first and sortable
 * by any column; a failed run says why; open, rename, delete, import an events.jsonl(.gz), reveal
 * on disk, and pick runs to compare.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { RunListing } from '../../../shared/api';
import { formatNs, shortGpuName } from '../../../shared/format';
import { useApi } from '../../bridge/api-context';
import { useRunCache } from '../../hooks';
import { routeHref } from '../../router';
import { DEFAULT_RUNS_SORT, formatRunDate, nextSort, sortRuns, type RunsSortKey } from '../../model/runs-table';
import { TTFT_QUEUED_TITLE, TTFT_SERVICE_TITLE } from '../../model/ttft-names';

const COLUMNS: Array<{ key: RunsSortKey; label: string; num?: boolean }> = [
  { key: 'name', label: 'Name' },
  { key: 'date', label: 'Date' },
  { key: 'host', label: 'Host · GPU' },
  { key: 'model', label: 'Model' },
  { key: 'users', label: 'Users', num: true },
  { key: 'status', label: 'Status' },
];

function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function RunsView({ pick }: { pick?: 'live' | 'timeline' | 'summary' } = {}) {
  const api = useApi();
  const cache = useRunCache();
  const [runs, setRuns] = useState<RunListing[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [picked, setPicked] = useState<Set<string>>(new Set());
  const [sort, setSort] = useState(DEFAULT_RUNS_SORT);
  const sorted = useMemo(() => (runs ? sortRuns(runs, sort.key, sort.dir) : []), [runs, sort]);
  const ariaSort = (key: RunsSortKey) => (sort.key === key ? (sort.dir === 'asc' ? 'ascending' : 'descending') : undefined);
  const sortButton = (key: RunsSortKey, label: string, title?: string) => (
    <button type="button" className="sort" data-sort={key} onClick={() => setSort(nextSort(sort, key))} title={`Sort by ${title ?? label}`}>
      {label}
      <span aria-hidden="true" className="sort-mark">
        {sort.key === key ? (sort.dir === 'asc' ? ' ▲' : ' ▼') : ''}
      </span>
    </button>
  );
  const fileRef = useRef<HTMLInputElement>(null);

  const refresh = useCallback(() => {
    void api.listRuns().then((r) => (r.ok ? (setRuns(r.value), setError(null)) : setError(r.error.message)));
  }, [api]);
  useEffect(refresh, [refresh]);
  // A resumed run's status changes (running, then ok) show without a reload.
  useEffect(() => api.onPush((m) => m.kind === 'run-status' && refresh()), [api, refresh]);

  /** Follows incomplete runs again (listing.resumable), each from its last stored byte. */
  const resume = async (list: RunListing[]) => {
    const failed: string[] = [];
    for (const run of list) {
      const r = await api.resumeRun(run.id);
      if (!r.ok) failed.push(`${run.name}: ${r.error.message}`);
      cache.forget(run.id);
    }
    setNotice(failed.length ? `Could not resume ${failed.join('; ')}` : `Resuming ${list.length === 1 ? `“${list[0]!.name}”` : `${list.length} runs`}: following ${list.length === 1 ? 'it' : 'them'} again from the last stored byte.`);
    refresh();
  };

  const importFiles = async (files: FileList | null) => {
    if (!files) return;
    for (const f of Array.from(files)) {
      setNotice(`Importing ${f.name}…`);
      const bytes = new Uint8Array(await f.arrayBuffer());
      const r = await api.importRun({ fileName: f.name, bytesBase64: toBase64(bytes) });
      setNotice(r.ok ? `Imported ${f.name} as “${r.value.name}”.` : `Could not import ${f.name}: ${r.error.message}`);
    }
    refresh();
  };
  const rename = async (run: RunListing, name: string) => {
    setEditing(null);
    if (name.trim() === run.name) return;
    const r = await api.renameRun(run.id, name);
    setNotice(r.ok ? `Renamed to “${r.value.name}”.` : `Could not rename: ${r.error.message}`);
    cache.forget(run.id);
    refresh();
  };
  const remove = async (run: RunListing) => {
    if (!window.confirm(`Delete the run “${run.name}” and its event log from this machine? This cannot be undone.`)) return;
    const r = await api.deleteRun(run.id);
    setNotice(r.ok ? `Deleted “${run.name}”.` : `Could not delete: ${r.error.message}`);
    cache.forget(run.id);
    refresh();
  };
  const reveal = async (run: RunListing) => {
    const r = await api.revealRun(run.id);
    setNotice(r.ok ? `On disk: ${r.value}` : `Could not find it on disk: ${r.error.message}`);
  };
  const toggle = (id: string) => {
    const next = new Set(picked);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setPicked(next);
  };

  if (error) return <p role="alert" className="error">Could not list runs: {error}</p>;
  if (!runs) return <p className="loading">Loading runs…</p>;
  // Offered as the window opens on the library (its start page): every incomplete run started here.
  const stopped = runs.filter((r) => r.resumable);
  return (
    <section className="runs-view">
      <header className="view-header">
        <h1>Runs</h1>
        <a className="button" href="#/new" title="Start a run or a sweep on a host">
          New run…
        </a>
        <button type="button" onClick={() => fileRef.current?.click()} title="Import an events.jsonl or .jsonl.gz" data-action="import">
          Import…
        </button>
        <input ref={fileRef} type="file" accept=".jsonl,.gz,.jsonl.gz" multiple hidden onChange={(e) => void importFiles(e.target.files).then(() => (e.target.value = ''))} data-testid="import-input" />
        {/* With none checked it compares every run: it works, so it must not look disabled (it was dimmed). */}
        <a className="button" href={picked.size ? routeHref({ view: 'compare', runIds: [...picked] }) : '#/compare'} title="Compare the checked runs (all runs when none is checked)" data-action="compare">
          Compare {picked.size ? `${picked.size} run${picked.size === 1 ? '' : 's'}` : 'all'}
        </a>
      </header>
      {pick && runs.length > 0 && (
        <p className="notice" role="status" data-testid="pick-hint">
          No run is open yet: pick one below and open its {pick === 'live' ? 'pools' : pick} (the “{pick === 'live' ? 'pools' : pick}” link in its row).
        </p>
      )}
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      {stopped.length > 0 && (
        <p className="notice" role="status" data-testid="resume-offer">
          {stopped.length === 1 ? `“${stopped[0]!.name}” stopped being followed before it ended` : `${stopped.length} runs stopped being followed before they ended`} (the run goes on, or has finished, on its host).{' '}
          <button type="button" onClick={() => void resume(stopped)} data-action="resume-all">
            Resume {stopped.length === 1 ? 'it' : 'all'}
          </button>
        </p>
      )}
      {runs.length === 0 ? (
        <p className="empty">No runs yet. Start one from New run, or import an events.jsonl.</p>
      ) : (
        <table className="runs-table">
          <thead>
            <tr>
              <th aria-label="Compare" />
              {COLUMNS.map((c) => (
                <th key={c.key} className={c.num ? 'num' : undefined} aria-sort={ariaSort(c.key)}>
                  {sortButton(c.key, c.label)}
                </th>
              ))}
              {/* Both TTFTs in one column (queued above, service below), each sortable: two columns did not fit 1100 px. */}
              <th className="num ttft-head" aria-sort={ariaSort('ttft') ?? ariaSort('service_ttft')}>
                TTFT {sortButton('ttft', 'queued', TTFT_QUEUED_TITLE)} / {sortButton('service_ttft', 'service', TTFT_SERVICE_TITLE)}
              </th>
              <th className="num" aria-sort={ariaSort('e2e')}>
                {sortButton('e2e', 'E2E')}
              </th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {sorted.map((r) => (
              <tr key={r.id} data-run-id={r.id}>
                <td>
                  <input type="checkbox" checked={picked.has(r.id)} onChange={() => toggle(r.id)} aria-label={`compare ${r.name}`} />
                </td>
                <td>
                  {editing === r.id ? (
                    <input
                      autoFocus
                      defaultValue={r.name}
                      aria-label="Run name"
                      onKeyDown={(e) => {
                        if (e.key === 'Enter') void rename(r, e.currentTarget.value);
                        if (e.key === 'Escape') setEditing(null);
                      }}
                      onBlur={(e) => void rename(r, e.currentTarget.value)}
                    />
                  ) : (
                    <a href={routeHref({ view: 'live', runId: r.id })} data-action="open">
                      {r.name}
                    </a>
                  )}
                  {r.bundled && <span className="badge">sample</span>}
                  <div className="links">
                    <a href={routeHref({ view: 'live', runId: r.id })}>pools</a> · <a href={routeHref({ view: 'timeline', runId: r.id })}>timeline</a> · <a href={routeHref({ view: 'summary', runId: r.id })}>summary</a>
                  </div>
                </td>
                <td className="nowrap" data-col="date" title={r.createdAt || undefined}>
                  {formatRunDate(r.createdAt)}
                </td>
                <td>
                  {r.host}
                  <div className="muted nowrap" data-col="gpu" title={r.gpu ?? undefined}>
                    {r.gpu ? shortGpuName(r.gpu) : '–'}
                  </div>
                </td>
                <td className="nowrap">{r.model ?? '–'}</td>
                <td className="num">{r.users ?? '–'}</td>
                <td>
                  <span className={`status status-${r.status}`}>{r.status}</span>
                  {/* Why it failed, in the row (was only in the run's own header, if at all). */}
                  {r.error && (
                    <div className="run-error" data-col="error" title={r.error}>
                      {r.error}
                    </div>
                  )}
                </td>
                <td className="num ttft" data-col="ttft">
                  <span title={TTFT_QUEUED_TITLE}>{formatNs(r.ttft_ns_mean)}</span>
                  <span className="muted" title={TTFT_SERVICE_TITLE} data-col="service-ttft">
                    {formatNs(r.service_ttft_ns_mean)}
                  </span>
                </td>
                <td className="num" data-col="e2e">{formatNs(r.e2e_ns)}</td>
                <td className="actions">
                  {/* Resume stays in sight: it is what an incomplete run needs. */}
                  {r.resumable && (
                    <button type="button" onClick={() => void resume([r])} title="Follow the run again from its last stored byte, to its end" data-action="resume">
                      Resume
                    </button>
                  )}
                  {/* Rename, reveal and delete behind one button: three buttons a row kept the table from fitting 1100 px. */}
                  <details className="row-menu" onBlur={(e) => !e.currentTarget.contains(e.relatedTarget as Node | null) && e.currentTarget.removeAttribute('open')}>
                    <summary title="Rename, reveal on disk, delete" aria-label={`Actions for ${r.name}`} data-action="row-menu">
                      ⋯
                    </summary>
                    <div className="menu" role="menu">
                      <button type="button" role="menuitem" disabled={r.bundled} title={r.bundled ? 'Bundled samples are read-only' : 'Rename'} onClick={() => setEditing(r.id)} data-action="rename">
                        Rename
                      </button>
                      <button type="button" role="menuitem" onClick={() => void reveal(r)} title="Show where the run is on disk" data-action="reveal">
                        Reveal on disk
                      </button>
                      <button type="button" role="menuitem" disabled={r.bundled} title={r.bundled ? 'Bundled samples are read-only' : 'Delete'} onClick={() => void remove(r)} data-action="delete">
                        Delete…
                      </button>
                    </div>
                  </details>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
