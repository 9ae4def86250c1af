/**
 * The browser bridge: KvScopeApi over the `kvscope serve` WebSocket. Satisfies the same type as the
 * Electron preload, so the renderer cannot tell which one it has.
 */
import { BINARY_FRAME_PREFIX_BYTES, CORE_METHODS, type CoreMethod, type KvScopeApi, type LoadedRun, type PushMessage } from '../../shared/api';
import type { KvEvent } from '../../shared/protocol';
import { err, type Result } from '../../shared/result';

type Pending = (r: Result<unknown>) => void;

/**
 * Loads a run with its events delivered in chunks to `onEvents` (the resolved LoadedRun's `events`
 * is empty). Offered by the browser bridge only; the window uses it when present (run-data.ts).
 */
export type LoadRunStreaming = (runId: string, onEvents: (events: KvEvent[]) => void) => Promise<Result<LoadedRun>>;

export function createWsBridge(url: string): KvScopeApi {
  const pending = new Map<number, Pending>();
  const streams = new Map<number, (events: KvEvent[]) => void>();
  const listeners = new Set<(m: PushMessage) => void>();
  let nextId = 1;
  let socket: WebSocket | null = null;
  let opening: Promise<WebSocket> | null = null;

  function connect(): Promise<WebSocket> {
    if (socket && socket.readyState === WebSocket.OPEN) return Promise.resolve(socket);
    if (opening) return opening;
    opening = new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
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
        streams.clear();
      };
      ws.onmessage = (ev: MessageEvent<string | ArrayBuffer>) => {
        if (typeof ev.data !== 'string') {
          // A result carrying bytes (serve.ts binaryResultFrame): id, JSON of the rest, the bytes.
          const view = new DataView(ev.data);
          const id = view.getUint32(0, true);
          const jsonBytes = view.getUint32(4, true);
          const head = JSON.parse(new TextDecoder().decode(new Uint8Array(ev.data, BINARY_FRAME_PREFIX_BYTES, jsonBytes))) as { key: string; value: Record<string, unknown> };
          const start = (BINARY_FRAME_PREFIX_BYTES + jsonBytes + 7) & ~7;
          pending.get(id)?.({ ok: true, value: { ...head.value, [head.key]: new Uint8Array(ev.data, start) } });
          pending.delete(id);
          return;
        }
        const msg = JSON.parse(ev.data) as { id?: number; result?: Result<unknown>; events?: KvEvent[]; push?: PushMessage };
        if (msg.push) for (const l of listeners) l(msg.push);
        else if (typeof msg.id === 'number' && msg.events) streams.get(msg.id)?.(msg.events);
        else if (typeof msg.id === 'number' && msg.result) {
          pending.get(msg.id)?.(msg.result);
          pending.delete(msg.id);
          streams.delete(msg.id);
        }
      };
    });
    return opening;
  }

  async function call(method: CoreMethod, args: unknown[], onEvents?: (events: KvEvent[]) => void): Promise<Result<unknown>> {
    let ws: WebSocket;
    try {
      ws = await connect();
    } catch (e) {
      return err('io_error', (e as Error).message);
    }
    const id = nextId++;
    return new Promise((resolve) => {
      pending.set(id, resolve);
      if (onEvents) streams.set(id, onEvents);
      ws.send(JSON.stringify(onEvents ? { id, method, args, stream: true } : { id, method, args }));
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
  const loadRunStreaming: LoadRunStreaming = (runId, onEvents) => call('loadRun', [runId], onEvents) as Promise<Result<LoadedRun>>;
  // Not part of KvScopeApi (the preload has no such thing): run-data.ts looks for it by name.
  Object.defineProperty(api, 'loadRunStreaming', { value: loadRunStreaming, enumerable: false });
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
