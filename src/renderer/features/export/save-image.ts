/**
 * Chart images (the API's saveImage): the window draws, the core writes. The destination comes from
 * the desktop save dialog, or a typed path when served to a browser (same as ExportButton).
 */
import type { ChartImageKind, KvScopeApi } from '../../../shared/api';

export async function saveChartImage(api: KvScopeApi, name: string, kind: ChartImageKind, data: string, ext: 'svg' | 'png'): Promise<string> {
  const suggested = `${name.replace(/[^A-Za-z0-9._-]+/g, '-')}-${kind}.${ext}`;
  let dest: string | null = null;
  const dialog = await api.openFileDialog({ purpose: 'export', defaultName: suggested, title: `Save ${kind} image` });
  if (dialog.ok) dest = dialog.value;
  else {
    const info = await api.getAppInfo();
    const base = info.ok ? info.value.runsDir.replace(/[\\/][^\\/]+[\\/]?$/, '') : '';
    dest = window.prompt('Save the image to (a path on the machine running KV Scope):', `${base}/${suggested}`);
  }
  if (!dest) return 'Cancelled.';
  const r = await api.saveImage(name, kind, data, dest);
  return r.ok ? `Saved ${r.value.path} (${r.value.bytes.toLocaleString()} bytes)` : `Could not save the image: ${r.error.message}`;
}

/** The chart SVGs of a container as one standalone SVG document (styles inlined from the page). */
export function chartsAsSvg(root: Element): string {
  const svgs = [...root.querySelectorAll('svg')];
  const cs = getComputedStyle(document.documentElement);
  const fg = cs.getPropertyValue('--fg').trim() || '#000';
  const muted = cs.getPropertyValue('--muted').trim() || '#666';
  const grid = cs.getPropertyValue('--grid').trim() || '#ccc';
  const bg = cs.getPropertyValue('--bg').trim() || '#fff';
  let x = 0;
  let h = 0;
  const parts: string[] = [];
  for (const s of svgs) {
    const w = Number(s.getAttribute('width'));
    const sh = Number(s.getAttribute('height'));
    const title = s.closest('figure')?.querySelector('figcaption')?.textContent ?? '';
    parts.push(`<g transform="translate(${x},24)"><text x="4" y="-8" fill="${fg}" font-weight="600">${title.replace(/[<&]/g, '')}</text>${s.innerHTML}</g>`);
    x += w + 16;
    h = Math.max(h, sh + 24);
  }
  const style = `.gridline{stroke:${grid}}.tick,.axis-label{fill:${muted};font-size:11px}text{font-family:system-ui,sans-serif;font-size:12px}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${x}" height="${h}"><style>${style}</style><rect width="100%" height="100%" fill="${bg}"/>${parts.join('')}</svg>`;
}
