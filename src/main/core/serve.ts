/**
 * `kvscope serve`: the browser bridge. Serves the built renderer and a WebSocket API that speaks
 * exactly KvScopeApi, on 127.0.0.1 only. A random token (in the URL printed on the first line of
 * stdout) is required on every API connection, and the Origin must be this server's own, so no
 * other page or local user process can drive the core. Used by the end-to-end tests and by users
 * without a desktop session (through an SSH tunnel).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { BINARY_FRAME_PREFIX_BYTES, binaryField, CORE_METHODS, type CoreMethod, type LoadedRun, type PushMessage } from '../../shared/api';
import type { KvEvent } from '../../shared/protocol';
import { err, type Result } from '../../shared/result';
import type { Core } from './app-core';

export interface ServeOptions {
  core: Core;
  /** The built renderer (out/renderer). */
  staticDir: string;
  port?: number;
  token?: string;
}

export interface RunningServer {
  url: string;
  port: number;
  token: string;
  server: Server;
  close(): Promise<void>;
}

/**
 * Wire messages of the bridge. A `loadRun` request with `stream: true` gets the run's events as
 * `{id, events}` chunks of at most STREAM_CHUNK before its result (whose `events` is then empty):
 * the window compiles each chunk and drops it, so a run of a million copies never exists as a
 * million objects in the page at once (one 100+ MB message and its objects cost the renderer a
 * ~0.5 s garbage-collection pause right after loading; bench/renderer-timeline.bench.ts).
 */
export type BridgeRequest = { id: number; method: CoreMethod; args: unknown[]; stream?: boolean };
export type BridgeMessage = { id: number; result: Result<unknown> } | { id: number; events: KvEvent[] } | { push: PushMessage };
// (and binary frames: binaryResultFrame)

export const STREAM_CHUNK = 20_000;

/**
 * A result whose value carries bytes (loadRunIndex's index) travels as one binary frame instead
 * of JSON (shared/api.ts BINARY_FRAME_PREFIX_BYTES has the layout). Errors still travel as JSON.
 */
export function binaryResultFrame(id: number, value: Record<string, unknown>, key: string): Buffer {
  const bytes = value[key] as Uint8Array;
  const json = Buffer.from(JSON.stringify({ key, value: { ...value, [key]: null } }));
  const start = (BINARY_FRAME_PREFIX_BYTES + json.length + 7) & ~7;
  const frame = Buffer.alloc(start + bytes.length);
  frame.writeUInt32LE(id >>> 0, 0);
  frame.writeUInt32LE(json.length, 4);
  json.copy(frame, BINARY_FRAME_PREFIX_BYTES);
  frame.set(bytes, start);
  return frame;
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

/** Same CSP as the Electron window, plus the bridge's own WebSocket. */
function csp(port: number): string {
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    `connect-src 'self' ws://127.0.0.1:${port}`,
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

function tokenMatches(given: string | null, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const token = options.token ?? randomBytes(24).toString('base64url');
  const { core, staticDir } = options;
  let port = 0;

  async function serveStatic(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname.startsWith('/api')) {
      // API calls go over the WebSocket only, and only with the token.
      res.writeHead(tokenMatches(url.searchParams.get('token'), token) ? 400 : 401).end();
      return;
    }
    const rel = normalize(decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname)).replace(/^([/\\])+/, '');
    const file = join(staticDir, rel);
    if (!file.startsWith(normalize(staticDir) + sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const s = await stat(file);
      if (!s.isFile()) throw new Error('not a file');
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': MIME[extname(file)] ?? 'application/octet-stream',
        'content-security-policy': csp(port),
        'x-content-type-options': 'nosniff',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  }

  const server = createServer((req, res) => {
    serveStatic(req, res).catch(() => res.writeHead(500).end());
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 });

  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const origin = req.headers.origin;
    const allowed = [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
    if (url.pathname !== '/api' || !tokenMatches(url.searchParams.get('token'), token)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\n\r\n');
      return;
    }
    if (!origin || !allowed.includes(origin)) {
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => attach(ws));
  });

  function attach(ws: WebSocket): void {
    /**
     * Sends one message; false when it could not be encoded. Nothing from a run or a host may
     * stop this process: a value that JSON.stringify cannot write (nested too deep for the stack)
     * fails the one call it answers, with an error Result, and a push that cannot be written is
     * dropped.
     */
    const send = (m: BridgeMessage): boolean => {
      let text: string;
      try {
        text = JSON.stringify(m);
      } catch (e) {
        if ('push' in m) return false;
        text = JSON.stringify({ id: m.id, result: err('internal', `the answer could not be sent to the window (${(e as Error).message})`) } satisfies BridgeMessage);
        if (ws.readyState === ws.OPEN) ws.send(text);
        return false;
      }
      if (ws.readyState === ws.OPEN) ws.send(text);
      return true;
    };
    const remove = core.addPushListener((push) => void send({ push }));
    ws.on('close', remove);
    ws.on('message', (data) => {
      void answer(data).catch(() => undefined);
    });
    async function answer(data: unknown): Promise<void> {
      let req: BridgeRequest;
      try {
        req = JSON.parse(String(data)) as BridgeRequest;
      } catch {
        return;
      }
      if (typeof req !== 'object' || req === null) return;
      const id = typeof req.id === 'number' ? req.id : -1;
      if (!(CORE_METHODS as readonly string[]).includes(req.method)) {
        send({ id, result: err('invalid_argument', `unknown method ${String(req.method)}`) });
        return;
      }
      const fn = core.handlers[req.method] as (...a: unknown[]) => Promise<Result<unknown>>;
      const args = Array.isArray(req.args) ? req.args : [];
      // A handler that throws instead of resolving to a Result must still answer, or the window
      // would wait on that call forever.
      const result = await Promise.resolve()
        .then(() => fn(...args))
        .catch((e: unknown) => err('internal', `${req.method} failed: ${(e as Error)?.message ?? String(e)}`));
      const key = result.ok ? binaryField(result.value) : null;
      if (result.ok && key) {
        let frame: Buffer;
        try {
          frame = binaryResultFrame(id, result.value as Record<string, unknown>, key);
        } catch (e) {
          send({ id, result: err('internal', `the answer could not be sent to the window (${(e as Error).message})`) });
          return;
        }
        if (ws.readyState === ws.OPEN) ws.send(frame);
        return;
      }
      if (req.method === 'loadRun' && req.stream === true && result.ok) {
        const { events, ...rest } = result.value as LoadedRun;
        for (let i = 0; i < events.length; i += STREAM_CHUNK) if (!send({ id, events: events.slice(i, i + STREAM_CHUNK) })) return;
        send({ id, result: { ok: true, value: { ...rest, events: [] } } });
        return;
      }
      send({ id, result });
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}/?token=${token}`,
    port,
    token,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
