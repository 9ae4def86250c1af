/**
 * Electron lifecycle and the window. Kept thin: everything the app does lives in core/ (tested
 * under Node) and reaches the renderer through ipc/; security decisions live in window-options.ts,
 * the menu in menu.ts, the window's remembered bounds in core/window-state.ts, progress and
 * notifications in shell-signals.ts.
 */
import { app, BrowserWindow, dialog, Menu, Notification, safeStorage, screen, session, shell, type WebContents } from 'electron';
import { release, type as osType } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { MenuAction, OpenFileDialogOptions } from '../shared/api';
import { VERSION } from '../shared/version';
import { createCore, type Core } from './core/app-core';
import { filesFromArgv } from './core/open-args';
import { appPaths, defaultDataDir } from './core/paths';
import type { SafeStorageLike } from './core/secrets';
import { SettingsStore } from './core/settings';
import { readWindowState, restoreWindowBounds, writeWindowState, type WindowState } from './core/window-state';
import { forwardPushes, registerIpc } from './ipc/register';
import { aboutDetail, buildMenuTemplate } from './menu';
import { ShellSignals } from './shell-signals';
import {
  allowNavigation,
  allowPermission,
  CONTENT_SECURITY_POLICY,
  secureWindowOptions,
  trustedRenderer,
  windowOpenDecision,
  WINDOW_SIZE,
} from './window-options';

const rendererUrl = process.env.ELECTRON_RENDERER_URL;
const rendererFile = join(__dirname, '../renderer/index.html');
const trusted = trustedRenderer(rendererUrl, pathToFileURL(join(__dirname, '../renderer/')).href);

// One data folder for the app and the CLI (core/paths.ts): Electron would otherwise name it after
// package.json's "name" (kvscope), not the product.
app.setName('KV Scope');
app.setPath('userData', defaultDataDir());
// Every renderer sandboxed, whatever its webPreferences say (must run before 'ready').
app.enableSandbox();

/**
 * The OS keychain for "remember". On Linux without a keyring daemon safeStorage falls back to
 * `basic_text` (a hard-coded key: obfuscation, not encryption), so that counts as unavailable.
 */
function electronKeychain(): SafeStorageLike {
  return {
    isEncryptionAvailable: () =>
      safeStorage.isEncryptionAvailable() && !(process.platform === 'linux' && safeStorage.getSelectedStorageBackend() === 'basic_text'),
    encryptString: (s) => safeStorage.encryptString(s),
    decryptString: (b) => safeStorage.decryptString(b),
  };
}

/** Every webContents, present or future: no webviews, no navigation away, no new windows. */
function hardenAllContents(): void {
  app.on('web-contents-created', (_event, contents: WebContents) => {
    contents.on('will-attach-webview', (e) => e.preventDefault());
    contents.on('will-navigate', (e, url) => {
      if (!allowNavigation(url, trusted)) e.preventDefault();
    });
    contents.on('will-redirect', (e, url) => {
      if (!allowNavigation(url, trusted)) e.preventDefault();
    });
    contents.setWindowOpenHandler(({ url }) => {
      const decision = windowOpenDecision(url);
      if (decision.openExternally) void shell.openExternal(url);
      return { action: decision.action };
    });
  });
}

function hardenSession(): void {
  const ses = session.defaultSession;
  ses.webRequest.onHeadersReceived((details, callback) => {
    callback({ responseHeaders: { ...details.responseHeaders, 'Content-Security-Policy': [CONTENT_SECURITY_POLICY] } });
  });
  ses.setPermissionRequestHandler((_wc, permission, callback) => callback(allowPermission(permission)));
  ses.setPermissionCheckHandler((_wc, permission) => allowPermission(permission));
}

async function showOpenDialog(win: BrowserWindow, options: OpenFileDialogOptions): Promise<string | null> {
  if (options.purpose === 'export') {
    const saved = await dialog.showSaveDialog(win, { title: options.title ?? 'Export', defaultPath: options.defaultName, properties: ['createDirectory', 'showOverwriteConfirmation'] });
    return saved.canceled || !saved.filePath ? null : saved.filePath;
  }
  if (options.purpose === 'folder') {
    const picked = await dialog.showOpenDialog(win, { title: options.title ?? 'Choose a folder', properties: ['openDirectory', 'createDirectory'] });
    return picked.canceled ? null : (picked.filePaths[0] ?? null);
  }
  const dump = options.purpose === 'engine-dump';
  const result = await dialog.showOpenDialog(win, {
    title: options.title ?? (dump ? 'Import an engine KV-event dump' : 'Open a run'),
    properties: dump ? ['openFile'] : ['openFile', 'openDirectory'],
    filters: dump
      ? [
          { name: 'KV event dumps', extensions: ['json', 'jsonl'] },
          { name: 'All files', extensions: ['*'] },
        ]
      : [
          { name: 'KV Scope runs', extensions: ['kvscope', 'jsonl', 'gz'] },
          { name: 'All files', extensions: ['*'] },
        ],
  });
  return result.canceled || result.filePaths.length === 0 ? null : (result.filePaths[0] ?? null);
}

/** Opens paths and run ids from outside the window; returns the last run opened. */
async function openFromOutside(core: Core, argvFiles: { paths: string[]; runIds: string[] }): Promise<string | null> {
  let last: string | null = null;
  for (const path of argvFiles.paths) {
    const r = await core.handlers.openPath(path);
    if (r.ok) last = r.value.runId;
    else dialog.showErrorBox('KV Scope could not open a file', r.error.message);
  }
  if (argvFiles.runIds.length) {
    const listed = await core.handlers.listRuns();
    const known = new Set(listed.ok ? listed.value.map((r) => r.id) : []);
    for (const id of argvFiles.runIds) {
      if (known.has(id)) last = id;
      else dialog.showErrorBox('KV Scope could not open a run', `no run ${id} in the library`);
    }
  }
  return last;
}

async function start(): Promise<void> {
  // Files given on the command line of the first instance, or sent by Finder before ready.
  const pendingOpen = filesFromArgv(process.argv, { defaultApp: Boolean(process.defaultApp), cwd: process.cwd() });
  let openLater: ((path: string) => void) | null = null;
  app.on('open-file', (event, path) => {
    event.preventDefault();
    if (openLater) openLater(path);
    else pendingOpen.paths.push(path);
  });

  await app.whenReady();
  const dataDir = app.getPath('userData');
  const settings = new SettingsStore(join(dataDir, 'settings.json'));
  const initial = await settings.load();
  const root = app.isPackaged ? process.resourcesPath : app.getAppPath();
  const paths = appPaths(root);
  let win: BrowserWindow | null = null;

  const core = await createCore({
    runsDir: initial.runsDir ?? join(dataDir, 'runs'),
    samplesDir: paths.samplesDir,
    shell: 'electron',
    versions: { electron: process.versions.electron, chrome: process.versions.chrome, v8: process.versions.v8 },
    // Explicit, so a runs folder chosen in Settings does not move hosts.json, and a packaged app
    // (code inside app.asar) finds the agent among its extra resources.
    dataDir,
    agentDir: paths.agentDir,
    settingsStore: settings,
    secretsFile: join(dataDir, 'secrets.json'),
    keychain: electronKeychain(),
    shellActions: {
      openFileDialog: (options) => (win ? showOpenDialog(win, options) : Promise.resolve(null)),
      notify: (title, body) => {
        if (Notification.isSupported()) new Notification({ title, body }).show();
      },
      showItemInFolder: (path) => shell.showItemInFolder(path),
    },
  });
  hardenAllContents();
  hardenSession();
  registerIpc(core, trusted);

  const send = (action: MenuAction, runId?: string) => core.push(runId ? { kind: 'menu', action, runId } : { kind: 'menu', action });

  const rebuildMenu = async () => {
    const listed = await core.handlers.listRuns();
    const names = new Map(listed.ok ? listed.value.map((r) => [r.id, r.name] as const) : []);
    const recent = (await settings.load()).recentRuns.filter((id) => names.has(id)).map((id) => ({ runId: id, label: names.get(id) ?? id }));
    Menu.setApplicationMenu(
      Menu.buildFromTemplate(
        buildMenuTemplate({
          platform: process.platform,
          packaged: app.isPackaged,
          recent,
          send,
          clearRecent: () => void settings.clearRecent(),
          showAbout: () =>
            void dialog.showMessageBox({
              type: 'info',
              title: 'About KV Scope',
              message: 'KV Scope',
              detail: aboutDetail(VERSION, process.versions, `${osType()} ${release()} (${process.arch})`),
            }),
        }),
      ),
    );
  };
  settings.onChange(() => void rebuildMenu());
  await rebuildMenu();

  // The window where it was last, clamped to the displays there are now.
  const stateFile = join(dataDir, 'window-state.json');
  const primary = screen.getPrimaryDisplay();
  const workAreas = [primary, ...screen.getAllDisplays().filter((d) => d.id !== primary.id)].map((d) => d.workArea);
  const bounds = restoreWindowBounds(await readWindowState(stateFile), workAreas, WINDOW_SIZE);
  win = new BrowserWindow(secureWindowOptions(join(__dirname, '../preload/index.cjs'), bounds));
  if (bounds.maximized) win.maximize();
  const saveState = () => {
    if (!win || win.isDestroyed()) return;
    const b = win.getNormalBounds();
    const state: WindowState = { x: b.x, y: b.y, width: b.width, height: b.height, maximized: win.isMaximized() };
    void writeWindowState(stateFile, state).catch(() => undefined);
  };
  let saveTimer: NodeJS.Timeout | null = null;
  const saveSoon = () => {
    if (saveTimer) clearTimeout(saveTimer);
    saveTimer = setTimeout(saveState, 500);
  };
  win.on('resize', saveSoon);
  win.on('move', saveSoon);
  win.on('close', saveState);

  // Progress in the taskbar/dock, a notification when a long run or sweep ends.
  const signals = new ShellSignals();
  const stopSignals = core.addPushListener((m) => {
    const s = signals.handle(m);
    if (s.progress !== undefined && win && !win.isDestroyed()) win.setProgressBar(s.progress);
    if (s.notification && Notification.isSupported()) new Notification(s.notification).show();
  });
  const stopPushes = forwardPushes(core, win.webContents);
  win.on('closed', () => {
    stopPushes();
    stopSignals();
    win = null;
  });
  win.once('ready-to-show', () => win?.show());

  // A file given on the command line opens before the first paint: the window starts on its route.
  const firstRun = await openFromOutside(core, pendingOpen);
  const hash = firstRun ? `/runs/${encodeURIComponent(firstRun)}/live` : undefined;
  if (rendererUrl) await win.loadURL(hash ? `${rendererUrl}#${hash}` : rendererUrl);
  else await win.loadFile(rendererFile, hash ? { hash } : undefined);

  const showRun = (runId: string | null) => {
    if (runId) send('show-run', runId);
    if (win) {
      if (win.isMinimized()) win.restore();
      win.focus();
    }
  };
  openLater = (path) => void openFromOutside(core, { paths: [path], runIds: [] }).then(showRun);
  // A second `kvscope open` (or a double-clicked file) lands here: this instance opens it.
  app.on('second-instance', (_event, argv, workingDirectory) => {
    void openFromOutside(core, filesFromArgv(argv, { defaultApp: Boolean(process.defaultApp), cwd: workingDirectory })).then(showRun);
  });
}

if (!app.requestSingleInstanceLock()) {
  // Another KV Scope window is open: it receives our argv through 'second-instance'.
  app.quit();
} else {
  app.on('window-all-closed', () => app.quit());
  start().catch((e) => {
    console.error('KV Scope failed to start:', e);
    app.exit(1);
  });
}
