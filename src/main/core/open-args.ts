/**
 * Opening runs from outside the window: `kvscope open <run>`, files passed to the app on its
 * command line (or forwarded by a second instance), Finder's open-file, the File menu and drag and
 * drop. Accepted: a `.kvscope` portable run file, an event log (`events.jsonl`, `*.jsonl`,
 * `*.jsonl.gz`), a run folder holding one, or the id of a run already in the library. A run that is
 * already in the library (or bundled) opens in place; anything else is imported (copied) so it
 * survives the original moving away.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import type { OpenedRun } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { importRun } from './runs-library';
import { checkRunId, type RunStore } from './run-store';

export type OpenTargetKind = 'kvscope-file' | 'event-log' | 'run-folder';

export type OpenTarget = { kind: OpenTargetKind; path: string } | { kind: 'library-run'; runId: string };

/** `--open-run=<id>`: how `kvscope open` hands a library run id (not a path) to the desktop app. */
export const OPEN_RUN_FLAG = '--open-run=';

export const ACCEPTED_DESCRIPTION = 'a .kvscope file, an events.jsonl (or .jsonl.gz) event log, a run folder holding one, or a run id from the library';

/** Name-only test: could this file be a run? (used for drop zones and dialogs before any I/O). */
export function looksLikeRunFile(name: string): OpenTargetKind | null {
  const n = name.toLowerCase();
  if (n.endsWith('.kvscope')) return 'kvscope-file';
  if (n.endsWith('.jsonl') || n.endsWith('.jsonl.gz')) return 'event-log';
  return null;
}

export interface ArgvFiles {
  /** Absolute paths, in the order given. */
  paths: string[];
  /** Library run ids passed with --open-run=. */
  runIds: string[];
}

/**
 * The files an Electron process was asked to open, from its argv. Electron's argv is
 * `[exe, ...args]` when packaged and `[electron, appPath, ...args]` when started as `electron .`
 * (process.defaultApp). Chromium adds its own switches to a second instance's argv
 * (e.g. --allow-file-access-from-files), so every `-`-prefixed argument is skipped except
 * --open-run=; after a bare `--` everything is a path. Relative paths resolve against `cwd` (for a
 * second instance: its working directory, which Electron passes along).
 */
export function filesFromArgv(argv: readonly string[], options: { defaultApp: boolean; cwd: string }): ArgvFiles {
  const out: ArgvFiles = { paths: [], runIds: [] };
  const args = argv.slice(options.defaultApp ? 2 : 1);
  let literal = false;
  for (const a of args) {
    if (!literal && a === '--') {
      literal = true;
      continue;
    }
    if (!literal && a.startsWith(OPEN_RUN_FLAG)) {
      const id = a.slice(OPEN_RUN_FLAG.length);
      if (id) out.runIds.push(id);
      continue;
    }
    if (!literal && a.startsWith('-')) continue;
    if (a === '' || a === '.') continue;
    out.paths.push(isAbsolute(a) ? a : resolve(options.cwd, a));
  }
  return out;
}

async function statOrNull(path: string) {
  try {
    return await stat(path);
  } catch {
    return null;
  }
}

/** What a path on disk is, or a clear error saying what would have been accepted. */
export async function classifyPath(path: string): Promise<{ kind: OpenTargetKind; path: string }> {
  const s = await statOrNull(path);
  if (!s) throw new CodedError('not_found', `no such file or folder: ${path}`);
  if (s.isDirectory()) {
    for (const name of ['events.jsonl', 'events.jsonl.gz']) {
      if ((await statOrNull(join(path, name)))?.isFile()) return { kind: 'run-folder', path };
    }
    throw new CodedError('invalid_argument', `${path} is a folder with no events.jsonl or events.jsonl.gz: not a run folder`);
  }
  const kind = looksLikeRunFile(basename(path));
  if (!kind) throw new CodedError('invalid_argument', `cannot open ${path}: expected ${ACCEPTED_DESCRIPTION}`);
  return { kind, path };
}

/**
 * `kvscope open <arg>`: an existing path wins; otherwise an id of a run in the library (or a bundled
 * `sample:<name>`). Errors name both readings so a typo is easy to see.
 */
export async function resolveOpenArgument(arg: string, options: { cwd: string; store: RunStore }): Promise<OpenTarget> {
  const text = String(arg ?? '').trim();
  if (!text) throw new CodedError('invalid_argument', `kvscope open needs ${ACCEPTED_DESCRIPTION}`);
  const path = isAbsolute(text) ? text : resolve(options.cwd, text);
  if (await statOrNull(path)) return classifyPath(path);
  if (await libraryHas(options.store, text)) return { kind: 'library-run', runId: text };
  throw new CodedError('not_found', `${text}: no such file or folder, and no run with that id in ${options.store.runsDir} (expected ${ACCEPTED_DESCRIPTION})`);
}

async function libraryHas(store: RunStore, id: string): Promise<boolean> {
  try {
    if (!id.startsWith('sample:')) checkRunId(id);
    return (await statOrNull(await store.logPath(id)))?.isFile() ?? false;
  } catch {
    return false;
  }
}

async function real(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/**
 * The library id of a path that is already a library run (a run folder in the runs folder, its
 * events.jsonl) or a bundled sample; null for anything else.
 */
export async function libraryIdForPath(store: RunStore, target: { kind: OpenTargetKind; path: string }): Promise<string | null> {
  const p = await real(target.path);
  const runsDir = await real(store.runsDir);
  const folder = target.kind === 'run-folder' ? p : basename(p) === 'events.jsonl' ? dirname(p) : null;
  if (folder && dirname(folder) === runsDir) {
    const id = basename(folder);
    if ((await statOrNull(join(folder, 'meta.json')))?.isFile()) return id;
  }
  if (store.samplesDir && target.kind === 'event-log' && p.endsWith('.jsonl.gz') && dirname(p) === (await real(store.samplesDir))) {
    return `sample:${basename(p, '.jsonl.gz')}`;
  }
  return null;
}

/** Makes a target viewable: a library run opens as it is; a file or folder from elsewhere is imported. */
export async function openTarget(store: RunStore, target: OpenTarget): Promise<OpenedRun> {
  if (target.kind === 'library-run') {
    if (!(await libraryHas(store, target.runId))) throw new CodedError('not_found', `no run ${target.runId} in the library`);
    return { runId: target.runId, imported: false, listing: await listingOf(store, target.runId) };
  }
  const inLibrary = await libraryIdForPath(store, target);
  if (inLibrary) return { runId: inLibrary, imported: false, listing: await listingOf(store, inLibrary) };
  let source = target.path;
  if (target.kind === 'run-folder' && !(await statOrNull(join(source, 'events.jsonl')))?.isFile()) {
    // importRun reads a folder's events.jsonl; a folder with only the compressed log gives that file.
    source = join(source, 'events.jsonl.gz');
  }
  const listing = await importRun(store, { path: source });
  return { runId: listing.id, imported: true, listing };
}

/** openPath for the bridge: classify, then open or import. */
export async function openPath(store: RunStore, path: string): Promise<OpenedRun> {
  const text = String(path ?? '');
  if (!text || !isAbsolute(text)) throw new CodedError('invalid_argument', `openPath needs an absolute path (got ${JSON.stringify(text)})`);
  return openTarget(store, await classifyPath(text));
}

async function listingOf(store: RunStore, id: string) {
  const found = (await store.list()).find((r) => r.id === id);
  if (!found) throw new CodedError('not_found', `no run ${id}`);
  return found;
}

/**
 * The Electron binary that `npm install` put under `appRoot`, or why there is none. electron's
 * own index.js throws when its install script could not download the binary (no internet, or
 * ELECTRON_SKIP_BINARY_DOWNLOAD=1); path.txt names the binary inside node_modules/electron/dist.
 */
export function findElectronBinary(appRoot: string, readText: (p: string) => string | null, exists: (p: string) => boolean): { path: string } | { reason: string } {
  const pkgDir = join(appRoot, 'node_modules', 'electron');
  if (!exists(join(pkgDir, 'package.json'))) return { reason: 'the electron package is not installed (npm install it, or use a packaged KV Scope)' };
  const rel = readText(join(pkgDir, 'path.txt'))?.trim();
  const override = process.env.ELECTRON_OVERRIDE_DIST_PATH;
  const binary = override ? join(override, rel || 'electron') : rel ? join(pkgDir, 'dist', rel) : null;
  if (!binary || !exists(binary)) {
    return { reason: 'the Electron binary is not installed (no internet to download it; run `npm rebuild electron` where there is)' };
  }
  return { path: binary };
}

export type DumpEngine = 'tensorrt_llm' | 'vllm';

/**
 * File → Import Engine Dump: a dump of TensorRT-LLM's or vLLM's KV-cache events becomes a run, by
 * the agent's own translator (`python3 -m kvscope_agent translate`, standard library only), run
 * locally on a scratch folder that is then imported like any run folder. The translator's message
 * comes back verbatim when it refuses the dump.
 */
export async function importEngineDump(
  store: RunStore,
  options: { agentDir: string; python: string; path: string; engine: string; timeoutMs?: number },
): Promise<OpenedRun> {
  const engine = String(options.engine ?? '');
  if (engine !== 'tensorrt_llm' && engine !== 'vllm') throw new CodedError('invalid_argument', `engine: expected tensorrt_llm or vllm, not ${JSON.stringify(engine)}`, { field: 'engine' });
  const path = String(options.path ?? '');
  if (!isAbsolute(path)) throw new CodedError('invalid_argument', `the dump needs an absolute path (got ${JSON.stringify(path)})`);
  if (!(await statOrNull(path))?.isFile()) throw new CodedError('not_found', `no such dump file: ${path}`);
  const scratch = await mkdtemp(join(tmpdir(), 'kvscope-dump-'));
  const name = basename(path).replace(/\.(jsonl|json)$/i, '') || 'engine-dump';
  const out = join(scratch, name.replace(/[^A-Za-z0-9._-]+/g, '-'));
  try {
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolveRun, reject) => {
      const child = spawn(options.python, ['-m', 'kvscope_agent', 'translate', '--engine', engine, '--input', path, '--out', out], {
        env: { ...process.env, PYTHONPATH: options.agentDir },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (b: Buffer) => {
        if (err.length < 64 * 1024) err += b.toString();
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new CodedError('not_found', `cannot run ${options.python} to translate the dump (${e.message}); set the Python for "local" in Settings`));
      });
      child.on('close', (c) => {
        clearTimeout(timer);
        resolveRun({ code: c, stderr: err });
      });
    });
    if (code !== 0) throw new CodedError('bad_run', `the ${engine} dump could not be translated: ${stderr.trim().split('\n').slice(-6).join(' | ') || `exit ${code}`}`);
    const listing = await importRun(store, { path: out });
    return { runId: listing.id, imported: true, listing };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
