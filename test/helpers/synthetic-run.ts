/**
 * A small run that follows docs/protocol.md, built in code for tests of the readers and the ledger
 * (tests that need a real run use resources/samples/ and test/fixtures/runs/ instead).
 * GPU pool: 6 blocks; 2 users × 4 blocks of context: offloads happen from round 1 on.
 */
import type { KvEvent } from '../../src/shared/protocol';

export function syntheticRun(opts: { users?: number; rounds?: number; gpuBlocks?: number; hostBlocks?: number } = {}): KvEvent[] {
  const users = opts.users ?? 2;
  const rounds = opts.rounds ?? 3;
  const gpuCap = opts.gpuBlocks ?? 6;
  const hostCap = opts.hostBlocks ?? 64;
  const out: Array<Record<string, unknown>> = [];
  let t = 0;
  const emit = (type: string, fields: Record<string, unknown>) => {
    t += 1000;
    out.push({ seq: out.length, t, type, ...fields });
  };
  emit('run.start', {
    run_id: 'synthetic-1',
    protocol: 1,
    agent_version: 'test',
    engine: { name: 'torch', version: 'test' },
    config: { engine: 'torch', model: 'tiny', users, rounds, block_tokens: 32, host_kv_bytes: hostCap * 4096 },
    host: { hostname: 'test', gpus: [{ index: 0, name: 'Test GPU' }] },
    clock: { unix_ns_at_t0: 1.7e18 },
  });
  emit('pool', { pool: 'gpu', capacity_blocks: gpuCap, block_tokens: 32, block_bytes: 4096 });
  emit('pool', { pool: 'host', capacity_blocks: hostCap, block_tokens: 32, block_bytes: 4096 });
  const gpu: string[] = [];
  const host: string[] = [];
  const owned = new Map<number, string[]>();
  let next = 0;
  const makeRoom = (need: number, user: number, round: number) => {
    while (gpu.length + need > gpuCap) {
      const victim = gpu.find((id) => !owned.get(user)!.includes(id));
      if (!victim) throw new Error('synthetic run: pool too small');
      gpu.splice(gpu.indexOf(victim), 1);
      if (host.length >= hostCap) {
        const old = host.shift()!;
        emit('blocks', { op: 'evict', pool: 'host', ids: [old] });
      }
      host.push(victim);
      emit('blocks', { op: 'offload', ids: [victim], user, round });
      const t0 = t;
      emit('xfer', { dir: 'd2h', bytes: 4096, start: t0, end: t0 + 500, src_mem: 'device', dst_mem: 'pinned', device: 0, stream: 7, source: 'cupti' });
    }
  };
  emit('phase', { name: 'context', state: 'begin' });
  for (let r = 0; r <= rounds; r++) {
    if (r === 1) emit('phase', { name: 'rounds', state: 'begin' });
    for (let u = 0; u < users; u++) emit('req', { user: u, round: r, phase: 'queued' });
    for (let u = 0; u < users; u++) {
      if (!owned.has(u)) owned.set(u, []);
      const mine = owned.get(u)!;
      emit('req', { user: u, round: r, phase: 'scheduled' });
      const back = mine.filter((id) => host.includes(id));
      if (back.length) {
        makeRoom(back.length, u, r);
        for (const id of back) host.splice(host.indexOf(id), 1);
        gpu.push(...back);
        emit('blocks', { op: 'onboard', ids: back, user: u, round: r });
        emit('xfer', { dir: 'h2d', bytes: 4096 * back.length, start: t, end: t + 800, src_mem: 'pinned', dst_mem: 'device', device: 0, stream: 7, source: 'cupti' });
      }
      const hits = mine.filter((id) => gpu.includes(id) && !back.includes(id));
      if (hits.length) emit('blocks', { op: 'hit', ids: hits, user: u, round: r });
      const fresh = r === 0 ? 2 : 1;
      makeRoom(fresh, u, r);
      const ids = Array.from({ length: fresh }, () => `b${next++}`);
      gpu.push(...ids);
      mine.push(...ids);
      emit('blocks', { op: 'store', ids, user: u, round: r });
      emit('req', { user: u, round: r, phase: 'first_token' });
      emit('gpu', { index: 0, mem_used_bytes: 1e9, util_pct: 50, source: 'nvidia-smi' });
      emit('req', {
        user: u,
        round: r,
        phase: 'done',
        prompt_tokens: 64 * (r + 1),
        output_tokens: 64,
        reused_gpu_tokens: hits.length * 32,
        reused_host_tokens: back.length * 32,
        computed_tokens: fresh * 32,
      });
    }
    if (r === 0) emit('phase', { name: 'context', state: 'end' });
    if (r >= 1) emit('round', { round: r, e2e_ns: 5000, ttft_ns: Array.from({ length: users }, () => 2000) });
  }
  emit('phase', { name: 'rounds', state: 'end' });
  // The summary counts what the blocks lines moved (rule summary_mismatch).
  const moved = (op: string) => out.filter((e) => e.type === 'blocks' && e.op === op).reduce((n, e) => n + (e.ids as unknown[]).length, 0);
  emit('run.end', {
    status: 'ok',
    summary: {
      e2e_ns: 1,
      ttft_ns_mean: 1,
      ttft_ns_p50: 1,
      ttft_ns_p99: 1,
      blocks_offloaded: moved('offload'),
      blocks_onboarded: moved('onboard'),
      blocks_evicted: moved('evict'),
      bytes_h2d: 4096 * moved('onboard'),
      bytes_d2h: 4096 * moved('offload'),
    },
  });
  return out as unknown as KvEvent[];
}

export const toJsonl = (events: unknown[]): string => events.map((e) => JSON.stringify(e)).join('\n') + '\n';
