/** Human formats shared by the CLI, the renderer and exports. One place, so every view agrees. */

/** ns → "12.3 ms" / "1.23 s" / "850 µs"; null → "–". */
export function formatNs(ns: number | null | undefined): string {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return '–';
  const abs = Math.abs(ns);
  if (abs >= 1e9) return `${(ns / 1e9).toFixed(abs >= 1e11 ? 1 : 3)} s`;
  if (abs >= 1e6) return `${(ns / 1e6).toFixed(abs >= 1e8 ? 1 : 2)} ms`;
  if (abs >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${Math.round(ns)} ns`;
}

/** Decimal units, as GPU vendors quote bandwidth (GB = 1e9 bytes). */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

/** bytes per second → "54.5 GB/s". */
export function formatBandwidth(bytesPerS: number | null | undefined): string {
  if (bytesPerS === null || bytesPerS === undefined || !Number.isFinite(bytesPerS)) return '–';
  return `${formatBytes(bytesPerS)}/s`;
}

/** Counts with thousands separators, the same on every machine (tests compare strings). */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}
