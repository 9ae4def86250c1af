/**
 * Electron lifecycle and the window. Kept thin: everything the app does lives in core/ (tested
 * under Node) and reaches the renderer through ipc/.
 */
import { app, BrowserWindow, session, shell } from 'electron';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createCore } from './core/app-core';
import { appPaths, defaultRunsDir } from './core/paths';
import { forwardPushes, registerIpc } from './ipc/register';
import { CONTENT_SECURITY_POLICY, secureWindowOptions } from './window-options';

const rendererUrl = process.env.ELECTRON_RENDERER_URL;
const rendererFile = join(__dirname, '../renderer/index.html');
const trustedPrefix = rendererUrl ?? pathToFileURL(join(__dirname, '../renderer')).href;

if (!app.requestSingleInstanceLock()) {
  app.quit();
}

async function start(): Promise<void> {
  await app.whenReady();
  const root = app.isPackaged ? process.resourcesPath : app.getAppPath();
  const paths = appPaths(root);
  const core = await createCore({
    runsDir: process.env.KVSCOPE_DATA_DIR ? defaultRunsDir() : join(app.getPath('userData'), 'runs'),
    samplesDir: paths.samplesDir,
    shell: 'electron',
    versions: { electron: process.versions.electron, chrome: process.versions.chrome },
  });
  registerIpc(core, trustedPrefix);

  session.defaultSession.webRequest.onHeadersReceived((details, callback) => {
    callback({ responseHeaders: { ...details.responseHeaders, 'Content-Security-Policy': [CONTENT_SECURITY_POLICY] } });
  });
  session.defaultSession.setPermissionRequestHandler((_wc, _permission, callback) => callback(false));

  const win = new BrowserWindow(secureWindowOptions(join(__dirname, '../preload/index.cjs')));
  const stopPushes = forwardPushes(core, win.webContents);
  win.on('closed', stopPushes);
  win.webContents.setWindowOpenHandler(({ url }) => {
    // Links open in the user's browser, never in an app window.
    if (url.startsWith('https://')) void shell.openExternal(url);
    return { action: 'deny' };
  });
  win.webContents.on('will-navigate', (event, url) => {
    if (!url.startsWith(trustedPrefix)) event.preventDefault();
  });
  win.once('ready-to-show', () => win.show());
  if (rendererUrl) await win.loadURL(rendererUrl);
  else await win.loadFile(rendererFile);

  app.on('second-instance', () => {
    if (win.isMinimized()) win.restore();
    win.focus();
  });
}

app.on('window-all-closed', () => app.quit());
start().catch((e) => {
  console.error('KV Scope failed to start:', e);
  app.exit(1);
});
