import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { createCore } from '../../src/main/core/app-core';
import { startServer, type RunningServer } from '../../src/main/core/serve';
import type { PageGlobal } from '../helpers/page-dom';
import { ARTIFACTS, RENDERER_DIR, browserSkipReason, launchBrowser } from '../helpers/browser';

const skip = browserSkipReason();

describe.skipIf(skip !== null)(`the app shell in real Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    const core = await createCore({
      runsDir: mkdtempSync(join(tmpdir(), 'kvscope-e2e-')),
      samplesDir: join(process.cwd(), 'resources', 'samples'),
      shell: 'browser',
    });
    server = await startServer({ core, staticDir: RENDERER_DIR });
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('renders the shell, navigates by click and by keyboard, and logs no errors', async () => {
    await page.goto(server.url);
    await page.waitForSelector('nav[aria-label="Views"]');
    await expect(page.locator('.shell-info').textContent()).resolves.toContain('browser');
    await page.click('a[data-nav="hosts"]');
    await page.waitForFunction(() => (globalThis as unknown as PageGlobal).location.hash === '#/hosts');
    expect(await page.getAttribute('main', 'data-view')).toBe('hosts');
    await page.keyboard.press('Alt+2');
    await page.waitForFunction(() => (globalThis as unknown as PageGlobal).location.hash === '#/runs');
    await page.waitForSelector('h1:has-text("Runs")');
    await page.screenshot({ path: join(ARTIFACTS, 'shell-runs.png') });
    expect(consoleErrors).toEqual([]);
  });

  it('refuses the API without the token and from another origin', async () => {
    const noToken = await fetch(`http://127.0.0.1:${server.port}/api`);
    expect(noToken.status).toBe(401);
    const { WebSocket } = await import('ws');
    const tryWs = (url: string, origin: string) =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(url, { origin });
        ws.on('open', () => {
          ws.close();
          resolve('open');
        });
        ws.on('unexpected-response', (_req, res) => resolve(String(res.statusCode)));
        ws.on('error', () => resolve('error'));
      });
    const base = `ws://127.0.0.1:${server.port}/api`;
    expect(await tryWs(`${base}?token=wrong`, `http://127.0.0.1:${server.port}`)).toBe('401');
    expect(await tryWs(`${base}?token=${server.token}`, 'http://evil.example')).toBe('403');
    expect(await tryWs(`${base}?token=${server.token}`, `http://127.0.0.1:${server.port}`)).toBe('open');
  });
});
