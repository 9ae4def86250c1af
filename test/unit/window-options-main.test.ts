/**
 * src/main/index.ts run under Node against a recording stand-in for the `electron` module. The real
 * Electron test (test/electron/app.test.ts) needs the binary, which machines without internet lack;
 * this one runs everywhere and proves the wiring: the window is built from secureWindowOptions with
 * the restored bounds, every guard is installed and answers as window-options.ts decides, IPC
 * refuses untrusted frames, files from argv and from a second instance open, the menu pushes to
 * the renderer, progress reaches the taskbar, and the window's bounds are saved on close.
 * What it cannot show (Chromium enforcing the preferences) is the Electron test's job.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CORE_METHODS, ipcChannel, PUSH_CHANNEL } from '../../src/shared/api';
import { CONTENT_SECURITY_POLICY, HARDENED_WEB_PREFERENCES } from '../../src/main/window-options';

type Handler = (...args: unknown[]) => unknown;

const rec = vi.hoisted(() => {
  const on = () => {
    const handlers = new Map<string, Array<(...a: unknown[]) => unknown>>();
    return {
      handlers,
      on(event: string, fn: (...a: unknown[]) => unknown) {
        handlers.set(event, [...(handlers.get(event) ?? []), fn]);
      },
      emit(event: string, ...args: unknown[]) {
        return (handlers.get(event) ?? []).map((fn) => fn(...args));
      },
    };
  };
  return { on, state: {} as Record<string, unknown> };
});

vi.mock('electron', () => {
  const paths = new Map<string, string>();
  const appEvents = rec.on();
  const ready = { resolve: () => undefined as void };
  const whenReady = new Promise<void>((r) => (ready.resolve = r));
  const windows: FakeWindow[] = [];
  const ipc = new Map<string, (...a: unknown[]) => unknown>();
  const sessionState = { headers: null as null | ((d: unknown, cb: (r: unknown) => void) => void), request: null as null | Handler, check: null as null | Handler };
  const menus: unknown[] = [];
  const notifications: unknown[] = [];
  class FakeContents {
    sent: Array<[string, unknown]> = [];
    events = rec.on();
    openHandler: Handler | null = null;
    on = this.events.on;
    send(channel: string, message: unknown) {
      this.sent.push([channel, message]);
    }
    isDestroyed() {
      return false;
    }
    setWindowOpenHandler(h: Handler) {
      this.openHandler = h;
    }
  }
  class FakeWindow {
    events = rec.on();
    webContents = new FakeContents();
    loaded: unknown[] = [];
    progress: number[] = [];
    bounds: { x: number; y: number; width: number; height: number };
    constructor(readonly options: Record<string, unknown>) {
      windows.push(this);
      this.bounds = { x: Number(options.x ?? 0), y: Number(options.y ?? 0), width: Number(options.width), height: Number(options.height) };
      appEvents.emit('web-contents-created', {}, this.webContents);
    }
    on = this.events.on;
    once = this.events.on;
    async loadFile(file: string, options?: unknown) {
      this.loaded.push(['file', file, options]);
    }
    async loadURL(url: string) {
      this.loaded.push(['url', url]);
    }
    show() {}
    maximize() {}
    isMaximized() {
      return false;
    }
    isMinimized() {
      return false;
    }
    restore() {}
    focus() {}
    isDestroyed() {
      return false;
    }
    getNormalBounds() {
      return this.bounds;
    }
    setProgressBar(v: number) {
      this.progress.push(v);
    }
  }
  rec.state.windows = windows;
  rec.state.ipc = ipc;
  rec.state.session = sessionState;
  rec.state.appEvents = appEvents;
  rec.state.ready = ready;
  rec.state.menus = menus;
  rec.state.notifications = notifications;
  const app = {
    setName: () => undefined,
    enableSandbox: () => void (rec.state.sandboxAll = true),
    setPath: (k: string, v: string) => void paths.set(k, v),
    getPath: (k: string) => paths.get(k) ?? '/nonexistent',
    requestSingleInstanceLock: () => true,
    whenReady: () => whenReady,
    on: appEvents.on,
    quit: () => undefined,
    exit: () => undefined,
    isPackaged: false,
    getAppPath: () => process.cwd(),
  };
  return {
    app,
    BrowserWindow: FakeWindow,
    ipcMain: { handle: (ch: string, fn: (...a: unknown[]) => unknown) => void ipc.set(ch, fn), removeHandler: (ch: string) => void ipc.delete(ch) },
    session: {
      defaultSession: {
        webRequest: { onHeadersReceived: (fn: never) => void (sessionState.headers = fn) },
        setPermissionRequestHandler: (fn: Handler) => void (sessionState.request = fn),
        setPermissionCheckHandler: (fn: Handler) => void (sessionState.check = fn),
      },
    },
    screen: {
      getPrimaryDisplay: () => ({ id: 1, workArea: { x: 0, y: 0, width: 1920, height: 1080 } }),
      getAllDisplays: () => [{ id: 1, workArea: { x: 0, y: 0, width: 1920, height: 1080 } }],
    },
    Menu: { buildFromTemplate: (t: unknown) => t, setApplicationMenu: (m: unknown) => void menus.push(m) },
    dialog: { showErrorBox: () => undefined, showOpenDialog: async () => ({ canceled: true, filePaths: [] }), showSaveDialog: async () => ({ canceled: true }), showMessageBox: async () => ({}) },
    shell: { openExternal: async () => undefined, showItemInFolder: () => undefined },
    Notification: class {
      static isSupported() {
        return true;
      }
      constructor(readonly o: unknown) {}
      show() {
        notifications.push(this.o);
      }
    },
    safeStorage: { isEncryptionAvailable: () => false, getSelectedStorageBackend: () => 'basic_text', encryptString: () => Buffer.alloc(0), decryptString: () => '' },
  };
});

const FIXTURE = join(process.cwd(), 'test/fixtures/runs/cpu-tiny-3users');
interface W {
  options: Record<string, unknown>;
  webContents: { sent: Array<[string, unknown]>; events: { emit(e: string, ...a: unknown[]): unknown[] }; openHandler: Handler };
  events: { emit(e: string, ...a: unknown[]): unknown[] };
  loaded: unknown[];
  progress: number[];
  bounds: { x: number; y: number; width: number; height: number };
}
const win = () => (rec.state.windows as W[])[0]!;
const until = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
};

describe('index.ts wiring (recording electron stand-in)', () => {
  const saved = { argv: process.argv, defaultApp: process.defaultApp, data: process.env.KVSCOPE_DATA_DIR };
  const dataDir = mkdtempSync(join(tmpdir(), 'kvscope-main-'));

  beforeAll(async () => {
    process.env.KVSCOPE_DATA_DIR = dataDir;
    process.argv = ['/fake/electron', '.', FIXTURE];
    (process as { defaultApp?: boolean }).defaultApp = true;
    await import('../../src/main/index');
    (rec.state.ready as { resolve(): void }).resolve();
    await until(() => (rec.state.windows as W[]).length === 1 && win().loaded.length === 1, 'the window to load');
  });
  afterAll(() => {
    process.argv = saved.argv;
    (process as { defaultApp?: boolean }).defaultApp = saved.defaultApp;
    if (saved.data === undefined) delete process.env.KVSCOPE_DATA_DIR;
    else process.env.KVSCOPE_DATA_DIR = saved.data;
  });

  it('builds its one window from the hardened options, centred by the window-state rules', () => {
    expect(rec.state.sandboxAll).toBe(true);
    expect(win().options.webPreferences).toEqual({ ...HARDENED_WEB_PREFERENCES, preload: expect.stringMatching(/preload[/\\]index\.cjs$/) });
    expect(win().options).toMatchObject({ x: 240, y: 90, width: 1440, height: 900, show: false });
  });

  it('opens the run from its argv before the first paint (imported, then routed to)', () => {
    expect(win().loaded[0]).toEqual(['file', expect.stringMatching(/renderer[/\\]index\.html$/), { hash: '/runs/imported-cpu-tiny-3users/live' }]);
    expect(existsSync(join(dataDir, 'runs', 'imported-cpu-tiny-3users', 'events.jsonl'))).toBe(true);
  });

  it('installs the CSP header, refuses permissions, navigation away, webviews and new windows', () => {
    const s = rec.state.session as { headers: (d: unknown, cb: (r: { responseHeaders: Record<string, string[]> }) => void) => void; request: Handler; check: Handler };
    let headers: Record<string, string[]> = {};
    s.headers({ responseHeaders: { 'x-a': ['1'] } }, (r) => (headers = r.responseHeaders));
    expect(headers).toEqual({ 'x-a': ['1'], 'Content-Security-Policy': [CONTENT_SECURITY_POLICY] });
    const answers: boolean[] = [];
    s.request({}, 'media', (v: boolean) => answers.push(v));
    expect(answers).toEqual([false]);
    expect(s.check({}, 'notifications')).toBe(false);
    const nav = (url: string) => {
      let prevented = false;
      win().webContents.events.emit('will-navigate', { preventDefault: () => (prevented = true) }, url);
      return prevented;
    };
    expect(nav('file:///home/u/Downloads/events.jsonl')).toBe(true);
    expect(nav('https://evil.example/')).toBe(true);
    const rendererDir = (win().loaded[0] as [string, string])[1].replace(/index\.html$/, '');
    expect(nav(`file://${rendererDir}index.html#/runs`)).toBe(false);
    let webview = false;
    win().webContents.events.emit('will-attach-webview', { preventDefault: () => (webview = true) });
    expect(webview).toBe(true);
    expect(win().webContents.openHandler({ url: 'https://ui.perfetto.dev/' })).toEqual({ action: 'deny' });
  });

  it('answers every API method over IPC, and only for our own top frame', async () => {
    const ipc = rec.state.ipc as Map<string, Handler>;
    expect([...ipc.keys()].sort()).toEqual(CORE_METHODS.map(ipcChannel).sort());
    const rendererUrl = `file://${(win().loaded[0] as [string, string])[1]}`;
    const ours = await ipc.get(ipcChannel('getAppInfo'))!({ senderFrame: { url: rendererUrl, parent: null } });
    expect(ours).toMatchObject({ ok: true, value: { shell: 'electron' } });
    const iframe = await ipc.get(ipcChannel('getAppInfo'))!({ senderFrame: { url: rendererUrl, parent: {} } });
    const elsewhere = await ipc.get(ipcChannel('listRuns'))!({ senderFrame: { url: 'https://evil.example/', parent: null } });
    for (const r of [iframe, elsewhere]) expect(r).toEqual({ ok: false, error: { code: 'invalid_argument', message: 'call from an untrusted frame refused' } });
  });

  it('a second instance’s file is opened and shown; the menu pushes to the renderer', async () => {
    const appEvents = rec.state.appEvents as { emit(e: string, ...a: unknown[]): unknown[] };
    appEvents.emit('second-instance', {}, ['/fake/electron', '.', '--allow-file-access-from-files', 'events.jsonl'], FIXTURE);
    await until(() => win().webContents.sent.some(([, m]) => (m as { action?: string }).action === 'show-run'), 'the show-run push');
    expect(win().webContents.sent.find(([, m]) => (m as { action?: string }).action === 'show-run')).toEqual([PUSH_CHANNEL, { kind: 'menu', action: 'show-run', runId: 'imported-events' }]);
    type Item = { label?: string; submenu?: Array<{ label?: string; click?: () => void; submenu?: Array<{ label?: string }> }> };
    const menus = rec.state.menus as Item[][];
    const recentOf = (m: Item[]) => m.find((x) => x.label === '&File')!.submenu!.find((i) => i.label === 'Open &Recent')!.submenu!.map((i) => i.label);
    // Opening a file puts it first in File → Recent: the menu is rebuilt with it.
    await until(() => recentOf(menus.at(-1)!).includes('&1 events'), 'the Recent menu to list the new run');
    expect(recentOf(menus.at(-1)!).slice(0, 2)).toEqual(['&1 events', '&2 cpu-tiny-3users']);
    const last = menus.at(-1)!;
    const open = last.find((m) => m.label === '&File')!.submenu!.find((i) => i.label === '&Open Run…')!;
    open.click!();
    expect(win().webContents.sent.at(-1)).toEqual([PUSH_CHANNEL, { kind: 'menu', action: 'open-run' }]);
  });

  it.skipIf(!existsSync('/usr/bin/python3'))('a real Local run drives the taskbar progress and clears it when it ends', async () => {
    // The built-in engine on CPU through the Local host, started as the renderer would start it.
    const ipc = rec.state.ipc as Map<string, Handler>;
    const rendererUrl = `file://${(win().loaded[0] as [string, string])[1]}`;
    const started = (await ipc.get(ipcChannel('startRun'))!({ senderFrame: { url: rendererUrl, parent: null } }, {
      host: 'local',
      python: '/usr/bin/python3',
      name: 'shell-progress',
      workload: { model: 'tiny', device: 'cpu', users: 2, rounds: 2, context_tokens: 128, new_tokens: 16, output_tokens: 8, gpu_kv_bytes: 200000, host_kv_bytes: 2000000 },
    })) as { ok: boolean; value?: { runId: string }; error?: { message: string } };
    expect(started.error?.message ?? null).toBeNull();
    const runId = started.value!.runId;
    const statusOf = () =>
      win()
        .webContents.sent.map(([, m]) => m as { kind: string; runId?: string; status?: string })
        .filter((m) => m.kind === 'run-status' && m.runId === runId)
        .map((m) => m.status);
    for (let i = 0; i < 1200 && !statusOf().some((st) => st !== 'running'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(statusOf().at(-1)).toBe('ok');
    // The bar showed while the run went on (indeterminate 2, or a fraction) and was removed at the end.
    expect(win().progress.some((v) => v > 0)).toBe(true);
    expect(win().progress.at(-1)).toBe(-1);
  }, 150_000);

  it('closing saves the window bounds', async () => {
    win().bounds = { x: 100, y: 120, width: 1200, height: 760 };
    win().events.emit('close');
    await until(() => existsSync(join(dataDir, 'window-state.json')), 'window-state.json');
    expect(JSON.parse(readFileSync(join(dataDir, 'window-state.json'), 'utf8'))).toEqual({ x: 100, y: 120, width: 1200, height: 760, maximized: false });
  });
});
