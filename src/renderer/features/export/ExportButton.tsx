/**
 * The place for File → Export in the run views. The export engineer (issue 7) adds export methods
 * to KvScopeApi; this button calls the first one the bridge offers (`exportRun(runId, format)`)
 * and says plainly when this build has none yet.
 */
import { useState } from 'react';
import { useApi } from '../../bridge/api-context';

type ExportFn = (runId: string, format: string) => Promise<{ ok: boolean; value?: unknown; error?: { message: string } }>;

export const EXPORT_FORMATS = [
  { id: 'perfetto', label: 'Perfetto trace (.json)' },
  { id: 'csv', label: 'CSV tables' },
];

export function ExportButton({ runId }: { runId: string }) {
  const api = useApi() as unknown as Record<string, unknown>;
  const fn = typeof api.exportRun === 'function' ? (api.exportRun as ExportFn) : null;
  const [msg, setMsg] = useState<string | null>(null);
  if (!fn) {
    return (
      <button type="button" disabled title="Export (Perfetto trace, CSV, images) is not in this build yet" data-action="export">
        Export…
      </button>
    );
  }
  return (
    <span className="export">
      <select
        aria-label="Export this run"
        title="Export this run (File → Export)"
        data-action="export"
        value=""
        onChange={(e) => {
          const format = e.target.value;
          if (!format) return;
          setMsg('Exporting…');
          void fn(runId, format).then((r) => setMsg(r.ok ? `Exported: ${String(r.value ?? '')}` : `Export failed: ${r.error?.message ?? ''}`));
        }}
      >
        <option value="">Export…</option>
        {EXPORT_FORMATS.map((f) => (
          <option key={f.id} value={f.id}>
            {f.label}
          </option>
        ))}
      </select>
      {msg && <span className="muted"> {msg}</span>}
    </span>
  );
}
