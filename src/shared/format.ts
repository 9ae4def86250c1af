/** Human formats shared by the CLI, the renderer and exports. One place, so every view agrees. */

/** ns → "12.3 ms" / "1.23 s" / "850 µs"; null → "–". */
export function formatNs(ns: number | null | undefined): string {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return '–';
  const abs = Math.abs(ns);
  const [unit, name] = nsUnit(abs);
  // Four significant digits from 1 s up (3.573 s, 36.05 s, 125.0 s), as below it (50.09 ms).
  const decimals = unit === 1e9 ? (abs >= 1e11 ? 1 : abs >= 1e10 ? 2 : 3) : unit === 1e6 ? (abs >= 1e8 ? 1 : 2) : unit === 1e3 ? 1 : 0;
  return `${unit === 1 ? Math.round(ns) : (ns / unit).toFixed(decimals)} ${name}`;
}

/** The unit a time of magnitude `absNs` is written in: s from 1 s, ms from 1 ms, µs from 1 µs. */
function nsUnit(absNs: number): [number, string] {
  return absNs >= 1e9 ? [1e9, 's'] : absNs >= 1e6 ? [1e6, 'ms'] : absNs >= 1e3 ? [1e3, 'µs'] : [1, 'ns'];
}

/**
 * A formatter for the ticks of one time axis: one unit for the whole axis, chosen by its largest
 * value, and as many decimals as the tick step needs (0 s, 2 s, … 12 s; 0 ms, 50 ms, … 250 ms),
 * where formatNs per tick gave "0 ns", "2.000 s", "12.00 s" on one axis.
 * @param maxNs the axis's largest value (ns)
 * @param stepNs the distance between ticks (ns)
 */
export function axisNsFormat(maxNs: number, stepNs: number): (ns: number) => string {
  const [unit, name] = nsUnit(Math.abs(maxNs));
  const step = Math.abs(stepNs) / unit;
  // The fewest decimals that write the step exactly (0.25 → 2, 2 → 0), at most 9 (ns in seconds).
  let decimals = 0;
  if (step > 0 && Number.isFinite(step)) {
    for (; decimals < 9; decimals++) {
      const x = step * 10 ** decimals;
      if (Math.round(x) >= 1 && Math.abs(Math.round(x) - x) <= 1e-6 * x) break;
    }
  }
  return (ns) => `${(ns / unit).toFixed(decimals)} ${name}`;
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

/** "1 block", "2,004 blocks": a count with its noun, singular for one. */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}

/**
 * A replay clock, "elapsed / total": both in the total's unit and precision (formatNs's four
 * significant digits), so the readout keeps its width while it runs. Each formatted on its own
 * read "0 ns / 58.15 s" at the start and "999.6 ms / 58.15 s" a second in.
 */
export function formatNsClock(elapsedNs: number, totalNs: number): string {
  if (!(totalNs > 0) || !Number.isFinite(totalNs)) return `${formatNs(elapsedNs)} / ${formatNs(totalNs)}`;
  const f = axisNsFormat(totalNs, 10 ** (Math.floor(Math.log10(totalNs)) - 3));
  return `${f(elapsedNs)} / ${f(totalNs)}`;
}

/** "NVIDIA H100 80GB HBM3" → "H100 80GB HBM3": every card in the column is NVIDIA's, and the
 * prefix made the column wrap to four lines at 1100 px (the full name stays in the tooltip). */
export function shortGpuName(name: string): string {
  return name.replace(/^NVIDIA\s+/i, '');
}
