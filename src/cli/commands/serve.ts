/** `kvscope serve`: the app in a browser, for machines without a desktop session. */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { createCore } from '../../main/core/app-core';
import { appPaths, defaultDataDir, defaultRunsDir, findAppRoot } from '../../main/core/paths';
import { startServer } from '../../main/core/serve';
import { SettingsStore } from '../../main/core/settings';
import { CodedError } from '../../shared/result';
import { writeStdout, writeStderr } from '../terminal';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the KV Scope window to a browser on 127.0.0.1 (prints its URL, with a secret token, first)')
    .option('--port <n>', 'port to listen on (default: any free port)', (v) => Number.parseInt(v, 10))
    .option('--runs-dir <dir>', 'runs folder (default: the app data folder)')
    .action(async (opts: { port?: number; runsDir?: string }) => {
      if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)) {
        throw new CodedError('invalid_argument', `--port must be 0..65535`);
      }
      const paths = appPaths(findAppRoot(dirname(fileURLToPath(import.meta.url))));
      if (!existsSync(paths.rendererDir)) {
        throw new CodedError('not_found', `the window is not built (${paths.rendererDir} is missing): run \`npm run build\` first`);
      }
      // The desktop app's settings.json, so Settings made in either window persist, and the runs
      // folder chosen there is the one served.
      const settings = new SettingsStore(join(defaultDataDir(), 'settings.json'));
      const runsDir = opts.runsDir ?? (await settings.load()).runsDir ?? defaultRunsDir();
      const core = await createCore({ runsDir, samplesDir: paths.samplesDir, shell: 'browser', settingsStore: settings });
      const server = await startServer({ core, staticDir: paths.rendererDir, port: opts.port });
      // The URL is the first stdout line: tests and tunnels read it.
      writeStdout(`${server.url}\n`);
      writeStderr(`KV Scope is serving on 127.0.0.1:${server.port} (only this machine can connect; Ctrl+C stops)\n`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          server.close().then(resolve, resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
