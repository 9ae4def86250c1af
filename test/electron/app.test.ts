/// <reference lib="dom" />
/**
 * The desktop app itself, started by Playwright's `_electron` on the built app (out/): it opens the
 * bundled run given on its command line, shows it, and is hardened as window-options.ts says, seen
 * from inside the real window. Runs wherever the Electron binary is installed; elsewhere it is
 * skipped with that reason (the binary is downloaded by electron's install script).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { _electron, type ElectronApplication, type Page } from 'playwright-core';
import { CORE_METHODS } from '../../src/shared/api';

const root = process.cwd();
const ARTIFACTS = join(root, 'test-artifacts');

function electronBinary(): string | null {
  try {
    // electron's index.js returns the binary's path, and throws when path.txt was never written.
    const p = createRequire(join(root, 'package.json'))('electron') as unknown as string;
    return typeof p === 'string' && existsSync(p) ? p : null;
  } catch {
    return null;
  }
}

/** The bundled run: a real recorded sample when shipped, else the real CPU run in the fixtures. */
function bundledRun(): { path: string; runId: string } {
  const samples = join(root, 'resources/samples');
  const gz = existsSync(samples) ? readdirSync(samples).filter((n) => n.endsWith('.jsonl.gz')).sort() : [];
  if (gz[0]) return { path: join(samples, gz[0]), runId: `sample:${gz[0].replace(/\.jsonl\.gz$/, '')}` };
  return { path: join(root, 'test/fixtures/runs/cpu-tiny-3users'), runId: 'imported-cpu-tiny-3users' };
}

const ELECTRON = electronBinary();
function skipReason(): string | null {
  if (!ELECTRON) return 'Electron binary not installed (no internet to download it; run `npm rebuild electron` where there is)';
  if (!existsSync(join(root, 'out/main/index.js'))) return 'app not built (run `npm run build`)';
  if (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return 'no display for a desktop window (run under xvfb-run)';
  return null;
}
const skip = skipReason();

// Chromium refuses its sandbox as root without this (CI containers); the app's own sandbox:true
// webPreference is still asserted below.
const rootFlags = process.getuid?.() === 0 ? ['--no-sandbox'] : [];

describe.skipIf(skip !== null)(`the desktop app in Electron${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let app: ElectronApplication;
  let page: Page;
  let dataDir: string;
  const run = bundledRun();
  const env = () => ({ ...(process.env as Record<string, string>), KVSCOPE_DATA_DIR: dataDir, ELECTRON_ENABLE_LOGGING: '1' });

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'kvscope-electron-'));
    mkdirSync(ARTIFACTS, { recursive: true });
    app = await _electron.launch({ executablePath: ELECTRON!, args: [root, ...rootFlags, run.path], env: env(), timeout: 60_000 });
    page = await app.firstWindow();
  }, 90_000);

  afterAll(async () => {
    await app?.close().catch(() => undefined); // the last test closes it already
  });

  it('starts on the run given on its command line and draws it', async () => {
    await page.waitForFunction((id) => window.location.hash === `#/runs/${encodeURIComponent(id)}/live`, run.runId, { timeout: 30_000 });
    await page.waitForSelector('nav[aria-label="Views"]');
    await expect(page.locator('.shell-info').textContent()).resolves.toContain('electron');
    await page.waitForTimeout(1500); // let the live view paint its first frames
    await page.screenshot({ path: join(ARTIFACTS, 'electron-run.png') });
  });

  it('the page has the typed bridge and nothing of Node', async () => {
    const keys = await page.evaluate(() => Object.keys((window as unknown as { kvscope: object }).kvscope).sort());
    expect(keys).toEqual([...CORE_METHODS, 'onPush', 'pathForFile'].sort());
    expect(await page.evaluate(() => typeof (window as unknown as { require?: unknown }).require)).toBe('undefined');
    expect(await page.evaluate(() => typeof (window as unknown as { process?: unknown }).process)).toBe('undefined');
    const info = await page.evaluate(() => (window as unknown as { kvscope: { getAppInfo(): Promise<{ ok: boolean; value: { shell: string } }> } }).kvscope.getAppInfo());
    expect(info.ok && info.value.shell).toBe('electron');
    // window.open is denied: no second window appears.
    expect(await page.evaluate(() => window.open('https://example.com/') === null)).toBe(true);
    expect(app.windows()).toHaveLength(1);
  });

  it('the window was made with the hardened preferences and the CSP', async () => {
    const prefs = await app.evaluate(({ BrowserWindow }) => {
      const wc = BrowserWindow.getAllWindows()[0]!.webContents as unknown as { getLastWebPreferences(): Record<string, unknown> };
      return wc.getLastWebPreferences();
    });
    expect(prefs).toMatchObject({ contextIsolation: true, sandbox: true, nodeIntegration: false, webviewTag: false });
    // The CSP (script-src 'self') keeps an injected inline script from running.
    const blocked = await page.evaluate(() => {
      const w = window as unknown as { __inlineRan?: number };
      const s = document.createElement('script');
      s.textContent = 'window.__inlineRan = 1';
      document.head.appendChild(s);
      return w.__inlineRan === undefined ? 'blocked' : 'ran';
    });
    expect(blocked).toBe('blocked');
  });

  it('a second instance hands its file to the first and exits', async () => {
    const second = spawn(ELECTRON!, [root, ...rootFlags, join(root, 'test/fixtures/runs/cpu-tiny-3users/events.jsonl')], { env: env(), stdio: 'ignore' });
    const code = await new Promise<number | null>((res) => second.on('exit', res));
    expect(code).toBe(0);
    await page.waitForFunction(() => window.location.hash === '#/runs/imported-events/live', undefined, { timeout: 30_000 });
    expect(app.windows()).toHaveLength(1);
  });

  it('remembers the window size and position when it closes', async () => {
    await app.evaluate(({ BrowserWindow }) => BrowserWindow.getAllWindows()[0]!.setBounds({ x: 40, y: 60, width: 1100, height: 700 }));
    await app.close();
    const state = JSON.parse(readFileSync(join(dataDir, 'window-state.json'), 'utf8')) as { width: number; height: number };
    expect(state).toMatchObject({ width: 1100, height: 700 });
  });
});
