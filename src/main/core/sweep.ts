/**
 * The seed's sweep: one run per user count per host. Hosts run in parallel, each host's runs one
 * after another (they would compete for the same GPU), and one host's failure never stops the
 * others. Progress goes out as `sweep-status` pushes carrying the whole table.
 */
import { randomBytes } from 'node:crypto';
import type { PushMessage, SweepRequest, SweepRow } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { parseUserCounts } from '../../shared/user-counts';
import type { RunManager } from './runs';

/** `--users` of the CLI's sweep as counts, or an invalid_argument error naming the field. */
export function sweepUsers(spec: string): number[] {
  const counts = parseUserCounts(spec);
  if (typeof counts === 'string') throw new CodedError('invalid_argument', `--users: ${counts}`, { field: 'users' });
  return counts;
}

export class SweepRunner {
  constructor(
    private readonly runs: RunManager,
    private readonly push?: (m: PushMessage) => void,
  ) {}

  /** Starts the sweep in the background; resolves with its id at once. */
  async start(req: SweepRequest): Promise<{ sweepId: string }> {
    const sweepId = `sweep-${Date.now()}-${randomBytes(3).toString('hex')}`;
    void this.run(req, sweepId);
    return { sweepId };
  }

  /** Runs the whole sweep; resolves with the final table. */
  async run(req: SweepRequest, sweepId = `sweep-${Date.now()}`, onRow?: (rows: SweepRow[]) => void): Promise<SweepRow[]> {
    if (!req || !Array.isArray(req.hosts) || req.hosts.length === 0) throw new CodedError('invalid_argument', 'a sweep needs at least one host', { field: 'hosts' });
    if (!Array.isArray(req.users) || req.users.length === 0 || !req.users.every((u) => Number.isInteger(u) && u >= 1)) {
      throw new CodedError('invalid_argument', 'a sweep needs user counts (integers ≥ 1)', { field: 'users' });
    }
    const rows: SweepRow[] = [];
    for (const host of req.hosts) for (const users of req.users) rows.push({ host, users, runId: null, status: 'pending', e2e_ns: null, ttft_ns_mean: null, error: null });
    const emit = (done: boolean) => {
      const copy = rows.map((r) => ({ ...r }));
      this.push?.({ kind: 'sweep-status', sweepId, rows: copy, done });
      onRow?.(copy);
    };
    emit(false);
    const scheduler = this.runs.o.scheduler;
    await Promise.all(
      req.hosts.map(async (host) => {
        // A Slurm login node: the host's whole sweep is one job array (core/slurm).
        if (scheduler && (await scheduler.handles({ host, workload: {}, slurm: req.slurm }))) return scheduler.sweepHost(host, req, rows, () => emit(false));
        for (const row of rows.filter((r) => r.host === host)) {
          try {
            const started = await this.runs.start({
              host,
              python: req.python,
              name: `${req.name ?? 'sweep'} ${host} ${row.users}u`,
              workload: { ...req.workload, users: row.users },
            });
            row.runId = started.runId;
            row.status = 'running';
            emit(false);
            const r = await this.runs.wait(started.runId);
            row.status = r.status;
            row.error = r.error?.message ?? null;
            const listing = (await this.runs.o.store.list()).find((l) => l.id === started.runId);
            row.e2e_ns = listing?.e2e_ns ?? null;
            row.ttft_ns_mean = listing?.ttft_ns_mean ?? null;
          } catch (e) {
            row.status = 'error';
            row.error = (e as Error).message;
            // A host that cannot even be reached fails its remaining rows at once.
            if (e instanceof CodedError && ['ssh_error', 'auth_failed', 'host_key_changed', 'host_key_unknown'].includes(e.code)) {
              for (const r of rows.filter((x) => x.host === host && x.status === 'pending')) {
                r.status = 'error';
                r.error = `not run: ${(e as Error).message}`;
              }
              emit(false);
              return;
            }
          }
          emit(false);
        }
      }),
    );
    emit(true);
    return rows;
  }
}
