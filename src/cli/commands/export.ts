/**
 * `kvscope export <run> --format perfetto|perfetto-proto|csv|kvscope -o <dest>`: a trace (Chrome
 * Trace Event JSON, or Perfetto's protobuf), CSV tables or a portable run file, streamed from the
 * run's log. A log with bad lines still exports: what was
 * skipped goes to stderr (and, for a trace, into its metadata). Progress goes to stderr.
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Command } from 'commander';
import { resolveEventLog } from '../../main/core/event-files';
import { CSV_TABLES, type CsvTable } from '../../main/core/export/csv';
import { isKvscopeFile, readKvscopeHeader } from '../../main/core/export/kvscope-file';
import { EXPORT_FORMATS, exportLog, skippedSummary, type ExportFormat } from '../../main/core/export/run-export';
import { defaultRunsDir } from '../../main/core/paths';
import type { RunMeta } from '../../main/core/run-store';
import { EXPORT_FORMAT_CHOICES } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { writeStdout, writeStderr } from '../terminal';

/** A run argument: a path (run folder, events.jsonl[.gz], .kvscope) or a run id in the runs folder. */
export async function resolveRunArg(arg: string, runsDir: string): Promise<{ logFile: string; meta: RunMeta }> {
  let path = arg;
  if (!existsSync(path) && /^[A-Za-z0-9._-]{1,128}$/.test(arg) && existsSync(join(runsDir, arg))) path = join(runsDir, arg);
  const logFile = await resolveEventLog(path);
  if (isKvscopeFile(logFile)) return { logFile, meta: (await readKvscopeHeader(logFile)).meta };
  const folder = (await stat(path)).isDirectory() ? path : null;
  if (folder) {
    try {
      return { logFile, meta: JSON.parse(await readFile(join(folder, 'meta.json'), 'utf8')) as RunMeta };
    } catch {
      // A bare folder with only a log: described below like a bare file.
    }
  }
  const name = basename(folder ?? logFile).replace(/\.jsonl(\.gz)?$/, '');
  const id = name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 128) || 'run';
  // status "ok" lets the runs library derive the status from the log itself (run-store baseListing).
  return { logFile, meta: { id, name, host: 'local', status: 'ok', createdAt: (await stat(logFile)).mtime.toISOString() } };
}

function defaultDest(format: ExportFormat, meta: RunMeta, table?: CsvTable): string {
  const base = meta.id.replace(/^sample:/, '');
  if (format === 'csv' && table) return `${base}-${table}.csv`;
  return `${base}${EXPORT_FORMAT_CHOICES.find((f) => f.id === format)!.ext}`;
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('export a run: a trace (perfetto: Chrome Trace Event JSON for Perfetto, DevTools and chrome://tracing; perfetto-proto: Perfetto\'s native protobuf), CSV tables, or a portable .kvscope run file')
    .argument('<run>', 'a run folder, events.jsonl[.gz], a .kvscope file, or a run id in the runs folder')
    .option('-f, --format <format>', `one of ${EXPORT_FORMATS.join(', ')}`, 'perfetto')
    .option('-o, --output <path>', 'the file to write (for csv without --table: the folder)')
    .option('--table <table>', `csv: write only this table to the output file (${CSV_TABLES.join(', ')})`)
    .option('--runs-dir <dir>', 'runs folder for run ids (default: the app data folder)')
    .option('-q, --quiet', 'no progress on stderr')
    .action(async (run: string, opts: { format: string; output?: string; table?: string; runsDir?: string; quiet?: boolean }) => {
      const format = opts.format as ExportFormat;
      if (!EXPORT_FORMATS.includes(format)) throw new CodedError('invalid_argument', `--format must be one of ${EXPORT_FORMATS.join(', ')}`);
      if (opts.table !== undefined && format !== 'csv') throw new CodedError('invalid_argument', '--table applies to --format csv only');
      if (opts.table !== undefined && !CSV_TABLES.includes(opts.table as CsvTable)) throw new CodedError('invalid_argument', `--table must be one of ${CSV_TABLES.join(', ')}`);
      const table = opts.table as CsvTable | undefined;
      const { logFile, meta } = await resolveRunArg(run, opts.runsDir ?? defaultRunsDir());
      const dest = opts.output ?? defaultDest(format, meta, table);
      let lastLine = 0;
      let lastMessage = '';
      const started = Date.now();
      const result = await exportLog({
        logFile,
        meta,
        format,
        dest,
        table,
        onProgress: (p) => {
          const now = Date.now();
          if (opts.quiet || p.message === lastMessage || (now - lastLine < 1000 && p.fraction !== 1)) return;
          lastLine = now;
          lastMessage = p.message;
          writeStderr(`export ${p.stage}: ${p.message}\n`);
        },
      });
      for (const line of skippedSummary(result)) writeStderr(`kvscope export: ${line}\n`);
      const p = result.perfetto;
      if (p && p.moves.unmatched > 0) {
        writeStderr(`kvscope export: ${p.moves.unmatched} of ${p.moves.total} block move(s) matched no copy (listed in the trace metadata)\n`);
      }
      if (!opts.quiet) writeStderr(`export done in ${((Date.now() - started) / 1000).toFixed(2)} s\n`);
      for (const f of result.files) writeStdout(`${f}\n`);
    });
}
