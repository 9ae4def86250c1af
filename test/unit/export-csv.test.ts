/** CSV tables: the numbers equal analyzeEvents (the run summary) exactly, quoting is RFC 4180. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { csvField, writeCsv, REQUESTS_HEADER, ROUNDS_HEADER } from '../../src/main/core/export/csv';
import { exportLog } from '../../src/main/core/export/run-export';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { realRunPaths } from '../helpers/real-runs';

const FIXTURE = join(process.cwd(), 'test', 'fixtures', 'runs', 'cpu-tiny-export', 'events.jsonl');
const dir = mkdtempSync(join(tmpdir(), 'kvscope-csv-'));
const meta = { id: 'x', name: 'x', host: 'test', status: 'ok' as const, createdAt: '' };

/** A small RFC 4180 reader (quoted fields, doubled quotes, CRLF). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += ch;
  }
  return rows;
}

const n = (s: string): number | null => (s === '' ? null : Number(s));

describe('CSV export', () => {
  const events = decodeAll(readFileSync(FIXTURE)).events;
  const a = analyzeEvents(events);

  it('writes rounds.csv and requests.csv into a folder, with E2E and TTFT equal to the run summary', async () => {
    const out = join(dir, 'both');
    const r = await exportLog({ logFile: FIXTURE, meta, format: 'csv', dest: out });
    expect(r.files.map((f) => f.slice(out.length + 1))).toEqual(['rounds.csv', 'requests.csv']);
    const rounds = parseCsv(readFileSync(join(out, 'rounds.csv'), 'utf8'));
    expect(rounds[0]).toEqual([...ROUNDS_HEADER]);
    expect(rounds).toHaveLength(a.roundRows.length + 1);
    const col = (name: string) => ROUNDS_HEADER.indexOf(name as (typeof ROUNDS_HEADER)[number]);
    a.roundRows.forEach((row, i) => {
      const cells = rounds[i + 1]!;
      expect(n(cells[col('round')]!)).toBe(row.round);
      expect(n(cells[col('users')]!)).toBe(row.users);
      expect(n(cells[col('e2e_ns')]!)).toBe(row.e2e_ns);
      // Statistics to the nearest ns (the _ns columns are integer ns, docs/export.md).
      const whole = (v: number | null) => (v === null ? null : Math.round(v));
      expect(n(cells[col('ttft_mean_ns')]!)).toBe(whole(row.ttft.mean));
      expect(n(cells[col('ttft_p50_ns')]!)).toBe(whole(row.ttft.p50));
      expect(n(cells[col('ttft_p99_ns')]!)).toBe(whole(row.ttft.p99));
      expect(n(cells[col('e2e_ms')]!)).toBeCloseTo(row.e2e_ns! / 1e6, 9);
    });
    const reqs = parseCsv(readFileSync(join(out, 'requests.csv'), 'utf8'));
    expect(reqs[0]).toEqual([...REQUESTS_HEADER]);
    expect(reqs).toHaveLength(a.requests.length + 1);
    const rc = (name: string) => REQUESTS_HEADER.indexOf(name as (typeof REQUESTS_HEADER)[number]);
    a.requests.forEach((q, i) => {
      const cells = reqs[i + 1]!;
      expect([n(cells[rc('user')]!), n(cells[rc('round')]!)]).toEqual([q.user, q.round]);
      expect(n(cells[rc('ttft_ns')]!)).toBe(q.ttft_ns);
      expect(n(cells[rc('queued_ns')]!)).toBe(q.queued);
      expect(n(cells[rc('done_ns')]!)).toBe(q.done);
      expect(n(cells[rc('prefill_ns')]!)).toBe(q.first_token! - q.scheduled!);
      expect(n(cells[rc('reused_host_tokens')]!)).toBe(q.reused_host_tokens);
      expect(n(cells[rc('computed_tokens')]!)).toBe(q.computed_tokens);
    });
    // The whole-run figures follow from the table: TTFT over rounds 1.. and E2E first queued → last done.
    const timed = a.requests.filter((q) => q.round >= 1);
    expect(Math.max(...timed.map((q) => q.done!)) - Math.min(...timed.filter((q) => q.round === 1).map((q) => q.queued!))).toBe(a.e2e_ns);
  });

  for (const run of realRunPaths()) {
    it(`writes every _ns cell as integer nanoseconds (${run.name})`, async () => {
      const out = join(dir, run.name.replace(/[^A-Za-z0-9]+/g, '-'));
      await exportLog({ logFile: run.path, meta, format: 'csv', dest: out });
      for (const [file, header] of [['rounds.csv', ROUNDS_HEADER], ['requests.csv', REQUESTS_HEADER]] as const) {
        const rows = parseCsv(readFileSync(join(out, file), 'utf8'));
        expect(rows[0]).toEqual([...header]);
        const nsCols = header.map((h, i) => [h, i] as const).filter(([h]) => h.endsWith('_ns'));
        for (const row of rows.slice(1)) for (const [h, i] of nsCols) expect(row[i], `${file} ${h}`).toMatch(/^(-?\d+)?$/);
      }
      // The mean is the summary's, rounded: the ms column says the same.
      const rounds = parseCsv(readFileSync(join(out, 'rounds.csv'), 'utf8'));
      const mean = ROUNDS_HEADER.indexOf('ttft_mean_ns');
      const meanMs = ROUNDS_HEADER.indexOf('ttft_mean_ms');
      for (const row of rounds.slice(1)) if (row[mean]) expect(Number(row[meanMs])).toBe(Number(row[mean]) / 1e6);
    });
  }

  it('writes one table to one file with --table', async () => {
    const file = join(dir, 'rounds-only.csv');
    const r = await exportLog({ logFile: FIXTURE, meta, format: 'csv', dest: file, table: 'rounds' });
    expect(r.files).toEqual([file]);
    expect(readFileSync(file, 'utf8').split('\r\n')[0]).toBe(ROUNDS_HEADER.join(','));
    await expect(writeCsv(a, join(dir, 'bad.csv'), 'nope' as 'rounds')).rejects.toThrow(/--table must be one of/);
  });

  it('quotes fields with commas, quotes and line breaks, and leaves numbers and empties plain', () => {
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('x\ny')).toBe('"x\ny"');
    expect(csvField(12.5)).toBe('12.5');
    expect(csvField(null)).toBe('');
    expect(csvField(Number.NaN)).toBe('');
  });
});
