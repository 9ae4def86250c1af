/**
 * The preload's API object, built from an ipcRenderer-shaped object so it can be tested without
 * Electron. One function per action, nothing else: the keys are exactly CORE_METHODS, onPush and
 * pathForFile (test/unit/preload-surface.test.ts lists them and fails on any other).
 */
import { CORE_METHODS, ipcChannel, PUSH_CHANNEL, type CoreMethod, type KvScopeApi, type PushMessage } from '../shared/api';

export interface IpcLike {
  invoke(channel: string, ...args: unknown[]): Promise<unknown>;
  on(channel: string, listener: (event: unknown, ...args: unknown[]) => void): unknown;
  removeListener(channel: string, listener: (event: unknown, ...args: unknown[]) => void): unknown;
}

/** Electron's webUtils (only getPathForFile is used). */
export interface FilePathsLike {
  getPathForFile(file: never): string;
}

export function createPreloadApi(ipc: IpcLike, files?: FilePathsLike): KvScopeApi {
  const invoke = (method: CoreMethod) => (...args: unknown[]) => ipc.invoke(ipcChannel(method), ...args);
  const api: Record<string, unknown> = {
    onPush(listener: (message: PushMessage) => void) {
      // The IPC event object never reaches the page: it carries `sender`, a door back into ipcRenderer.
      const handler = (_event: unknown, message: unknown) => listener(message as PushMessage);
      ipc.on(PUSH_CHANNEL, handler);
      return () => {
        ipc.removeListener(PUSH_CHANNEL, handler);
      };
    },
    pathForFile(file: Blob): string | null {
      // Drag and drop: File.path is gone since Electron 32; webUtils answers in the preload only.
      // An empty string means a File made in JS, not one from disk.
      if (!files) return null;
      try {
        return files.getPathForFile(file as never) || null;
      } catch {
        return null;
      }
    },
  };
  for (const m of CORE_METHODS) api[m] = invoke(m);
  return Object.freeze(api) as unknown as KvScopeApi;
}
