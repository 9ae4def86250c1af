/**
 * File → Export in the run views (the API's exportRun): a Perfetto trace, CSV tables, or a
 * portable .kvscope run file. The destination comes from the desktop save dialog; served to a
 * browser (no dialog), the user types a path on the machine that runs KV Scope. (The menu's
 * File → Export is ShellIntegration's dialog.)
 */
import { useState } from 'react';
import { EXPORT_FORMAT_CHOICES as EXPORT_FORMATS, type ExportFormat } from '../../../shared/api';
import { useApi } from '../../bridge/api-context';

export function ExportButton({ runId }: { runId: string }) {
  const api = useApi();
  const [msg, setMsg] = useState<string | null>(null);

  const run = async (format: ExportFormat) => {
    const f = EXPORT_FORMATS.find((x) => x.id === format)!;
    const suggested = `${runId.replace(/[^A-Za-z0-9._-]+/g, '-')}${f.ext}`;
    let dest: string | null = null;
    const dialog = await api.openFileDialog({ purpose: format === 'csv' ? 'folder' : 'export', defaultName: suggested, title: `Export ${f.label}` });
    if (dialog.ok) dest = dialog.value;
    else {
      const info = await api.getAppInfo();
      // Beside the runs folder (in the data folder), which exists.
      const base = info.ok ? info.value.runsDir.replace(/[\\/][^\\/]+[\\/]?$/, '') : '';
      dest = window.prompt(`Export ${f.label} to (a path on the machine running KV Scope):`, `${base}/${suggested}`);
    }
    if (!dest) return;
    setMsg('Exporting…');
    const r = await api.exportRun(runId, format, dest);
    if (!r.ok) setMsg(`Export failed: ${r.error.message}`);
    else setMsg(`Exported ${r.value.files.length} file${r.value.files.length === 1 ? '' : 's'}: ${r.value.files.join(', ')}${r.value.badLines ? ` (${r.value.badLines} bad lines skipped)` : ''}`);
  };

  return (
    <span className="export">
      <select
        aria-label="Export this run"
        title="Export this run (File → Export)"
        data-action="export"
        value=""
        onChange={(e) => {
          const format = e.target.value as ExportFormat;
          if (format) void run(format);
        }}
      >
        <option value="">Export…</option>
        {EXPORT_FORMATS.map((f) => (
          <option key={f.id} value={f.id}>
            {f.label}
          </option>
        ))}
      </select>
      {msg && (
        <span className="muted" role="status">
          {' '}
          {msg}
        </span>
      )}
    </span>
  );
}
