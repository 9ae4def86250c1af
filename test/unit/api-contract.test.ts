import { describe, expect, it } from 'vitest';
import { CORE_METHODS, ipcChannel, PUSH_CHANNEL } from '../../src/shared/api';
import { createPreloadApi, type IpcLike } from '../../src/preload/api';
import { createCore } from '../../src/main/core/app-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function fakeIpc() {
  const calls: Array<[string, unknown[]]> = [];
  const listeners = new Map<string, Set<(e: unknown, ...a: unknown[]) => void>>();
  const ipc: IpcLike = {
    invoke: async (channel, ...args) => {
      calls.push([channel, args]);
      return { ok: true, value: null };
    },
    on: (channel, l) => listeners.set(channel, (listeners.get(channel) ?? new Set()).add(l)),
    removeListener: (channel, l) => listeners.get(channel)?.delete(l),
  };
  return { ipc, calls, listeners };
}

describe('the bridge contract', () => {
  it('the preload exposes exactly the API methods and nothing else', () => {
    const { ipc } = fakeIpc();
    const api = createPreloadApi(ipc);
    expect(Object.keys(api).sort()).toEqual([...CORE_METHODS, 'onPush', 'pathForFile'].sort());
    expect(Object.isFrozen(api)).toBe(true);
  });

  it('each preload function invokes its own channel with its arguments', async () => {
    const { ipc, calls } = fakeIpc();
    const api = createPreloadApi(ipc) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    for (const m of CORE_METHODS) await api[m]!('arg-1');
    expect(calls).toEqual(CORE_METHODS.map((m) => [ipcChannel(m), ['arg-1']]));
  });

  it('onPush subscribes to the push channel and its return value unsubscribes', () => {
    const { ipc, listeners } = fakeIpc();
    const api = createPreloadApi(ipc);
    const got: unknown[] = [];
    const off = api.onPush((m) => got.push(m));
    for (const l of listeners.get(PUSH_CHANNEL)!) l({}, { kind: 'run-status', runId: 'r', status: 'ok' });
    expect(got).toHaveLength(1);
    off();
    expect(listeners.get(PUSH_CHANNEL)!.size).toBe(0);
  });

  it('the core implements every method', async () => {
    const core = await createCore({ runsDir: mkdtempSync(join(tmpdir(), 'kvscope-core-')), samplesDir: null, shell: 'browser' });
    for (const m of CORE_METHODS) expect(typeof core.handlers[m]).toBe('function');
    const info = await core.handlers.getAppInfo();
    expect(info.ok && info.value.name).toBe('KV Scope');
  });
});
