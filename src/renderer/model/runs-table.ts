/**
 * The runs library's table as data: its columns, how each sorts, and how a run's date reads.
 * Pure, so the order is unit-tested without a browser.
 */
import type { RunListing } from '../../shared/api';

export type RunsSortKey = 'name' | 'date' | 'host' | 'gpu' | 'model' | 'users' | 'status' | 'ttft' | 'service_ttft' | 'e2e';
export type SortDir = 'asc' | 'desc';

/** Newest first when the library opens. */
export const DEFAULT_RUNS_SORT: { key: RunsSortKey; dir: SortDir } = { key: 'date', dir: 'desc' };

/** A click on a column: the same column flips its order; another starts at its natural one (dates newest first, the rest A→Z or low to high). */
export function nextSort(current: { key: RunsSortKey; dir: SortDir }, key: RunsSortKey): { key: RunsSortKey; dir: SortDir } {
  if (current.key === key) return { key, dir: current.dir === 'asc' ? 'desc' : 'asc' };
  return { key, dir: key === 'date' ? 'desc' : 'asc' };
}

function value(r: RunListing, key: RunsSortKey): string | number | null {
  switch (key) {
    case 'name':
      return r.name.toLowerCase();
    case 'date': {
      const t = Date.parse(r.createdAt);
      return Number.isFinite(t) ? t : null;
    }
    case 'host':
      return r.host.toLowerCase();
    case 'gpu':
      return r.gpu?.toLowerCase() ?? null;
    case 'model':
      return r.model?.toLowerCase() ?? null;
    case 'users':
      return r.users;
    case 'status':
      return r.status;
    case 'ttft':
      return r.ttft_ns_mean;
    case 'service_ttft':
      return r.service_ttft_ns_mean ?? null;
    case 'e2e':
      return r.e2e_ns;
  }
}

/** The runs in the order asked; a run without the value sorts last either way; ties keep the name order. */
export function sortRuns(runs: readonly RunListing[], key: RunsSortKey, dir: SortDir): RunListing[] {
  const sign = dir === 'asc' ? 1 : -1;
  return [...runs].sort((a, b) => {
    const va = value(a, key);
    const vb = value(b, key);
    if (va === null || vb === null) {
      if (va !== vb) return va === null ? 1 : -1;
    } else if (va !== vb) return (va < vb ? -1 : 1) * sign;
    return a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
  });
}

/** "2026-11-28 01:45" in this machine's time zone; "–" for a run with no date. */
export function formatRunDate(iso: string): string {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '–';
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}
