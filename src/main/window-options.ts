/**
 * The window's security settings and decisions, in one place so tests assert them without Electron
 * (Electron security checklist, https://www.electronjs.org/docs/latest/tutorial/security:
 * isolation, sandbox, no Node, a CSP, no navigation, no new windows, no permissions, no webviews).
 * index.ts builds every window with `secureWindowOptions` (test/unit/window-options.test.ts reads it).
 */
import type { BrowserWindowConstructorOptions, WebPreferences } from 'electron';

/**
 * Sent as a header on every response of the app's session, and repeated as a <meta> in
 * src/renderer/index.html because responses loaded from file:// carry no headers.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'none'",
].join('; ');

/** The webPreferences of every KV Scope window. */
export const HARDENED_WEB_PREFERENCES = Object.freeze({
  contextIsolation: true,
  sandbox: true,
  nodeIntegration: false,
  nodeIntegrationInWorker: false,
  nodeIntegrationInSubFrames: false,
  webSecurity: true,
  allowRunningInsecureContent: false,
  experimentalFeatures: false,
  webviewTag: false,
  navigateOnDragDrop: false,
  safeDialogs: true,
  spellcheck: false,
} satisfies WebPreferences);

export const WINDOW_SIZE = Object.freeze({ width: 1440, height: 900, minWidth: 960, minHeight: 600 });

export interface WindowBounds {
  x?: number;
  y?: number;
  width: number;
  height: number;
}

export function secureWindowOptions(preloadPath: string, bounds?: WindowBounds): BrowserWindowConstructorOptions {
  return {
    width: bounds?.width ?? WINDOW_SIZE.width,
    height: bounds?.height ?? WINDOW_SIZE.height,
    ...(bounds?.x !== undefined && bounds?.y !== undefined ? { x: bounds.x, y: bounds.y } : {}),
    minWidth: WINDOW_SIZE.minWidth,
    minHeight: WINDOW_SIZE.minHeight,
    show: false,
    title: 'KV Scope',
    backgroundColor: '#111418',
    webPreferences: { ...HARDENED_WEB_PREFERENCES, preload: preloadPath },
  };
}

/**
 * Where the renderer is allowed to live: the dev server's origin (electron-vite's
 * ELECTRON_RENDERER_URL) or the built renderer folder on disk.
 */
export type TrustedRenderer = { kind: 'dev'; origin: string } | { kind: 'file'; dirUrl: string };

export function trustedRenderer(devUrl: string | undefined, rendererDirFileUrl: string): TrustedRenderer {
  if (devUrl) return { kind: 'dev', origin: new URL(devUrl).origin };
  return { kind: 'file', dirUrl: rendererDirFileUrl.endsWith('/') ? rendererDirFileUrl : `${rendererDirFileUrl}/` };
}

/**
 * True for URLs of our own renderer only: same origin as the dev server, or a file inside the
 * built renderer folder (a prefix check on the folder URL with its trailing slash, so
 * `.../renderer-evil/` does not pass for `.../renderer/`; `..` is already resolved by URL parsing).
 */
export function isTrustedRendererUrl(url: string, trusted: TrustedRenderer): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (trusted.kind === 'dev') return parsed.origin === trusted.origin && (parsed.protocol === 'http:' || parsed.protocol === 'https:');
  if (parsed.protocol !== 'file:') return false;
  const noHash = `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  return noHash.startsWith(trusted.dirUrl);
}

/** The frame shape the IPC sender check needs (Electron's WebFrameMain has these). */
export interface SenderFrameLike {
  url: string;
  parent: unknown;
}

/**
 * IPC calls are answered only for the top frame of a page we loaded ourselves (Electron security
 * checklist, "Validate the sender of all IPC messages"): never an iframe, never a page navigated
 * elsewhere.
 */
export function isTrustedSender(event: { senderFrame: SenderFrameLike | null | undefined }, trusted: TrustedRenderer): boolean {
  const frame = event.senderFrame;
  if (!frame || frame.parent) return false;
  return isTrustedRendererUrl(frame.url, trusted);
}

/** `will-navigate`: the renderer is a single page; any navigation away from it is refused. */
export function allowNavigation(url: string, trusted: TrustedRenderer): boolean {
  return isTrustedRendererUrl(url, trusted);
}

/**
 * `window.open` and target=_blank: never a new app window. https links (docs, Perfetto) go to the
 * user's browser; everything else (file:, javascript:, http:) is dropped.
 */
export function windowOpenDecision(url: string): { action: 'deny'; openExternally: boolean } {
  let external = false;
  try {
    external = new URL(url).protocol === 'https:';
  } catch {
    external = false;
  }
  return { action: 'deny', openExternally: external };
}

/** Permission requests (camera, notifications from the page, geolocation, ...): all refused. */
export function allowPermission(_permission: string): boolean {
  return false;
}
