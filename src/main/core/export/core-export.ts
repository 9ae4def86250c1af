/**
 * The export actions behind the bridge (File → Export in the app): a run id from the library to a
 * file the user chose, with `progress` pushes while it streams.
 */
import { isAbsolute } from 'node:path';
import type { ExportRunOptions, ExportRunResult, PushMessage } from '../../../shared/api';
import { CodedError } from '../../../shared/result';
import type { RunMeta, RunStore } from '../run-store';
import { exportLog, skippedSummary, type ExportFormat } from './run-export';

const SAMPLE_PREFIX = 'sample:';

export async function exportRunFromStore(
  store: RunStore,
  push: (m: PushMessage) => void,
  runId: string,
  format: ExportFormat,
  destPath: string,
  options: ExportRunOptions = {},
): Promise<ExportRunResult> {
  const id = String(runId);
  if (typeof destPath !== 'string' || !isAbsolute(destPath)) throw new CodedError('invalid_argument', `exportRun needs an absolute destination path (got ${JSON.stringify(destPath)})`);
  const logFile = await store.logPath(id);
  const meta: RunMeta = id.startsWith(SAMPLE_PREFIX)
    ? { id: id.slice(SAMPLE_PREFIX.length), name: id.slice(SAMPLE_PREFIX.length), host: 'sample', status: 'ok', createdAt: '' }
    : await store.readMeta(id);
  const started = Date.now();
  let lastPush = 0;
  const result = await exportLog({
    logFile,
    meta,
    format,
    dest: destPath,
    table: options.table,
    onProgress: (p) => {
      const now = Date.now();
      // Batched, never one push per chunk: at most ~4 a second, plus the last.
      if (now - lastPush < 250 && p.fraction !== 1) return;
      lastPush = now;
      const elapsed = (now - started) / 1000;
      const etaS = p.fraction && p.fraction > 0.02 ? Math.max(0, (elapsed / p.fraction) * (1 - p.fraction)) : null;
      push({ kind: 'progress', runId: id, stage: `export-${format}`, fraction: p.fraction, etaS, message: p.message });
    },
  });
  push({ kind: 'progress', runId: id, stage: `export-${format}`, fraction: 1, etaS: 0, message: `exported to ${result.files.join(', ')}` });
  return {
    files: result.files,
    events: result.events,
    badLines: result.badLines,
    skipped: skippedSummary(result),
    unmatchedMoves: result.perfetto?.moves.unmatched ?? null,
  };
}
