/**
 * Real headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core, for end-to-end
 * tests of the renderer through `kvscope serve`. Tests skip, saying why, where Chromium or the
 * built renderer is absent.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { Core } from '../../src/main/core/app-core';
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

export async function launchBrowser(): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The flags this machine needs: no sandbox as root, software rendering, and no background
    // connections (this network refuses them).
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** The window served from a core (`kvscope serve`) and one page of it in Chromium, collecting console errors. */
export interface ServedWindow {
  server: RunningServer;
  browser: Browser;
  page: Page;
  consoleErrors: string[];
  close(): Promise<void>;
}

export async function serveWindow(core: Core, viewport = { width: 1400, height: 900 }): Promise<ServedWindow> {
  const server = await startServer({ core, staticDir: RENDERER_DIR });
  const browser = await launchBrowser();
  const page = await browser.newPage({ viewport, colorScheme: 'dark' });
  const consoleErrors: string[] = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  return {
    server,
    browser,
    page,
    consoleErrors,
    close: async () => {
      await browser.close();
      await server.close();
    },
  };
}
