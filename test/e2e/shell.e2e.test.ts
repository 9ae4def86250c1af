import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import type { PageGlobal } from '../helpers/page-dom';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';

const skip = browserSkipReason();

describe.skipIf(skip !== null)(`the app shell in real Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let w: ServedWindow;
  let page: Page;

  beforeAll(async () => {
    w = await serveWindow({ runsDir: mkdtempSync(join(tmpdir(), 'kvscope-e2e-')), samplesDir: join(process.cwd(), 'resources', 'samples') });
    page = await w.open(null, { width: 1280, height: 800, colorScheme: 'light' });
  });

  afterAll(async () => {
    await w?.close();
  });

  it('renders the shell, navigates by click and by keyboard, and logs no errors', async () => {
    await page.goto(w.server.url);
    await page.waitForSelector('nav[aria-label="Views"]');
    await expect(page.locator('.shell-info').textContent()).resolves.toContain('browser');
    await page.click('a[data-nav="hosts"]');
    await page.waitForFunction(() => (globalThis as unknown as PageGlobal).location.hash === '#/hosts');
    expect(await page.getAttribute('main', 'data-view')).toBe('hosts');
    await page.keyboard.press('Alt+2');
    await page.waitForFunction(() => (globalThis as unknown as PageGlobal).location.hash === '#/runs');
    await page.waitForSelector('h1:has-text("Runs")');
    await page.screenshot({ path: join(ARTIFACTS, 'shell-runs.png') });
    expect(w.errors).toEqual([]);
  });

  it('refuses the API without the token and from another origin', async () => {
    const noToken = await fetch(`http://127.0.0.1:${w.server.port}/api`);
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
    const base = `ws://127.0.0.1:${w.server.port}/api`;
    expect(await tryWs(`${base}?token=wrong`, `http://127.0.0.1:${w.server.port}`)).toBe('401');
    expect(await tryWs(`${base}?token=${w.server.token}`, 'http://evil.example')).toBe('403');
    expect(await tryWs(`${base}?token=${w.server.token}`, `http://127.0.0.1:${w.server.port}`)).toBe('open');
  });
});
