/**
 * The app's core as the renderer sees it: one handler per KvScopeApi method, transport-free.
 * Electron's ipc/ layer and the `kvscope serve` WebSocket bridge both wrap exactly this object.
 */
import type { AppInfo, CoreHandlers, PushMessage } from '../../shared/api';
import { err, toResult, type Result } from '../../shared/result';
import { VERSION } from '../../shared/version';
import { RunStore } from './run-store';
import { deleteRun, importRun, listProjections, renameRun, revealRun } from './runs-library';

export interface CoreOptions {
  runsDir: string;
  samplesDir: string | null;
  shell: AppInfo['shell'];
  versions?: Record<string, string>;
  /** Extra folders searched for projection.json files (bench results), besides runs and samples. */
  projectionDirs?: string[];
}

export interface Core {
  handlers: CoreHandlers;
  store: RunStore;
  /** Registers a push listener (one per window or WebSocket); returns its remover. */
  addPushListener(listener: (m: PushMessage) => void): () => void;
  push(message: PushMessage): void;
}

const notYet = async (): Promise<Result<never>> => err('unsupported', 'hosts and remote runs are not wired into this build yet');

export async function createCore(options: CoreOptions): Promise<Core> {
  const store = new RunStore(options.runsDir, options.samplesDir);
  await store.ensure();
  const listeners = new Set<(m: PushMessage) => void>();
  const handlers: CoreHandlers = {
    getAppInfo: () =>
      toResult(() => ({
        name: 'KV Scope',
        version: VERSION,
        shell: options.shell,
        versions: { node: process.versions.node, ...(options.versions ?? {}) },
        runsDir: options.runsDir,
      })),
    listRuns: () => toResult(() => store.list()),
    loadRun: (runId: string) => toResult(() => store.load(String(runId))),
    renameRun: (runId, name) => toResult(() => renameRun(store, runId, name)),
    deleteRun: (runId) => toResult(() => deleteRun(store, runId)),
    importRun: (source) => toResult(() => importRun(store, source)),
    revealRun: (runId) => toResult(() => revealRun(store, runId)),
    listProjections: () => toResult(() => listProjections([options.runsDir, options.samplesDir, ...(options.projectionDirs ?? [])])),
    // Issue 5 (hosts, runs over SSH): placeholders until the host service lands (same session).
    listHosts: notYet,
    saveHost: notYet,
    removeHost: notYet,
    probeHost: notYet,
    answerHostKey: notYet,
    providePassphrase: notYet,
    startRun: notYet,
    cancelRun: notYet,
    resumeRun: notYet,
    startSweep: notYet,
  };
  return {
    handlers,
    store,
    addPushListener(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    push(message) {
      for (const l of listeners) l(message);
    },
  };
}
