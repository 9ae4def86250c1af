/**
 * A stand-in for the window's bridge, for tests of the window's run cache (src/renderer/run-data.ts)
 * on recorded events: its run `r` is opened from an index made of given lines, pushes are sent by
 * the test, and animation frames run when the test says.
 */
import type { KvScopeApi, PushMessage, RunIndexBytes, RunListing } from '../../src/shared/api';
import type { Result } from '../../src/shared/result';
import type { KvEvent } from '../../src/shared/protocol';
import { encodeRunIndex, RunIndexBuilder } from '../../src/shared/run-index/run-index';

/** The plain-form index of `lines`: as the core sends a run it follows (with its analyzer), or one it no longer follows. */
export function indexOf(lines: readonly KvEvent[], followed: boolean): Uint8Array {
  const b = new RunIndexBuilder();
  for (const e of lines) b.push(e);
  if (!followed) b.finish();
  return encodeRunIndex(b.content({ withAnalyzer: followed }), null, { compact: false });
}

export interface StandInBridge {
  api: KvScopeApi;
  /** 'index' or 'log' for each read of the run. */
  reads: string[];
  push(m: PushMessage): void;
  /** Runs the animation frames asked for so far (the cache applies pushed batches in one). */
  flush(): void;
}

/**
 * `index()`: what loadRunIndex answers when asked; `listRuns`: the runs list (default: empty).
 * Replaces globalThis.requestAnimationFrame.
 */
export function standInBridge(index: () => Uint8Array, listRuns: () => Promise<Result<RunListing[]>> = async () => ({ ok: true, value: [] })): StandInBridge {
  const frames: Array<() => void> = [];
  (globalThis as { requestAnimationFrame?: (f: () => void) => number }).requestAnimationFrame = (f) => frames.push(f);
  let listener: ((m: PushMessage) => void) | null = null;
  const reads: string[] = [];
  const api = {
    onPush: (l: (m: PushMessage) => void) => {
      listener = l;
      return () => undefined;
    },
    loadRunIndex: async () => (reads.push('index'), { ok: true, value: { listing: { id: 'r', status: 'running' }, index: index() } as unknown as RunIndexBytes }),
    loadRun: async () => (reads.push('log'), { ok: false, error: { code: 'internal', message: 'the stand-in has no log' } }),
    listRuns,
  } as unknown as KvScopeApi;
  return { api, reads, push: (m) => listener!(m), flush: () => frames.splice(0).forEach((f) => f()) };
}
