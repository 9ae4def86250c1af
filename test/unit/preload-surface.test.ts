import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CORE_METHODS } from '../../src/shared/api';
import { createPreloadApi, type IpcLike } from '../../src/preload/api';

/**
 * The renderer's whole door to the app. The preload's keys must be exactly the typed API: the
 * request/response methods (CORE_METHODS, which engineers extend in src/shared/api.ts) plus the two
 * local members. A preload that leaks ipcRenderer, `send`, or a generic `invoke(channel)` fails.
 * The hand-written list below is what the API held when this test was written: none may vanish.
 */
const LOCAL_MEMBERS = ['onPush', 'pathForFile'];
const KNOWN_KEYS = [
  'answerHostKey',
  'cancelRun',
  'deleteRun',
  'forgetSecrets',
  'getAppInfo',
  'getSettings',
  'importRun',
  'listHosts',
  'listRuns',
  'loadRun',
  'notify',
  'onPush',
  'openFileDialog',
  'openPath',
  'pathForFile',
  'probeHost',
  'providePassphrase',
  'removeHost',
  'renameRun',
  'resumeRun',
  'revealRun',
  'saveHost',
  'saveSettings',
  'startRun',
  'startSweep',
];

function ipc() {
  const invoked: string[] = [];
  const fake: IpcLike = {
    invoke: async (channel) => {
      invoked.push(channel);
      return { ok: true, value: null };
    },
    on: () => undefined,
    removeListener: () => undefined,
  };
  return { fake, invoked };
}

describe('the preload surface', () => {
  it('exposes exactly the typed API, frozen, with only functions', () => {
    const api = createPreloadApi(ipc().fake) as unknown as Record<string, unknown>;
    const allowed = [...CORE_METHODS, ...LOCAL_MEMBERS];
    for (const k of Object.keys(api)) expect(allowed, `preload key ${k} is not part of KvScopeApi`).toContain(k);
    expect(Object.keys(api).sort()).toEqual([...allowed].sort());
    for (const k of KNOWN_KEYS) expect(Object.keys(api)).toContain(k);
    expect(Object.isFrozen(api)).toBe(true);
    for (const k of Object.keys(api)) expect(typeof api[k]).toBe('function');
    for (const forbidden of ['invoke', 'send', 'on', 'ipcRenderer', 'require', 'process']) expect(api[forbidden]).toBeUndefined();
  });

  it('each call goes to its own kvscope: channel and nowhere else', async () => {
    const { fake, invoked } = ipc();
    const api = createPreloadApi(fake) as unknown as Record<string, (...a: unknown[]) => unknown>;
    await api.getSettings!();
    await api.openPath!('/tmp/x.kvscope');
    expect(invoked).toEqual(['kvscope:getSettings', 'kvscope:openPath']);
  });

  it('pathForFile answers through webUtils, and null without it or for files not on disk', () => {
    const file = new Blob(['x']);
    const withUtils = createPreloadApi(ipc().fake, { getPathForFile: () => '/home/u/run/events.jsonl' });
    expect(withUtils.pathForFile!(file)).toBe('/home/u/run/events.jsonl');
    expect(createPreloadApi(ipc().fake, { getPathForFile: () => '' }).pathForFile!(file)).toBeNull();
    expect(
      createPreloadApi(ipc().fake, {
        getPathForFile: () => {
          throw new TypeError('not a File');
        },
      }).pathForFile!(file),
    ).toBeNull();
    expect(createPreloadApi(ipc().fake).pathForFile!(file)).toBeNull();
  });

  it('the preload entry exposes only that object, under one name', () => {
    const src = readFileSync(join(process.cwd(), 'src/preload/index.ts'), 'utf8');
    const exposures = [...src.matchAll(/exposeInMainWorld\(\s*'([^']+)'\s*,\s*([^)]+\))/g)];
    expect(exposures.map((m) => [m[1], m[2]])).toEqual([['kvscope', 'createPreloadApi(ipcRenderer, webUtils)']]);
  });
});
