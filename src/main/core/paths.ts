/**
 * Where KV Scope keeps things. The CLI and the desktop app share one data folder, the one Electron
 * calls `userData` for an app named "KV Scope", so a run made with `kvscope run` shows in the app.
 * KVSCOPE_DATA_DIR overrides it (tests, portable installs).
 */
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { existsSync } from 'node:fs';

export const APP_DIR_NAME = 'KV Scope';

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (env.KVSCOPE_DATA_DIR) return resolve(env.KVSCOPE_DATA_DIR);
  if (platform === 'darwin') return join(homedir(), 'Library', 'Application Support', APP_DIR_NAME);
  if (platform === 'win32') return join(env.APPDATA ?? join(homedir(), 'AppData', 'Roaming'), APP_DIR_NAME);
  return join(env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), APP_DIR_NAME);
}

export function defaultRunsDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultDataDir(env), 'runs');
}

/**
 * The app's install root (holds resources/ and out/), found by walking up from a module's folder:
 * dist-cli/ for the CLI bundle, out/main/ for Electron, src/... under tests.
 */
export function findAppRoot(fromDir: string): string {
  let dir = fromDir;
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'resources', 'agent')) && existsSync(join(dir, 'package.json'))) return dir;
    dir = dirname(dir);
  }
  throw new Error(`cannot find the KV Scope install (resources/agent) above ${fromDir}`);
}

export interface AppPaths {
  root: string;
  agentDir: string;
  samplesDir: string;
  rendererDir: string;
}

export function appPaths(root: string): AppPaths {
  return {
    root,
    agentDir: join(root, 'resources', 'agent'),
    samplesDir: join(root, 'resources', 'samples'),
    rendererDir: join(root, 'out', 'renderer'),
  };
}
