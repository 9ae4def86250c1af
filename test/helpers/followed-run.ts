/**
 * A run the core follows exactly as it follows a Local run — its tail reading the run's folder on
 * the host, its in-memory index growing with each line, each batch pushed to the windows — whose
 * log the test writes: the test appends lines to the host's events.jsonl and ends the run by
 * writing its exit file. For tests of a run watched live that wait on the core's pushes, never on
 * an agent's timing or the clock.
 */
import { appendFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Core } from '../../src/main/core/app-core';
import type { PushMessage, RunListing } from '../../src/shared/api';

export const FOLLOW_PYTHON = '/usr/bin/python3';

export interface FollowedRun {
  id: string;
  /** Appends whole lines to the host's log; resolves once the core has pushed them all. */
  append(lines: readonly string[]): Promise<void>;
  /** Writes the run's exit file (status 0); resolves with the final status the core pushes. */
  end(): Promise<RunListing['status']>;
}

const seqOf = (line: string): number => (JSON.parse(line) as { seq: number }).seq;

/** Starts following run `id` (a new folder in the core's runs folder), its log holding `first` so far. */
export async function followRun(core: Core, id: string, first: readonly string[]): Promise<FollowedRun> {
  const hostDir = mkdtempSync(join(tmpdir(), 'kvscope-followed-host-'));
  const log = join(hostDir, 'events.jsonl');
  writeFileSync(log, first.map((l) => `${l}\n`).join(''));
  const runDir = core.store.runDir(id);
  mkdirSync(runDir, { recursive: true });
  // A run whose follower stopped (status incomplete), as Resume finds it.
  writeFileSync(join(runDir, 'meta.json'), JSON.stringify({ id, name: id, host: 'local', status: 'incomplete', createdAt: '2026-12-01T00:00:00.000Z', remote_dir: hostDir, python: FOLLOW_PYTHON }));

  let pushedSeq = -1;
  let waiters: Array<{ ok: () => boolean; resolve: () => void }> = [];
  let status: RunListing['status'] | null = null;
  core.addPushListener((m: PushMessage) => {
    if (m.kind === 'run-events' && m.runId === id) {
      for (const e of m.events) pushedSeq = Math.max(pushedSeq, e.seq);
    } else if (m.kind === 'run-status' && m.runId === id && m.status !== 'running') {
      status = m.status;
    } else return;
    waiters = waiters.filter((w) => !(w.ok() && (w.resolve(), true)));
  });
  const until = (ok: () => boolean) => new Promise<void>((resolve) => (ok() ? resolve() : waiters.push({ ok, resolve })));

  const resumed = await core.handlers.resumeRun(id);
  if (!resumed.ok) throw new Error(`resume ${id}: ${resumed.error.message}`);
  if (first.length) await until(() => pushedSeq >= seqOf(first.at(-1)!));
  return {
    id,
    async append(lines) {
      if (!lines.length) return;
      appendFileSync(log, lines.map((l) => `${l}\n`).join(''));
      const last = seqOf(lines.at(-1)!);
      await until(() => pushedSeq >= last);
    },
    async end() {
      writeFileSync(join(hostDir, 'exit'), '0\n');
      await until(() => status !== null);
      return status!;
    },
  };
}
