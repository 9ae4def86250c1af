/**
 * The only place that touches ipcMain. Each KvScopeApi method becomes one `ipcMain.handle`
 * channel; the sender frame is checked on every call so only our own window's top frame can use it.
 */
import { ipcMain, type IpcMainInvokeEvent, type WebContents } from 'electron';
import { CORE_METHODS, ipcChannel, PUSH_CHANNEL, type CoreHandlers } from '../../shared/api';
import { err, type Result } from '../../shared/result';
import type { Core } from '../core/app-core';

/** True when the call comes from the top frame of a page we loaded ourselves. */
export function isTrustedSender(event: Pick<IpcMainInvokeEvent, 'senderFrame'>, trustedUrlPrefix: string): boolean {
  const frame = event.senderFrame;
  if (!frame || frame.parent) return false;
  return frame.url.startsWith(trustedUrlPrefix);
}

export function registerIpc(core: Core, trustedUrlPrefix: string): void {
  for (const method of CORE_METHODS) {
    ipcMain.handle(ipcChannel(method), async (event, ...args: unknown[]): Promise<Result<unknown>> => {
      if (!isTrustedSender(event, trustedUrlPrefix)) return err('invalid_argument', 'call from an untrusted frame refused');
      const fn = core.handlers[method] as (...a: unknown[]) => Promise<Result<unknown>>;
      return fn(...args);
    });
  }
}

/** Forwards core pushes to a window's renderer, batched by the core already. */
export function forwardPushes(core: Core, contents: WebContents): () => void {
  return core.addPushListener((message) => {
    if (!contents.isDestroyed()) contents.send(PUSH_CHANNEL, message);
  });
}

export type { CoreHandlers };
