/**
 * `kvscope open <run>`: the desktop app, started on a run. The run is a .kvscope file, an event log,
 * a run folder, or a library run id (open-args.ts). The argument is checked here, before anything
 * starts, so a typo is an error in the terminal rather than a dialog. Where the Electron binary is
 * absent (it is downloaded at install time, which needs internet), it says so and serves the same
 * window to a browser instead, with the run already opened.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { createCore } from '../../main/core/app-core';
import { findElectronBinary, OPEN_RUN_FLAG, openTarget, resolveOpenArgument, type OpenTarget } from '../../main/core/open-args';
import { appPaths, defaultDataDir, defaultRunsDir, findAppRoot } from '../../main/core/paths';
import { RunStore } from '../../main/core/run-store';
import { SettingsStore } from '../../main/core/settings';
import { startServer } from '../../main/core/serve';
import { CodedError } from '../../shared/result';
import { writeStdout, writeStderr } from '../terminal';

export type OpenPlan = { mode: 'electron'; command: string; args: string[] } | { mode: 'serve'; reason: string };

/** The argv Electron gets for a target: the app folder, then a path or --open-run=<id>. */
export function electronArgsFor(appRoot: string, target: OpenTarget): string[] {
  return [appRoot, target.kind === 'library-run' ? `${OPEN_RUN_FLAG}${target.runId}` : target.path];
}

/** Desktop app when its binary is here (and not --browser); otherwise the browser, with the reason. */
export function planOpen(options: { appRoot: string; target: OpenTarget; browser: boolean; electron: { path: string } | { reason: string } }): OpenPlan {
  if (options.browser) return { mode: 'serve', reason: '--browser was given' };
  if ('reason' in options.electron) return { mode: 'serve', reason: options.electron.reason };
  return { mode: 'electron', command: options.electron.path, args: electronArgsFor(options.appRoot, options.target) };
}

const readText = (p: string) => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return null;
  }
};

export function registerOpen(program: Command): void {
  program
    .command('open')
    .description('open a run in the KV Scope window (a .kvscope file, events.jsonl[.gz], a run folder, or a run id)')
    .argument('<run>', 'a .kvscope file, an events.jsonl or events.jsonl.gz log, a run folder, or a run id from the library')
    .option('--browser', 'serve the window to a browser (as `kvscope serve`) even where the desktop app could start')
    .option('--port <n>', 'with the browser: port to listen on (default: any free port)', (v) => Number.parseInt(v, 10))
    .option('--runs-dir <dir>', 'runs folder (default: the app data folder)')
    .action(async (run: string, opts: { browser?: boolean; port?: number; runsDir?: string }) => {
      if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)) {
        throw new CodedError('invalid_argument', '--port must be 0..65535');
      }
      const appRoot = findAppRoot(dirname(fileURLToPath(import.meta.url)));
      const paths = appPaths(appRoot);
      // The same runs folder the desktop app uses: Settings' choice, else the data folder's runs/.
      const settings = new SettingsStore(join(defaultDataDir(), 'settings.json'));
      const runsDir = opts.runsDir ?? (await settings.load()).runsDir ?? defaultRunsDir();
      const store = new RunStore(runsDir, paths.samplesDir);
      const target = await resolveOpenArgument(run, { cwd: process.cwd(), store });
      const plan = planOpen({ appRoot, target, browser: Boolean(opts.browser), electron: findElectronBinary(appRoot, readText, existsSync) });

      if (plan.mode === 'electron') {
        // Detached: the terminal is free again; a running KV Scope takes the file (single instance).
        const env = { ...process.env };
        delete env.ELECTRON_RUN_AS_NODE;
        if (opts.runsDir) writeStderr('KV Scope: --runs-dir applies to the browser window; the desktop app uses the runs folder from its Settings\n');
        const child = spawn(plan.command, plan.args, { detached: true, stdio: 'ignore', env });
        child.unref();
        writeStderr(`KV Scope: opening ${target.kind === 'library-run' ? target.runId : target.path} in the desktop app\n`);
        return;
      }

      if (!existsSync(paths.rendererDir)) {
        throw new CodedError('not_found', `the window is not built (${paths.rendererDir} is missing): run \`npm run build\` first`);
      }
      writeStderr(
        [
          `KV Scope: the desktop app cannot start here: ${plan.reason}.`,
          '  Serving the same window to your browser instead (as `kvscope serve`), with the run opened.',
          '',
        ].join('\n'),
      );
      const core = await createCore({ runsDir, samplesDir: paths.samplesDir, shell: 'browser', settingsStore: settings });
      const opened = await openTarget(core.store, target);
      if (opened.imported) writeStderr(`  imported into the library as ${opened.runId}\n`);
      const server = await startServer({ core, staticDir: paths.rendererDir, port: opts.port });
      // The URL is the first stdout line (as with kvscope serve): tests and tunnels read it.
      writeStdout(`${server.url}#/runs/${encodeURIComponent(opened.runId)}/live\n`);
      writeStderr(`  open that URL; only this machine can connect (127.0.0.1:${server.port}). Ctrl+C stops.\n`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          server.close().then(resolve, resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
