/**
 * The browser bridge: KvScopeApi over the `kvscope serve` WebSocket. Satisfies the same type as the
 * Electron preload, so the renderer cannot tell which one it has.
 */
import { CORE_METHODS, type CoreMethod, type KvScopeApi, type PushMessage } from '../../shared/api';
import { err, type Result } from '../../shared/result';

type Pending = (r: Result<unknown>) => void;

export function createWsBridge(url: string): KvScopeApi {
  const pending = new Map<number, Pending>();
  const listeners = new Set<(m: PushMessage) => void>();
  let nextId = 1;
  let socket: WebSocket | null = null;
  let opening: Promise<WebSocket> | null = null;

  function connect(): Promise<WebSocket> {
    if (socket && socket.readyState === WebSocket.OPEN) return Promise.resolve(socket);
    if (opening) return opening;
    opening = new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => {
        socket = ws;
        opening = null;
        resolve(ws);
      };
      ws.onerror = () => {
        opening = null;
        reject(new Error('cannot reach the KV Scope server (is `kvscope serve` still running?)'));
      };
      ws.onclose = () => {
        socket = null;
        for (const [, p] of pending) p(err('io_error', 'connection to the KV Scope server closed'));
        pending.clear();
      };
      ws.onmessage = (ev: MessageEvent<string>) => {
        const msg = JSON.parse(ev.data) as { id?: number; result?: Result<unknown>; push?: PushMessage };
        if (msg.push) for (const l of listeners) l(msg.push);
        else if (typeof msg.id === 'number' && msg.result) {
          pending.get(msg.id)?.(msg.result);
          pending.delete(msg.id);
        }
      };
    });
    return opening;
  }

  async function call(method: CoreMethod, args: unknown[]): Promise<Result<unknown>> {
    let ws: WebSocket;
    try {
      ws = await connect();
    } catch (e) {
      return err('io_error', (e as Error).message);
    }
    const id = nextId++;
    return new Promise((resolve) => {
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, args }));
    });
  }

  const api: Record<string, unknown> = {
    onPush(listener: (m: PushMessage) => void) {
      listeners.add(listener);
      void connect().catch(() => undefined);
      return () => listeners.delete(listener);
    },
  };
  for (const m of CORE_METHODS) api[m] = (...args: unknown[]) => call(m, args);
  return api as unknown as KvScopeApi;
}

/** The bridge this page should use: the preload's in Electron, else the WebSocket one. */
export function resolveBridge(): KvScopeApi {
  const w = window as unknown as { kvscope?: KvScopeApi };
  if (w.kvscope) return w.kvscope;
  const token = new URLSearchParams(window.location.search).get('token') ?? '';
  const wsUrl = `ws://${window.location.host}/api?token=${encodeURIComponent(token)}`;
  return createWsBridge(wsUrl);
}
