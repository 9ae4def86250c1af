/**
 * The only place that touches ipcMain. Each KvScopeApi method becomes one `ipcMain.handle`
 * channel; the sender frame is checked on every call so only our own window's top frame, showing
 * our own renderer, can use it (Electron security checklist #17, "Validate the sender of all IPC
 * messages").
 */
import { ipcMain, type IpcMainInvokeEvent, type WebContents } from 'electron';
import { CORE_METHODS, ipcChannel, PUSH_CHANNEL, type CoreHandlers } from '../../shared/api';
import { err, type Result } from '../../shared/result';
import type { Core } from '../core/app-core';
import { isTrustedSender, type TrustedRenderer } from '../window-options';

export function registerIpc(core: Core, trusted: TrustedRenderer): () => void {
  for (const method of CORE_METHODS) {
    ipcMain.handle(ipcChannel(method), async (event: IpcMainInvokeEvent, ...args: unknown[]): Promise<Result<unknown>> => {
      if (!isTrustedSender(event, trusted)) return err('invalid_argument', 'call from an untrusted frame refused');
      const fn = core.handlers[method] as (...a: unknown[]) => Promise<Result<unknown>>;
      return fn(...args);
    });
  }
  return () => {
    for (const method of CORE_METHODS) ipcMain.removeHandler(ipcChannel(method));
  };
}

/** Forwards core pushes to a window's renderer, batched by the core already. */
export function forwardPushes(core: Core, contents: WebContents): () => void {
  return core.addPushListener((message) => {
    if (!contents.isDestroyed()) contents.send(PUSH_CHANNEL, message);
  });
}

export type { CoreHandlers };
