/**
 * Real headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core, for end-to-end
 * tests of the renderer through `kvscope serve` (and the window benchmarks, bench/renderer-*).
 * Tests skip, saying why, where Chromium or the built renderer is absent.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createCore, type Core, type CoreOptions } from '../../src/main/core/app-core';
import { startServer, type RunningServer } from '../../src/main/core/serve';

export const CHROMIUM = process.env.KVSCOPE_CHROMIUM ?? '/usr/bin/chromium';
export const RENDERER_DIR = join(process.cwd(), 'out', 'renderer');
export const ARTIFACTS = join(process.cwd(), 'test-artifacts');

/** Why the browser tests cannot run here, or null when they can. */
export function browserSkipReason(): string | null {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`;
  if (!existsSync(join(RENDERER_DIR, 'index.html'))) return 'renderer not built (run `npm run build`)';
  return null;
}

/** `extraArgs`: more Chromium flags (a benchmark's). */
export async function launchBrowser(extraArgs: readonly string[] = []): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The flags this machine needs: no sandbox as root, software rendering, and no background
    // connections (this network refuses them).
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', ...extraArgs],
  });
}

export interface WindowPageOptions {
  /** Default 1400. */
  width?: number;
  /** Default 900. */
  height?: number;
  /** The OS theme the page sees; default dark. */
  colorScheme?: 'dark' | 'light';
}

/** A core served as `kvscope serve` serves it (the built renderer, the WebSocket bridge), and a browser to open it in. */
export interface ServedWindow {
  core: Core;
  server: RunningServer;
  browser: Browser;
  /** Console errors and uncaught exceptions of every page opened with `open`, in order: a test expects none. */
  errors: string[];
  /**
   * A new page, its errors collected, navigated to the window's address followed by `suffix` (a
   * `&query` and/or a `#/route`; '' for the runs list), or left blank when `suffix` is null.
   */
  open(suffix: string | null, options?: WindowPageOptions): Promise<Page>;
  /** Closes the browser (unless it was shared) and the server. */
  close(): Promise<void>;
}

/**
 * Serves a new core (`coreOptions`, in the browser shell) and launches Chromium. `shared`: a
 * browser already running, used and left open (several windows in one test), and an errors list
 * to collect into.
 */
export async function serveWindow(coreOptions: Omit<CoreOptions, 'shell'>, shared: { browser?: Browser; errors?: string[]; chromiumArgs?: readonly string[] } = {}): Promise<ServedWindow> {
  const core = await createCore({ ...coreOptions, shell: 'browser' });
  const server = await startServer({ core, staticDir: RENDERER_DIR });
  const browser = shared.browser ?? (await launchBrowser(shared.chromiumArgs));
  const errors = shared.errors ?? [];
  return {
    core,
    server,
    browser,
    errors,
    async open(suffix, options = {}) {
      const page = await browser.newPage({ viewport: { width: options.width ?? 1400, height: options.height ?? 900 }, colorScheme: options.colorScheme ?? 'dark' });
      page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
      page.on('pageerror', (e) => errors.push(String(e)));
      if (suffix !== null) await page.goto(`${server.url}${suffix}`);
      return page;
    },
    async close() {
      if (!shared.browser) await browser.close();
      await server.close();
    },
  };
}
