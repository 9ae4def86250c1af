/** A WebSocket client of a running `kvscope serve` bridge, with the token and Origin it requires, once open. */
import { WebSocket } from 'ws';
import type { RunningServer } from '../../src/main/core/serve';

export async function connectBridge(server: RunningServer): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/api?token=${server.token}`, { origin: `http://127.0.0.1:${server.port}` });
  await new Promise((r) => ws.once('open', r));
  return ws;
}
