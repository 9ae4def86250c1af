import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  allowNavigation,
  allowPermission,
  CONTENT_SECURITY_POLICY,
  HARDENED_WEB_PREFERENCES,
  isTrustedRendererUrl,
  isTrustedSender,
  secureWindowOptions,
  trustedRenderer,
  windowOpenDecision,
} from '../../src/main/window-options';

const INDEX_TS = readFileSync(join(process.cwd(), 'src/main/index.ts'), 'utf8');

function directives(csp: string): Map<string, string[]> {
  return new Map(
    csp
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((d) => d[0])
      .map(([name, ...values]) => [name!, values]),
  );
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

describe('the window is hardened', () => {
  it('webPreferences: isolation, sandbox, no Node anywhere, no webviews, web security on', () => {
    const opts = secureWindowOptions('/app/out/preload/index.cjs');
    expect(opts.webPreferences).toMatchObject({
      preload: '/app/out/preload/index.cjs',
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      webviewTag: false,
      navigateOnDragDrop: false,
      experimentalFeatures: false,
    });
    // Restored bounds change only the geometry, never the preferences.
    const placed = secureWindowOptions('/p', { x: 10, y: 20, width: 1000, height: 700 });
    expect(placed).toMatchObject({ x: 10, y: 20, width: 1000, height: 700, show: false });
    expect(placed.webPreferences).toEqual({ ...HARDENED_WEB_PREFERENCES, preload: '/p' });
  });

  it('the CSP allows only our own scripts, no plugins, no base rewrite, no framing, no forms', () => {
    const d = directives(CONTENT_SECURITY_POLICY);
    expect(d.get('default-src')).toEqual(["'self'"]);
    expect(d.get('script-src')).toEqual(["'self'"]);
    expect(d.get('object-src')).toEqual(["'none'"]);
    expect(d.get('base-uri')).toEqual(["'none'"]);
    expect(d.get('frame-ancestors')).toEqual(["'none'"]);
    expect(d.get('form-action')).toEqual(["'none'"]);
    expect(CONTENT_SECURITY_POLICY).not.toMatch(/unsafe-eval|\*/);
  });

  it('the renderer page carries the CSP as a meta too (file:// responses have no headers)', () => {
    const html = readFileSync(join(process.cwd(), 'src/renderer/index.html'), 'utf8');
    const meta = /<meta http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1];
    expect(meta).toBeDefined();
    const d = directives(meta!);
    expect(d.get('default-src')).toEqual(["'self'"]);
    expect(d.get('script-src')).toEqual(["'self'"]);
    expect(d.get('object-src')).toEqual(["'none'"]);
    expect(d.get('base-uri')).toEqual(["'none'"]);
    expect(meta).not.toMatch(/unsafe-eval/);
    expect(d.get('script-src')!.join(' ')).not.toMatch(/unsafe-inline/);
  });

  it('only our renderer counts as trusted: its folder or the dev server origin', () => {
    const dir = pathToFileURL('/opt/KV Scope/resources/app/out/renderer/').href;
    const file = trustedRenderer(undefined, dir.replace(/\/$/, ''));
    expect(isTrustedRendererUrl(`${dir}index.html#/runs/a/live`, file)).toBe(true);
    expect(isTrustedRendererUrl(`${dir}../renderer-evil/index.html`, file)).toBe(false);
    expect(isTrustedRendererUrl(dir.replace('/renderer/', '/renderer-evil/') + 'index.html', file)).toBe(false);
    expect(isTrustedRendererUrl('file:///etc/passwd', file)).toBe(false);
    expect(isTrustedRendererUrl('https://example.com/', file)).toBe(false);
    expect(isTrustedRendererUrl('not a url', file)).toBe(false);
    const dev = trustedRenderer('http://localhost:5173/', dir);
    expect(isTrustedRendererUrl('http://localhost:5173/#/hosts', dev)).toBe(true);
    expect(isTrustedRendererUrl('http://localhost:5174/', dev)).toBe(false);
    expect(isTrustedRendererUrl('http://localhost.evil.com:5173/', dev)).toBe(false);
  });

  it('IPC answers only the top frame of our own page', () => {
    const trusted = trustedRenderer(undefined, 'file:///app/out/renderer/');
    const ours = 'file:///app/out/renderer/index.html';
    expect(isTrustedSender({ senderFrame: { url: ours, parent: null } }, trusted)).toBe(true);
    expect(isTrustedSender({ senderFrame: { url: ours, parent: {} } }, trusted)).toBe(false);
    expect(isTrustedSender({ senderFrame: { url: 'https://evil.example/', parent: null } }, trusted)).toBe(false);
    expect(isTrustedSender({ senderFrame: null }, trusted)).toBe(false);
  });

  it('navigation away, new windows and permissions are refused; https links go to the browser', () => {
    const trusted = trustedRenderer(undefined, 'file:///app/out/renderer/');
    expect(allowNavigation('file:///app/out/renderer/index.html#/runs', trusted)).toBe(true);
    expect(allowNavigation('file:///home/u/Downloads/events.jsonl', trusted)).toBe(false); // a dropped file
    expect(allowNavigation('https://ui.perfetto.dev/', trusted)).toBe(false);
    expect(windowOpenDecision('https://ui.perfetto.dev/')).toEqual({ action: 'deny', openExternally: true });
    for (const url of ['http://example.com/', 'file:///etc/passwd', 'javascript:alert(1)', 'garbage']) {
      expect(windowOpenDecision(url)).toEqual({ action: 'deny', openExternally: false });
    }
    for (const p of ['media', 'geolocation', 'notifications', 'clipboard-read', 'openExternal']) expect(allowPermission(p)).toBe(false);
  });
});

describe('index.ts builds its window from these settings', () => {
  it('the only BrowserWindow in src/main is made with secureWindowOptions', () => {
    const creations = filesUnder(join(process.cwd(), 'src/main')).flatMap((f) =>
      [...readFileSync(f, 'utf8').matchAll(/new BrowserWindow\(([^)]*)/g)].map((m) => ({ f, arg: m[1]! })),
    );
    expect(creations).toHaveLength(1);
    expect(creations[0]!.f.endsWith(join('src', 'main', 'index.ts'))).toBe(true);
    expect(creations[0]!.arg.startsWith('secureWindowOptions(')).toBe(true);
  });

  it('wires every guard: CSP header, permissions, navigation, window.open, webviews, IPC sender check, single instance', () => {
    expect(INDEX_TS).toMatch(/'Content-Security-Policy': \[CONTENT_SECURITY_POLICY\]/);
    expect(INDEX_TS).toMatch(/setPermissionRequestHandler\([^)]*\) => callback\(allowPermission\(permission\)\)/);
    expect(INDEX_TS).toMatch(/setPermissionCheckHandler\([^)]*\) => allowPermission\(permission\)/);
    expect(INDEX_TS).toMatch(/contents\.on\('will-navigate', \(e, url\) => \{\s*if \(!allowNavigation\(url, trusted\)\) e\.preventDefault\(\);/);
    expect(INDEX_TS).toMatch(/contents\.on\('will-attach-webview', \(e\) => e\.preventDefault\(\)\)/);
    expect(INDEX_TS).toMatch(/setWindowOpenHandler\(\(\{ url \}\) => \{\s*const decision = windowOpenDecision\(url\)/);
    expect(INDEX_TS).toMatch(/app\.on\('web-contents-created'/);
    expect(INDEX_TS).toMatch(/registerIpc\(core, trusted\)/);
    expect(INDEX_TS).toMatch(/if \(!app\.requestSingleInstanceLock\(\)\) \{\s*(\/\/.*\s*)?app\.quit\(\);/);
    expect(INDEX_TS).toMatch(/app\.on\('second-instance', \(_event, argv, workingDirectory\)/);
  });

  it('the built main bundle (when built) keeps the hardened preferences', () => {
    const built = join(process.cwd(), 'out/main/index.js');
    let text: string;
    try {
      text = readFileSync(built, 'utf8');
    } catch {
      return; // not built: the source checks above still hold
    }
    for (const key of ['contextIsolation', 'sandbox', 'nodeIntegration', 'webviewTag']) expect(text).toContain(key);
  });
});
