import type { MenuItemConstructorOptions } from 'electron';
import { describe, expect, it } from 'vitest';
import type { MenuAction, PushMessage } from '../../src/shared/api';
import { aboutDetail, buildMenuTemplate, type MenuContext } from '../../src/main/menu';
import { LONG_RUN_MS, PROGRESS_INDETERMINATE, PROGRESS_NONE, ShellSignals } from '../../src/main/shell-signals';

function ctx(over: Partial<MenuContext> = {}) {
  const sent: Array<[MenuAction, string | undefined]> = [];
  let about = 0;
  let cleared = 0;
  const c: MenuContext = {
    platform: 'linux',
    packaged: true,
    recent: [],
    send: (a, id) => void sent.push([a, id]),
    showAbout: () => void about++,
    clearRecent: () => void cleared++,
    ...over,
  };
  return { c, sent, about: () => about, cleared: () => cleared };
}

const sub = (item: MenuItemConstructorOptions | undefined) => (item?.submenu ?? []) as MenuItemConstructorOptions[];
const byLabel = (items: MenuItemConstructorOptions[], re: RegExp) => items.find((i) => i.label && re.test(i.label.replace(/&/g, '')));
const click = (item: MenuItemConstructorOptions | undefined) => (item!.click as unknown as () => void)();

describe('the application menu', () => {
  it('File: New run, Open run…, Import engine dump…, Export…, Recent; each sends its action to the renderer', () => {
    const { c, sent } = ctx();
    const template = buildMenuTemplate(c);
    const file = sub(byLabel(template, /^File$/));
    for (const [re, action] of [
      [/^New Run/, 'new-run'],
      [/^Open Run/, 'open-run'],
      [/^Import Engine Dump/, 'import-engine-dump'],
      [/^Export/, 'export'],
      [/^Settings/, 'settings'],
    ] as const) {
      click(byLabel(file, re));
      expect(sent.at(-1)).toEqual([action, undefined]);
    }
    expect(byLabel(file, /^Open Recent$/)).toBeDefined();
    expect(sub(byLabel(file, /^Open Recent$/))[0]).toMatchObject({ label: 'No recent runs', enabled: false });
  });

  it('Recent lists runs newest first; clicking one shows that run', () => {
    const { c, sent, cleared } = ctx({ recent: [{ runId: 'imported-a', label: 'a' }, { runId: 'sample:h100', label: 'h100' }] });
    const recent = sub(byLabel(sub(byLabel(buildMenuTemplate(c), /^File$/)), /^Open Recent$/));
    expect(recent.map((r) => r.label)).toEqual(['&1 a', '&2 h100', undefined, 'Clear Recent']);
    click(recent[1]);
    expect(sent).toEqual([['show-run', 'sample:h100']]);
    click(recent[3]);
    expect(cleared()).toBe(1);
  });

  it('View: Live, Timeline, Compare (keys shown, left to the renderer) and zoom roles', () => {
    const { c, sent } = ctx();
    const view = sub(byLabel(buildMenuTemplate(c), /^View$/));
    for (const [re, action, key] of [
      [/^Live$/, 'view-live', 'Alt+3'],
      [/^Timeline$/, 'view-timeline', 'Alt+4'],
      [/^Compare$/, 'view-compare', 'Alt+5'],
    ] as const) {
      const item = byLabel(view, re)!;
      expect(item).toMatchObject({ accelerator: key, registerAccelerator: false });
      click(item);
      expect(sent.at(-1)).toEqual([action, undefined]);
    }
    expect(view.map((i) => i.role).filter(Boolean)).toEqual(expect.arrayContaining(['zoomIn', 'zoomOut', 'resetZoom']));
    // No developer tools in a packaged build; present in development.
    expect(view.some((i) => i.role === 'toggleDevTools')).toBe(false);
    expect(sub(byLabel(buildMenuTemplate(ctx({ packaged: false }).c), /^View$/)).some((i) => i.role === 'toggleDevTools')).toBe(true);
  });

  it('Help → About shows the versions; macOS gets the app menu', () => {
    const { c, about } = ctx();
    click(byLabel(sub(byLabel(buildMenuTemplate(c), /^Help$/)), /^About KV Scope$/));
    expect(about()).toBe(1);
    const text = aboutDetail('0.1.0', { electron: '39.8.10', chrome: '142.0', node: '22.1.0', v8: '14.2' }, 'Linux 6.1 (x64)');
    expect(text.split('\n')).toEqual(['KV Scope 0.1.0', 'Electron 39.8.10', 'Chromium 142.0', 'Node.js 22.1.0', 'V8 14.2', 'OS Linux 6.1 (x64)']);
    expect(buildMenuTemplate(ctx({ platform: 'darwin' }).c)[0]!.label).toBe('KV Scope');
  });
});

describe('dock/taskbar progress and end-of-run notifications', () => {
  const status = (runId: string, s: 'running' | 'ok' | 'error', message?: string): PushMessage => ({ kind: 'run-status', runId, status: s, ...(message ? { message } : {}) });
  const progress = (runId: string, fraction: number | null): PushMessage => ({ kind: 'progress', runId, stage: 'rounds', fraction, etaS: null, message: '' });

  it('progress pushes drive one bar (mean of active runs), cleared when runs end', () => {
    let now = 0;
    const s = new ShellSignals(() => now);
    expect(s.handle(status('a', 'running')).progress).toBe(PROGRESS_INDETERMINATE);
    expect(s.handle(progress('a', 0.5)).progress).toBe(0.5);
    expect(s.handle(progress('a', 0.5)).progress).toBeUndefined(); // unchanged: no call
    expect(s.handle(progress('b', 0.1)).progress).toBeCloseTo(0.3);
    expect(s.handle(progress('b', 7)).progress).toBeCloseTo(0.75); // clamped to 1
    now = 1000;
    expect(s.handle(status('a', 'ok'))).toEqual({ progress: 1 });
    expect(s.handle(status('b', 'error')).progress).toBe(PROGRESS_NONE);
  });

  it('an export is a short task of its own: its last progress clears the bar, the run’s bar is untouched', () => {
    const s = new ShellSignals(() => 0);
    const exp = (fraction: number): PushMessage => ({ kind: 'progress', runId: 'r1', stage: 'export-perfetto', fraction, etaS: null, message: '' });
    expect(s.handle(exp(0.4)).progress).toBe(0.4);
    expect(s.handle(exp(1)).progress).toBe(PROGRESS_NONE);
    s.handle(progress('r2', 0.2));
    s.handle(exp(0.6));
    expect(s.handle(exp(1)).progress).toBe(0.2);
  });

  it('a long run that ends notifies (success and failure); a short one does not', () => {
    let now = 0;
    const s = new ShellSignals(() => now);
    s.handle(status('short', 'running'));
    s.handle(status('long', 'running'));
    now = 5_000;
    expect(s.handle(status('short', 'ok')).notification).toBeUndefined();
    now = LONG_RUN_MS + 1;
    expect(s.handle(status('long', 'error', 'CUDA out of memory')).notification).toEqual({
      title: 'KV Scope: run failed',
      body: 'long: CUDA out of memory',
    });
  });

  it('a sweep notifies once when done, not once per run', () => {
    let now = 0;
    const s = new ShellSignals(() => now);
    const row = (runId: string, st: 'ok' | 'error' | 'running') => ({ host: 'h100', users: 2, runId, status: st, e2e_ns: null, ttft_ns_mean: null, error: null });
    s.handle({ kind: 'sweep-status', sweepId: 'sw1', rows: [row('r2', 'running'), row('r4', 'running')], done: false });
    s.handle(status('r2', 'running'));
    now = LONG_RUN_MS * 2;
    expect(s.handle(status('r2', 'ok')).notification).toBeUndefined();
    const end = s.handle({ kind: 'sweep-status', sweepId: 'sw1', rows: [row('r2', 'ok'), row('r4', 'error')], done: true });
    expect(end.notification).toEqual({ title: 'KV Scope: sweep finished', body: '1 of 2 runs ok (sw1)' });
  });
});
