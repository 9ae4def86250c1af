/** The runs library's order and dates: newest first, any column either way, runs lacking a value last. */
import { describe, expect, it } from 'vitest';
import type { RunListing } from '../../src/shared/api';
import { DEFAULT_RUNS_SORT, formatRunDate, nextSort, sortRuns } from '../../src/renderer/model/runs-table';

const run = (id: string, o: Partial<RunListing>): RunListing => ({
  id,
  name: id,
  host: 'local',
  status: 'ok',
  createdAt: '',
  model: null,
  users: null,
  rounds: null,
  engine: null,
  gpu: null,
  e2e_ns: null,
  ttft_ns_mean: null,
  bundled: false,
  ...o,
});

const runs = [
  run('b', { createdAt: '2026-11-28T01:45:00.000Z', users: 4, e2e_ns: 36e9, service_ttft_ns_mean: 1.2e8 }),
  run('a', { createdAt: '2026-12-01T10:00:00.000Z', users: 2, e2e_ns: 16e9, service_ttft_ns_mean: 9e7 }),
  run('failed', { createdAt: '2026-12-02T08:00:00.000Z', users: 2, status: 'error', error: 'agent_failed: torch does not import' }),
  run('c', { createdAt: '', users: 8, e2e_ns: 70e9 }),
];

describe('runs table', () => {
  it('opens newest first; a run with no date goes last', () => {
    expect(sortRuns(runs, DEFAULT_RUNS_SORT.key, DEFAULT_RUNS_SORT.dir).map((r) => r.id)).toEqual(['failed', 'a', 'b', 'c']);
  });
  it('sorts by a number either way, runs without it last both ways, ties by name', () => {
    expect(sortRuns(runs, 'e2e', 'asc').map((r) => r.id)).toEqual(['a', 'b', 'c', 'failed']);
    expect(sortRuns(runs, 'e2e', 'desc').map((r) => r.id)).toEqual(['c', 'b', 'a', 'failed']);
    expect(sortRuns(runs, 'users', 'asc').map((r) => r.id)).toEqual(['a', 'failed', 'b', 'c']);
    expect(sortRuns(runs, 'service_ttft', 'asc').map((r) => r.id)).toEqual(['a', 'b', 'c', 'failed']);
    expect(sortRuns(runs, 'status', 'asc')[0]!.id).toBe('failed');
  });
  it('a click on the sorted column flips it; another column starts at its natural order', () => {
    expect(nextSort({ key: 'date', dir: 'desc' }, 'date')).toEqual({ key: 'date', dir: 'asc' });
    expect(nextSort({ key: 'date', dir: 'desc' }, 'users')).toEqual({ key: 'users', dir: 'asc' });
    expect(nextSort({ key: 'users', dir: 'asc' }, 'date')).toEqual({ key: 'date', dir: 'desc' });
  });
  it('dates read as "YYYY-MM-DD HH:MM" in local time; none is "–"', () => {
    const d = new Date(2026, 10, 28, 1, 5);
    expect(formatRunDate(d.toISOString())).toBe('2026-11-28 01:05');
    expect(formatRunDate('')).toBe('–');
  });
});
