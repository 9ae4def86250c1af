/**
 * CSV tables of a run, computed by the same `RunAnalyzer` as the run summary and `kvscope
 * validate`, so the numbers agree exactly: times are integer nanoseconds as in the log, statistics
 * (means, interpolated percentiles) rounded to the nearest ns (with a millisecond column beside the
 * headline ones for spreadsheets). Quoting follows RFC 4180.
 *
 * - rounds:   round, users, e2e_ns, e2e_ms, ttft_count, ttft_mean_ns, ttft_p50_ns, ttft_p99_ns, ttft_mean_ms
 * - requests: user, round, queued_ns … done_ns (phase times, run clock), queue_ns, prefill_ns,
 *             decode_ns (phase durations), tokens, reused/computed tokens, ttft_ns, ttft_ms, then
 *             where the TTFT went (shared/ttft-breakdown.ts: the columns of `breakdownFields`,
 *             empty where the log does not record a part)
 */
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunAnalysis, RequestTiming } from '../../../shared/run-analysis';
import { BREAKDOWN_FIELDS, breakdownFields, ttftBreakdown } from '../../../shared/ttft-breakdown';
import { CodedError } from '../../../shared/result';

export type CsvTable = 'rounds' | 'requests';
export const CSV_TABLES: readonly CsvTable[] = ['rounds', 'requests'];

type Cell = string | number | null | undefined;

/** One RFC 4180 field: quoted when it holds a comma, a quote or a line break. */
export function csvField(v: Cell): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : v;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export const csvLine = (cells: readonly Cell[]): string => cells.map(csvField).join(',') + '\r\n';

const ms = (ns: number | null): number | null => (ns === null ? null : ns / 1e6);
/**
 * A statistic of ns times (a mean, an interpolated percentile) to the nearest integer ns: the
 * log's clock has no finer grain, and the `_ns` columns are integer ns like the times they come from.
 */
const wholeNs = (ns: number | null): number | null => (ns === null ? null : Math.round(ns));
const diff = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : b - a);

export const ROUNDS_HEADER = ['round', 'users', 'e2e_ns', 'e2e_ms', 'ttft_count', 'ttft_mean_ns', 'ttft_p50_ns', 'ttft_p99_ns', 'ttft_mean_ms'] as const;
export const REQUESTS_HEADER = [
  'user',
  'round',
  'queued_ns',
  'scheduled_ns',
  'first_token_ns',
  'done_ns',
  'queue_ns',
  'prefill_ns',
  'decode_ns',
  'prompt_tokens',
  'output_tokens',
  'reused_gpu_tokens',
  'reused_host_tokens',
  'computed_tokens',
  'ttft_ns',
  'ttft_ms',
  'reused_disk_tokens',
  ...BREAKDOWN_FIELDS,
] as const;

export function* roundsRows(a: RunAnalysis): Generator<string> {
  yield csvLine(ROUNDS_HEADER);
  for (const r of a.roundRows) {
    const mean = wholeNs(r.ttft.mean);
    yield csvLine([r.round, r.users, r.e2e_ns, ms(r.e2e_ns), r.ttft.count, mean, wholeNs(r.ttft.p50), wholeNs(r.ttft.p99), ms(mean)]);
  }
}

function requestCells(r: RequestTiming, blockBytes: number | null): Cell[] {
  const parts = breakdownFields(ttftBreakdown(r, blockBytes));
  return [
    r.user,
    r.round,
    r.queued,
    r.scheduled,
    r.first_token,
    r.done,
    diff(r.queued, r.scheduled),
    diff(r.scheduled, r.first_token),
    diff(r.first_token, r.done),
    r.prompt_tokens,
    r.output_tokens,
    r.reused_gpu_tokens,
    r.reused_host_tokens,
    r.computed_tokens,
    r.ttft_ns,
    ms(r.ttft_ns),
    r.reused_disk_tokens,
    ...BREAKDOWN_FIELDS.map((k) => parts[k]),
  ];
}

export function* requestsRows(a: RunAnalysis): Generator<string> {
  yield csvLine(REQUESTS_HEADER);
  const blockBytes = a.pools.gpu?.block_bytes ?? null;
  for (const r of a.requests) yield csvLine(requestCells(r, blockBytes));
}

async function writeLines(file: string, lines: Iterable<string>): Promise<void> {
  const out = createWriteStream(file);
  const done = new Promise<void>((resolve, reject) => {
    out.once('error', reject);
    out.once('finish', resolve);
  });
  for (const l of lines) {
    if (!out.write(l)) await new Promise<void>((r) => out.once('drain', r));
  }
  out.end();
  await done;
}

/**
 * Writes one table to `dest` (a file), or with no table both tables into the folder `dest`
 * (rounds.csv, requests.csv). @returns the files written.
 */
export async function writeCsv(a: RunAnalysis, dest: string, table?: CsvTable): Promise<string[]> {
  if (table !== undefined && !CSV_TABLES.includes(table)) throw new CodedError('invalid_argument', `--table must be one of ${CSV_TABLES.join(', ')}`);
  const rows = (t: CsvTable) => (t === 'rounds' ? roundsRows(a) : requestsRows(a));
  if (table) {
    await writeLines(dest, rows(table));
    return [dest];
  }
  await mkdir(dest, { recursive: true });
  const files: string[] = [];
  for (const t of CSV_TABLES) {
    const f = join(dest, `${t}.csv`);
    await writeLines(f, rows(t));
    files.push(f);
  }
  return files;
}
