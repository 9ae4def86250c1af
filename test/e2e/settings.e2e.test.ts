/// <reference lib="dom" />
// page.evaluate bodies run in Chromium: DOM types for them, in this file only.
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { ARTIFACTS, browserSkipReason, launchBrowser, serveWindow, type ServedWindow } from '../helpers/browser';

const skip = browserSkipReason();
const FIXTURE_LOG = join(process.cwd(), 'test/fixtures/runs/cpu-tiny-3users/events.jsonl');

describe.skipIf(skip !== null)(`Settings view and drop zone in real Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let browser: Browser;
  const windows: ServedWindow[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    for (const w of windows) await w.close();
    await browser?.close();
  });

  /** A core on `dataDir` (its runs folder and settings.json), served to this file's browser. */
  async function serveWith(dataDir: string): Promise<ServedWindow> {
    const w = await serveWindow({ runsDir: join(dataDir, 'runs'), samplesDir: null, settingsFile: join(dataDir, 'settings.json') }, { browser, errors: pageErrors });
    windows.push(w);
    return w;
  }
  const open = (w: ServedWindow, hash: string) => w.open(hash, { width: 1280, height: 900, colorScheme: 'light' });

  it('shows the seed defaults, refuses a bad value at its field, saves atomically and applies the theme', async () => {
    const data = mkdtempSync(join(tmpdir(), 'kvscope-settings-e2e-'));
    const page = await open(await serveWith(data), '#/settings');
    await page.waitForSelector('h1:has-text("Settings")');
    expect(await page.inputValue('input[name="workload.contextTokens"]')).toBe('16000');
    expect(await page.inputValue('input[name="workload.hostKvBytes"]')).toBe('55');
    expect(await page.inputValue('input[name="workload.freeGpuMemoryFraction"]')).toBe('0.9');
    expect(await page.inputValue('input[name="sampleMs"]')).toBe('100');
    expect(await page.isChecked('input[name="theme"][value="system"]')).toBe(true);
    await expect(page.locator('[data-testid="secrets-status"]').textContent()).resolves.toMatch(/memory for this session only/);

    await page.fill('input[name="workload.rounds"]', '0');
    await page.click('button[type="submit"]');
    await page.waitForSelector('input[name="workload.rounds"][aria-invalid="true"]');
    await expect(page.locator('[data-testid="settings-status"]').textContent()).resolves.toMatch(/Not saved: workload\.rounds/);
    expect(existsSync(join(data, 'settings.json'))).toBe(false);

    await page.fill('input[name="workload.rounds"]', '3');
    await page.check('input[name="theme"][value="light"]');
    await page.click('button[type="submit"]');
    await page.waitForFunction(() => /Saved to/.test(document.querySelector('[data-testid="settings-status"]')?.textContent ?? ''));
    const saved = JSON.parse(readFileSync(join(data, 'settings.json'), 'utf8'));
    expect(saved.workload.rounds).toBe(3);
    expect(saved.theme).toBe('light');
    expect(readdirSync(data).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(await bg()).toBe('rgb(247, 248, 250)');
    await page.screenshot({ path: join(ARTIFACTS, 'settings-light.png') });

    // A fresh page load starts in the saved theme, with the saved values.
    await page.reload();
    await page.waitForSelector('h1:has-text("Settings")');
    await page.waitForFunction(() => document.documentElement.dataset.theme === 'light');
    expect(await page.inputValue('input[name="workload.rounds"]')).toBe('3');
    await page.check('input[name="theme"][value="dark"]');
    expect(await bg()).toBe('rgb(17, 20, 24)');

    // The New run form starts from the saved defaults; one the user changed (rounds) holds even
    // once the probe of Local lands (a CPU host's starting values replace only unchanged ones).
    await page.evaluate(() => (window.location.hash = '#/new'));
    await page.waitForFunction(() => (document.querySelector('#f-rounds') as HTMLInputElement | null)?.value === '3');
    await page.waitForFunction(() => !/probing|not probed/.test(document.querySelector('[data-host-state=local]')?.textContent ?? 'probing'), undefined, { timeout: 120_000 });
    expect(await page.inputValue('#f-rounds')).toBe('3');
    await page.close();
  });

  it('a broken settings.json is moved aside and reported in the view', async () => {
    const data = mkdtempSync(join(tmpdir(), 'kvscope-settings-e2e-'));
    writeFileSync(join(data, 'settings.json'), '{"theme": ');
    const page = await open(await serveWith(data), '#/settings');
    const alert = await page.waitForSelector('[data-testid="settings-recovered"]');
    expect(await alert.textContent()).toMatch(/settings\.json was invalid: not valid JSON.*moved to .*settings\.json\.broken-/);
    expect(readdirSync(data).some((n) => n.startsWith('settings.json.broken-'))).toBe(true);
    expect(await page.inputValue('input[name="workload.contextTokens"]')).toBe('16000');
    await page.close();
  });

  it('dropping an events.jsonl on the window imports it and opens the run', async () => {
    const data = mkdtempSync(join(tmpdir(), 'kvscope-drop-e2e-'));
    const w = await serveWith(data);
    const page = await open(w, '#/runs');
    await page.waitForSelector('nav[aria-label="Views"]');
    const text = readFileSync(FIXTURE_LOG, 'utf8');
    await page.evaluate((body) => {
      const dt = new DataTransfer();
      dt.items.add(new File([body], 'events.jsonl', { type: 'application/x-ndjson' }));
      window.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true }));
      (window as unknown as { __dt: DataTransfer }).__dt = dt;
    }, text);
    await page.waitForSelector('[data-testid="drop-overlay"]');
    await page.evaluate(() => {
      const dt = (window as unknown as { __dt: DataTransfer }).__dt;
      window.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction(() => window.location.hash === '#/runs/imported-events/live', undefined, { timeout: 20_000 });
    expect(await page.locator('[data-testid="drop-overlay"]').count()).toBe(0);
    const runs = await w.core.handlers.listRuns();
    expect(runs.ok && runs.value.map((r) => r.id)).toEqual(['imported-events']);
    expect(readFileSync(join(data, 'runs', 'imported-events', 'events.jsonl'), 'utf8')).toBe(text);

    // Something that is not a run: a clear notice, nothing imported.
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['hello'], 'notes.txt'));
      window.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction(() => /Could not open notes\.txt: .*expected a \.kvscope file/.test(document.querySelector('[data-testid="shell-notice"]')?.textContent ?? ''));
    const after = await w.core.handlers.listRuns();
    expect(after.ok && after.value).toHaveLength(1);
    await page.close();
    expect(pageErrors).toEqual([]);
  });
});
