/**
 * The application menu as a plain template (type-only electron import, so a test builds it under
 * Node). Commands that belong to the window are not done here: they go to the renderer as a
 * `{kind:'menu', action}` push through `send`, and the renderer does them exactly as its own
 * buttons do. Zoom, copy/paste and quit use Electron's built-in roles.
 */
import type { MenuItemConstructorOptions } from 'electron';
import type { MenuAction } from '../shared/api';

export interface RecentRun {
  runId: string;
  label: string;
}

export interface MenuContext {
  platform: NodeJS.Platform;
  /** Developer tools only in an unpackaged build. */
  packaged: boolean;
  recent: RecentRun[];
  send(action: MenuAction, runId?: string): void;
  showAbout(): void;
  clearRecent(): void;
}

/**
 * Alt+1..5 switch views inside the renderer already (App.tsx); the View menu shows the same keys
 * without registering them, so one key press never does the thing twice.
 */
const shownOnly = (accelerator: string) => ({ accelerator, registerAccelerator: false });

export function buildMenuTemplate(ctx: MenuContext): MenuItemConstructorOptions[] {
  const mac = ctx.platform === 'darwin';
  const recentItems: MenuItemConstructorOptions[] =
    ctx.recent.length === 0
      ? [{ label: 'No recent runs', enabled: false }]
      : [
          ...ctx.recent.map((r, i): MenuItemConstructorOptions => ({
            label: `${i < 9 ? `&${i + 1} ` : ''}${r.label}`,
            click: () => ctx.send('show-run', r.runId),
          })),
          { type: 'separator' },
          { label: 'Clear Recent', click: () => ctx.clearRecent() },
        ];
  const file: MenuItemConstructorOptions = {
    label: '&File',
    submenu: [
      { label: '&New Run…', accelerator: 'CmdOrCtrl+N', click: () => ctx.send('new-run') },
      { label: '&Open Run…', accelerator: 'CmdOrCtrl+O', click: () => ctx.send('open-run') },
      { label: '&Import Engine Dump…', click: () => ctx.send('import-engine-dump') },
      { label: '&Export…', accelerator: 'CmdOrCtrl+E', click: () => ctx.send('export') },
      { label: 'Open &Recent', submenu: recentItems },
      { type: 'separator' },
      { label: '&Settings…', accelerator: 'CmdOrCtrl+,', click: () => ctx.send('settings') },
      { type: 'separator' },
      mac ? { role: 'close' } : { role: 'quit' },
    ],
  };
  const edit: MenuItemConstructorOptions = {
    label: '&Edit',
    submenu: [{ role: 'undo' }, { role: 'redo' }, { type: 'separator' }, { role: 'cut' }, { role: 'copy' }, { role: 'paste' }, { role: 'selectAll' }],
  };
  const view: MenuItemConstructorOptions = {
    label: '&View',
    submenu: [
      { label: '&Live', ...shownOnly('Alt+3'), click: () => ctx.send('view-live') },
      { label: '&Timeline', ...shownOnly('Alt+4'), click: () => ctx.send('view-timeline') },
      { label: '&Compare', ...shownOnly('Alt+5'), click: () => ctx.send('view-compare') },
      { type: 'separator' },
      { role: 'resetZoom' },
      { role: 'zoomIn' },
      { role: 'zoomOut' },
      { type: 'separator' },
      { role: 'togglefullscreen' },
      ...(ctx.packaged ? [] : ([{ type: 'separator' }, { role: 'reload' }, { role: 'toggleDevTools' }] as MenuItemConstructorOptions[])),
    ],
  };
  const help: MenuItemConstructorOptions = {
    role: 'help',
    label: '&Help',
    submenu: [{ label: '&About KV Scope', click: () => ctx.showAbout() }],
  };
  const appMenu: MenuItemConstructorOptions[] = mac
    ? [
        {
          label: 'KV Scope',
          submenu: [
            { label: 'About KV Scope', click: () => ctx.showAbout() },
            { type: 'separator' },
            { role: 'services' },
            { type: 'separator' },
            { role: 'hide' },
            { role: 'hideOthers' },
            { role: 'unhide' },
            { type: 'separator' },
            { role: 'quit' },
          ],
        },
      ]
    : [];
  return [...appMenu, file, edit, view, ...(mac ? [{ role: 'windowMenu' } as MenuItemConstructorOptions] : []), help];
}

/** Help → About: the versions a bug report needs. */
export function aboutDetail(appVersion: string, versions: Record<string, string | undefined>, os: string): string {
  const line = (name: string, v: string | undefined) => (v ? `${name} ${v}` : null);
  return [
    `KV Scope ${appVersion}`,
    line('Electron', versions.electron),
    line('Chromium', versions.chrome),
    line('Node.js', versions.node),
    line('V8', versions.v8),
    `OS ${os}`,
  ]
    .filter(Boolean)
    .join('\n');
}
