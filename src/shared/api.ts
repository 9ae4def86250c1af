/**
 * The one contract between the renderer and the app's core. The Electron preload object
 * `satisfies KvScopeApi`; the browser bridge (kvscope serve) implements the same type over a
 * WebSocket. Every call resolves to a Result (see result.ts); subscriptions return an unsubscribe
 * function. Add a method here first, then to `CORE_METHODS`, the preload and the core handlers:
 * test/unit/api-contract.test.ts fails until all four agree.
 */
import type { BadLine } from './events-reader';
import type { KvEvent } from './protocol';
import type { Result } from './result';
import type { RunAnalysis } from './run-analysis';

export interface AppInfo {
  name: string;
  version: string;
  /** "electron" in the desktop app, "browser" through kvscope serve. */
  shell: 'electron' | 'browser';
  versions: Record<string, string>;
  runsDir: string;
}

/** One row of the runs library. */
export interface RunListing {
  id: string;
  name: string;
  /** Where the run came from: "sample" (bundled), "local", or a host alias. */
  host: string;
  status: 'ok' | 'error' | 'cancelled' | 'running' | 'incomplete';
  createdAt: string;
  model: string | null;
  users: number | null;
  rounds: number | null;
  engine: string | null;
  gpu: string | null;
  e2e_ns: number | null;
  ttft_ns_mean: number | null;
  /** True for runs shipped with the app (read-only). */
  bundled: boolean;
}

/** A run loaded for viewing: all valid events (in seq order), what was skipped, and the summary. */
export interface LoadedRun {
  listing: RunListing;
  events: KvEvent[];
  badLines: BadLine[];
  badLineTotal: number;
  analysis: RunAnalysis;
}

/** Pushed from core to the renderer, batched (never one message per event). */
export type PushMessage =
  | { kind: 'run-events'; runId: string; events: KvEvent[] }
  | { kind: 'run-status'; runId: string; status: RunListing['status']; message?: string }
  | { kind: 'progress'; runId: string; stage: string; fraction: number | null; etaS: number | null; message: string };

export type Unsubscribe = () => void;

export interface KvScopeApi {
  getAppInfo(): Promise<Result<AppInfo>>;
  listRuns(): Promise<Result<RunListing[]>>;
  loadRun(runId: string): Promise<Result<LoadedRun>>;
  /** Receives pushed batches; returns the function that stops them. */
  onPush(listener: (message: PushMessage) => void): Unsubscribe;
}

/** Methods that are request/response calls (everything except subscriptions). */
export type CoreMethod = Exclude<keyof KvScopeApi, 'onPush'>;

/** The request/response methods, listed once for the preload, the IPC layer and the bridge. */
export const CORE_METHODS = ['getAppInfo', 'listRuns', 'loadRun'] as const satisfies readonly CoreMethod[];

/** What main/serve implement: each call with the renderer's arguments. */
export type CoreHandlers = { [K in CoreMethod]: KvScopeApi[K] };

/** IPC channel of a method; the push channel. */
export const ipcChannel = (method: CoreMethod): string => `kvscope:${method}`;
export const PUSH_CHANNEL = 'kvscope:push';
