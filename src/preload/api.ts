/**
 * The preload's API object, built from an ipcRenderer-shaped object so it can be tested without
 * Electron. One function per action, nothing else.
 */
import { CORE_METHODS, ipcChannel, PUSH_CHANNEL, type CoreMethod, type KvScopeApi, type PushMessage } from '../shared/api';

export interface IpcLike {
  invoke(channel: string, ...args: unknown[]): Promise<unknown>;
  on(channel: string, listener: (event: unknown, ...args: unknown[]) => void): unknown;
  removeListener(channel: string, listener: (event: unknown, ...args: unknown[]) => void): unknown;
}

export function createPreloadApi(ipc: IpcLike): KvScopeApi {
  const invoke = (method: CoreMethod) => (...args: unknown[]) => ipc.invoke(ipcChannel(method), ...args);
  const api: Record<string, unknown> = {
    onPush(listener: (message: PushMessage) => void) {
      const handler = (_event: unknown, message: unknown) => listener(message as PushMessage);
      ipc.on(PUSH_CHANNEL, handler);
      return () => {
        ipc.removeListener(PUSH_CHANNEL, handler);
      };
    },
  };
  for (const m of CORE_METHODS) api[m] = invoke(m);
  return Object.freeze(api) as unknown as KvScopeApi;
}
