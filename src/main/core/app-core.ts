/**
 * The app's core as the renderer sees it: one handler per KvScopeApi method, transport-free.
 * Electron's ipc/ layer and the `kvscope serve` WebSocket bridge both wrap exactly this object.
 */
import type { AppInfo, CoreHandlers, OpenFileDialogOptions, PushMessage, SettingsSnapshot, WhatIfProfile } from '../../shared/api';
import { err, toResult } from '../../shared/result';
import { VERSION } from '../../shared/version';
import { RunStore } from './run-store';
import { deleteRun, importRun, renameRun, revealRun } from './runs-library';
import { runWhatIf, whatIfProfiles } from './whatif';
import { importEngineDump, openPath } from './open-args';
import { exportRunFromStore } from './export/core-export';
import { saveImage } from './export/image-file';
import { SecretStore, type SafeStorageLike } from './secrets';
import { DEFAULT_SETTINGS, SettingsStore } from './settings';
import { createHostHandlers } from './host-handlers';
import { appPaths, findAppRoot } from './paths';
import { checkPythonPath } from './python-path';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** resources/agent of this install, or a path that makes runs fail with a clear "no agent" error. */
function defaultAgentDir(): string {
  try {
    return appPaths(findAppRoot(dirname(fileURLToPath(import.meta.url)))).agentDir;
  } catch {
    return 'resources/agent';
  }
}

export interface CoreOptions {
  runsDir: string;
  samplesDir: string | null;
  shell: AppInfo['shell'];
  versions?: Record<string, string>;
  /** settings.json; absent: settings last for this session only. */
  settingsFile?: string | null;
  /** An already-loaded settings store (the shell reads runsDir from it before the core exists). */
  settingsStore?: SettingsStore;
  /** secrets.json and the OS keychain adapter; absent: secrets stay in memory, never remembered. */
  secretsFile?: string | null;
  keychain?: SafeStorageLike | null;
  /** Data folder for hosts.json and the Local host's run folders (default: the runs folder's parent). */
  dataDir?: string;
  /** The agent package's folder (resources/agent); default: found above this module. */
  agentDir?: string;
  /** What only a desktop shell can do; absent (kvscope serve): those calls answer `unsupported`. */
  shellActions?: ShellActions;
}

/** Desktop-only actions the Electron shell injects (core never imports electron). */
export interface ShellActions {
  openFileDialog?(options: OpenFileDialogOptions): Promise<string | null>;
  notify?(title: string, body: string): void;
  /** Shows a file or folder in the OS file manager (after revealRun found it). */
  showItemInFolder?(path: string): void;
}

export interface Core {
  handlers: CoreHandlers;
  store: RunStore;
  settings: SettingsStore;
  secrets: SecretStore;
  /** Registers a push listener (one per window or WebSocket); returns its remover. */
  addPushListener(listener: (m: PushMessage) => void): () => void;
  push(message: PushMessage): void;
}

export async function createCore(options: CoreOptions): Promise<Core> {
  const store = new RunStore(options.runsDir, options.samplesDir);
  await store.ensure();
  const listeners = new Set<(m: PushMessage) => void>();
  // A window that cannot take a message (it closed, or the message cannot be encoded) must never
  // throw into whatever pushed it: a run's tail or a timer.
  const pushToAll = (message: PushMessage) => {
    for (const l of listeners) {
      try {
        l(message);
      } catch {
        /* that window misses this one message */
      }
    }
  };
  const settings = options.settingsStore ?? new SettingsStore(options.settingsFile ?? null);
  const secrets = new SecretStore(options.secretsFile ?? null, options.keychain ?? null);
  const shellActions = options.shellActions ?? {};
  const hostHandlers = createHostHandlers({
    store,
    push: pushToAll,
    dataDir: options.dataDir ?? dirname(options.runsDir),
    agentSourceDir: options.agentDir ?? defaultAgentDir(),
    secrets,
  });
  const pythonFor = async (alias: unknown): Promise<{ python?: string }> => {
    const python = typeof alias === 'string' ? (await settings.load()).pythonByHost[alias] : undefined;
    return python ? { python } : {};
  };
  /** Fills python (per host, single-host requests) and workload.sample_ms from Settings; malformed requests pass through to be refused where they are checked. */
  const withRunDefaults = async <R extends { python?: string; workload?: { sample_ms?: number } }>(request: R): Promise<R> => {
    if (!request || typeof request !== 'object' || !request.workload || typeof request.workload !== 'object') return request;
    const current = await settings.load();
    const host = (request as { host?: unknown }).host;
    const python = request.python ?? (typeof host === 'string' ? current.pythonByHost[host] : undefined);
    return { ...request, ...(python ? { python } : {}), workload: { sample_ms: current.sampleMs, ...request.workload } };
  };
  const profilesByAgent = new Map<string, Promise<WhatIfProfile[]>>();
  /** The agent on this machine and the Python that runs it (Settings' for `local`; a Python only, python-path.ts). */
  const localAgent = async () => ({ agentDir: options.agentDir ?? defaultAgentDir(), python: checkPythonPath((await settings.load()).pythonByHost.local ?? 'python3', 'pythonByHost.local') });
  const browserOnly = (what: string) => err('unsupported', `${what} needs the desktop app; this window is served to a browser by kvscope serve`);
  const snapshot = async (): Promise<SettingsSnapshot> => {
    const current = await settings.load();
    const availability = secrets.rememberAvailability();
    return {
      settings: current,
      defaults: JSON.parse(JSON.stringify(DEFAULT_SETTINGS)) as SettingsSnapshot['defaults'],
      file: settings.file,
      recovered: settings.recovered,
      secrets: { rememberAvailable: availability.available, remembered: await secrets.rememberedCount(), reason: availability.reason },
    };
  };
  const handlers: CoreHandlers = {
    getAppInfo: () =>
      toResult(() => ({
        name: 'KV Scope',
        version: VERSION,
        shell: options.shell,
        versions: { node: process.versions.node, ...(options.versions ?? {}) },
        runsDir: options.runsDir,
      })),
    // After start-up has marked runs a crashed app left "running" as incomplete (resumable).
    listRuns: () =>
      toResult(async () => {
        await hostHandlers.ready;
        return store.list();
      }),
    loadRun: (runId: string) => toResult(() => store.load(String(runId))),
    loadRunIndex: (runId: string) =>
      toResult(() => {
        const id = String(runId);
        return store.loadIndex(id, (fraction) =>
          pushToAll({ kind: 'progress', runId: id, stage: 'index', fraction, etaS: null, message: `indexing the run's log: ${Math.round(fraction * 100)}%` }),
        );
      }),
    renameRun: (runId, name) => toResult(() => renameRun(store, runId, name)),
    deleteRun: (runId) => toResult(() => deleteRun(store, runId)),
    importRun: (source) => toResult(() => importRun(store, source)),
    revealRun: (runId) =>
      toResult(async () => {
        const path = await revealRun(store, runId);
        shellActions.showItemInFolder?.(path);
        return path;
      }),
    // What-if (docs/whatif.md): the agent's simulator, run on this machine with the local Python.
    whatIfProfiles: () =>
      toResult(async () => {
        // The built-in profiles ship with the agent: one listing per Python setting is enough.
        const agent = await localAgent();
        const key = `${agent.agentDir}\0${agent.python}`;
        let cached = profilesByAgent.get(key);
        if (!cached) {
          cached = whatIfProfiles(agent);
          profilesByAgent.set(key, cached);
          cached.catch(() => profilesByAgent.delete(key));
        }
        return cached;
      }),
    runWhatIf: (request) => toResult(async () => runWhatIf(store, await localAgent(), request)),
    // hosts, probe, prompts, runs over SSH and sweeps (host-handlers.ts).
    ...hostHandlers.handlers,
    // Settings supply what a request leaves out: the host's Python and the sample period.
    probeHost: async (alias, probeOptions) =>
      hostHandlers.handlers.probeHost(alias, probeOptions?.python ? probeOptions : { ...(probeOptions ?? {}), ...(await pythonFor(alias)) }),
    startRun: async (request) => hostHandlers.handlers.startRun(await withRunDefaults(request)),
    startSweep: async (request) => hostHandlers.handlers.startSweep(await withRunDefaults(request)),
    // settings, secrets, files from outside, and what only the desktop shell can do.
    getSettings: () => toResult(snapshot),
    saveSettings: (next) =>
      toResult(async () => {
        // The interpreters a host's runs and probes start: Pythons only (python-path.ts).
        for (const [host, python] of Object.entries(next?.pythonByHost ?? {})) checkPythonPath(python, `pythonByHost.${host}`);
        await settings.save(next);
        return snapshot();
      }),
    forgetSecrets: () => toResult(async () => ({ forgotten: await secrets.forgetAll() })),
    openPath: (path) =>
      toResult(async () => {
        const opened = await openPath(store, path);
        await settings.noteRecent(opened.runId).catch(() => undefined);
        return opened;
      }),
    importEngineDump: (path, engine) =>
      toResult(async () => {
        const opened = await importEngineDump(store, { ...(await localAgent()), path, engine });
        await settings.noteRecent(opened.runId).catch(() => undefined);
        return opened;
      }),
    openFileDialog: async (dialogOptions) => {
      const open = shellActions.openFileDialog;
      if (!open) return browserOnly('the file dialog');
      return toResult(() => open(dialogOptions ?? {}));
    },
    notify: async (title, body) => {
      const notify = shellActions.notify;
      if (!notify) return browserOnly('desktop notifications');
      return toResult(() => notify(String(title ?? '').slice(0, 200), String(body ?? '').slice(0, 1000)));
    },
    exportRun: (runId, format, destPath, exportOptions) => toResult(() => exportRunFromStore(store, pushToAll, runId, format, destPath, exportOptions ?? {})),
    importRunFile: (path) => toResult(() => importRun(store, { path: String(path) })),
    saveImage: (runIdOrName, kind, data, destPath) => toResult(() => saveImage(String(runIdOrName), kind, data, destPath)),
  };
  return {
    handlers,
    store,
    settings,
    secrets,
    addPushListener(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    push: pushToAll,
  };
}
