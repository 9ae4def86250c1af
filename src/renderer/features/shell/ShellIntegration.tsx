/**
 * The window's side of the desktop shell, mounted once in App: the theme from Settings at start,
 * the menu commands that need files or dialogs (`{kind:'menu'}` pushes from the Electron menu:
 * Open run, Import engine dump, Export, a run opened from outside; App.tsx navigates for the
 * others), and a window-wide drop zone for run files. In the desktop app a dropped file is opened
 * by path (the preload's pathForFile); in a browser (kvscope serve) its bytes are imported.
 */
import { useEffect, useRef, useState } from 'react';
import { EXPORT_FORMAT_CHOICES, type ExportFormat, type KvScopeApi, type MenuAction } from '../../../shared/api';
import { useApi } from '../../bridge/api-context';
import { routeHref } from '../../router';
import { applyTheme } from '../settings/theme';

/** Browser imports travel as base64 over the WebSocket (16 MiB frames): keep a margin. */
const MAX_BROWSER_DROP_BYTES = 11 * 1024 * 1024;
const RUN_FILE_ACCEPT = '.kvscope,.jsonl,.gz';

/** Fired on window for every menu command, so a view can take over one (e.g. export from the timeline). */
export const MENU_EVENT = 'kvscope:menu';

function looksLikeRun(name: string): boolean {
  const n = name.toLowerCase();
  return n.endsWith('.kvscope') || n.endsWith('.jsonl') || n.endsWith('.jsonl.gz');
}

function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Opens one dropped or picked file; returns the run id, or throws with the reason. */
export async function openDroppedFile(api: KvScopeApi, file: File): Promise<string> {
  const path = api.pathForFile?.(file) ?? null;
  if (path) {
    const r = await api.openPath(path);
    if (!r.ok) throw new Error(r.error.message);
    return r.value.runId;
  }
  if (!looksLikeRun(file.name)) throw new Error(`${file.name}: expected a .kvscope file or an events.jsonl(.gz) log`);
  if (file.size > MAX_BROWSER_DROP_BYTES) {
    throw new Error(`${file.name} is ${(file.size / 1e6).toFixed(0)} MB: too large to send through a browser window; run \`kvscope open <file>\` on the machine that has it`);
  }
  const r = await api.importRun({ fileName: file.name, bytesBase64: toBase64(new Uint8Array(await file.arrayBuffer())) });
  if (!r.ok) throw new Error(r.error.message);
  return r.value.id;
}

const showRun = (runId: string) => {
  window.location.hash = routeHref({ view: 'live', runId });
};

export function ShellIntegration({ runId }: { runId: string | null }) {
  const api = useApi();
  const [notice, setNotice] = useState<string | null>(null);
  const [dragging, setDragging] = useState(false);
  const [exporting, setExporting] = useState<string | null>(null);
  const [dumpPath, setDumpPath] = useState<string | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const runRef = useRef(runId);
  runRef.current = runId;

  useEffect(() => {
    void api.getSettings().then((r) => r.ok && applyTheme(r.value.settings.theme));
  }, [api]);

  useEffect(() => {
    if (!notice) return;
    const t = setTimeout(() => setNotice(null), 8000);
    return () => clearTimeout(t);
  }, [notice]);

  useEffect(() => {
    const openRunFile = async () => {
      const r = await api.openFileDialog({ purpose: 'run' });
      if (!r.ok) {
        // A browser has no file dialog the core can open: use the page's own picker.
        fileInput.current?.click();
        return;
      }
      if (!r.value) return;
      const opened = await api.openPath(r.value);
      if (opened.ok) showRun(opened.value.runId);
      else setNotice(`Could not open ${r.value}: ${opened.error.message}`);
    };
    const importDump = async () => {
      const r = await api.openFileDialog({ purpose: 'engine-dump' });
      if (!r.ok) {
        setNotice(`In a browser window, translate the dump on its machine: python3 -m kvscope_agent translate --engine tensorrt_llm|vllm --input DUMP --out DIR, then kvscope open DIR.`);
        return;
      }
      if (r.value) setDumpPath(r.value);
    };
    const act = (action: MenuAction, target?: string) => {
      window.dispatchEvent(new CustomEvent(MENU_EVENT, { detail: { action, runId: target } }));
      const current = runRef.current;
      // Navigation commands (new run, views, settings) are App.tsx's; these need files or dialogs.
      switch (action) {
        case 'open-run':
          void openRunFile();
          break;
        case 'import-engine-dump':
          void importDump();
          break;
        case 'export':
          if (current) setExporting(current);
          else setNotice('Open a run first: File → Export exports the run on screen.');
          break;
        case 'show-run':
          // Same target as App.tsx's handler (idempotent): a run opened from outside, or File → Recent.
          if (target) showRun(target);
          break;
        default:
          break;
      }
    };
    return api.onPush((m) => {
      if (m.kind === 'menu') act(m.action, m.runId);
    });
  }, [api]);

  useEffect(() => {
    // dragenter/leave fire for every child element; count them to know when the drag left the window.
    let depth = 0;
    const hasFiles = (e: DragEvent) => Array.from(e.dataTransfer?.types ?? []).includes('Files');
    const onEnter = (e: DragEvent) => {
      if (!hasFiles(e)) return;
      depth++;
      setDragging(true);
    };
    const onLeave = (e: DragEvent) => {
      if (!hasFiles(e)) return;
      depth = Math.max(0, depth - 1);
      if (depth === 0) setDragging(false);
    };
    const onOver = (e: DragEvent) => {
      if (hasFiles(e)) e.preventDefault(); // allows the drop (and keeps the browser from navigating to the file)
    };
    const onDrop = (e: DragEvent) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      setDragging(false);
      const files = Array.from(e.dataTransfer?.files ?? []);
      void (async () => {
        let last: string | null = null;
        for (const f of files) {
          try {
            setNotice(`Opening ${f.name}…`);
            last = await openDroppedFile(api, f);
            setNotice(`Opened ${f.name}.`);
          } catch (x) {
            setNotice(`Could not open ${f.name}: ${(x as Error).message}`);
          }
        }
        if (last) showRun(last);
      })();
    };
    window.addEventListener('dragenter', onEnter);
    window.addEventListener('dragleave', onLeave);
    window.addEventListener('dragover', onOver);
    window.addEventListener('drop', onDrop);
    return () => {
      window.removeEventListener('dragenter', onEnter);
      window.removeEventListener('dragleave', onLeave);
      window.removeEventListener('dragover', onOver);
      window.removeEventListener('drop', onDrop);
    };
  }, [api]);

  return (
    <>
      <input
        ref={fileInput}
        type="file"
        accept={RUN_FILE_ACCEPT}
        hidden
        data-testid="shell-file-input"
        onChange={(e) => {
          const f = e.target.files?.[0];
          e.target.value = '';
          if (!f) return;
          openDroppedFile(api, f).then(showRun, (x: Error) => setNotice(`Could not open ${f.name}: ${x.message}`));
        }}
      />
      {dragging && (
        <div className="drop-overlay" data-testid="drop-overlay">
          Drop a .kvscope file or an events.jsonl to open it
        </div>
      )}
      {dumpPath && (
        <EngineDumpDialog
          path={dumpPath}
          onDone={(runId, msg) => {
            setDumpPath(null);
            if (msg) setNotice(msg);
            if (runId) showRun(runId);
          }}
        />
      )}
      {exporting && <ExportDialog runId={exporting} onDone={(msg) => (setExporting(null), msg && setNotice(msg))} />}
      {notice && (
        <div className="shell-notice" role="status" data-testid="shell-notice">
          {notice}
        </div>
      )}
    </>
  );
}

const FORMATS = EXPORT_FORMAT_CHOICES;

/** File → Export: pick a format, then where (the desktop save dialog), then exportRun. */
function ExportDialog({ runId, onDone }: { runId: string; onDone: (message: string | null) => void }) {
  const api = useApi();
  const [format, setFormat] = useState<ExportFormat>('perfetto');
  const [busy, setBusy] = useState(false);
  const go = async () => {
    const f = FORMATS.find((x) => x.id === format)!;
    const base = runId.replace(/^sample:/, '');
    const dest = await api.openFileDialog(format === 'csv' ? { purpose: 'folder', title: 'Export CSV tables into' } : { purpose: 'export', defaultName: `${base}${f.ext}` });
    if (!dest.ok) return onDone(`Export from a browser window: run \`kvscope export ${runId} --format ${format} -o <file>\` (${dest.error.message}).`);
    if (!dest.value) return onDone(null);
    setBusy(true);
    const r = await api.exportRun(runId, format, dest.value);
    onDone(r.ok ? `Exported to ${dest.value}` : `Export failed: ${r.error.message}`);
  };
  return (
    <div className="shell-dialog" role="dialog" aria-modal="true" aria-label="Export run" onKeyDown={(e) => e.key === 'Escape' && !busy && onDone(null)}>
      <div>
        <h2>Export {runId}</h2>
        {FORMATS.map((f) => (
          <label key={f.id} className="row">
            <input type="radio" name="export-format" checked={format === f.id} onChange={() => setFormat(f.id)} /> {f.label}
          </label>
        ))}
        <div className="row">
          {/* Focus starts in the dialog and Escape cancels: opened from the menu, the keyboard
              was left on the page behind it with no way to reach or dismiss it but the mouse. */}
          <button type="button" disabled={busy} onClick={() => void go()} autoFocus>
            {busy ? 'Exporting…' : 'Export…'}
          </button>
          <button type="button" onClick={() => onDone(null)}>
            Cancel
          </button>
        </div>
      </div>
    </div>
  );
}

/** File → Import Engine Dump: which engine wrote it (guessed from the name), then the agent translates it. */
function EngineDumpDialog({ path, onDone }: { path: string; onDone: (runId: string | null, message: string | null) => void }) {
  const api = useApi();
  const name = path.split(/[\\/]/).pop() ?? path;
  const [engine, setEngine] = useState<'tensorrt_llm' | 'vllm'>(/vllm/i.test(name) ? 'vllm' : 'tensorrt_llm');
  const [busy, setBusy] = useState(false);
  const go = async () => {
    setBusy(true);
    const r = await api.importEngineDump(path, engine);
    onDone(r.ok ? r.value.runId : null, r.ok ? `Imported ${name} as ${r.value.listing.name}.` : `Could not import ${name}: ${r.error.message}`);
  };
  return (
    <div className="shell-dialog" role="dialog" aria-modal="true" aria-label="Import engine dump" onKeyDown={(e) => e.key === 'Escape' && !busy && onDone(null, null)}>
      <div>
        <h2>Import {name}</h2>
        <p className="hint">A dump of the engine’s KV-cache events, translated into a KV Scope run by the agent.</p>
        {(
          [
            ['tensorrt_llm', 'TensorRT-LLM (get_kv_cache_events)'],
            ['vllm', 'vLLM (KVEventBatch)'],
          ] as const
        ).map(([id, label]) => (
          <label key={id} className="row">
            <input type="radio" name="dump-engine" checked={engine === id} onChange={() => setEngine(id)} /> {label}
          </label>
        ))}
        <div className="row">
          <button type="button" disabled={busy} onClick={() => void go()} autoFocus>
            {busy ? 'Translating…' : 'Import'}
          </button>
          <button type="button" onClick={() => onDone(null, null)}>
            Cancel
          </button>
        </div>
      </div>
    </div>
  );
}
