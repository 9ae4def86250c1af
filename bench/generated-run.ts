/**
 * A generated run shaped like a traced 16-user point of the seed's sweep (the bundled 70B users-8
 * run, doubled in users): 16 users × 11 rounds (0 = context), 512-block contexts, a GPU pool that
 * holds 2 users, a large host pool. Every admission offloads another user's blocks and onboards
 * its own (lines of 32 block ids), each block copied as `copiesPerBlock` CUPTI copies; nvidia-smi
 * samples every 100 ms. It keeps docs/protocol.md's block rules (the ledger finds nothing to report),
 * and `copiesPerBlock` is chosen so the log has about `targetLines` lines (1,000,000 by default).
 */
const USERS = 16;
const ROUNDS = 10;
const CONTEXT_BLOCKS = 512;
const BLOCK_BYTES = 5_242_880;
const LINE_IDS = 32;
const GPU_BLOCKS = 2 * (CONTEXT_BLOCKS + 2 * ROUNDS) + 64;

export function* generatedSweepPointRun(targetLines = 1_000_000): Generator<Record<string, unknown>> {
  // Admissions that move blocks: rounds 1..R for every user, each offloading and onboarding a context.
  const copiesPerBlock = Math.max(1, Math.round(targetLines / (ROUNDS * USERS * 2 * CONTEXT_BLOCKS)));
  // Copy times and samples vary as measured ones do (a fixed-seed generator: the same run every time),
  // so the index compresses as a real run's would, not as a perfectly regular one's.
  let seed = 0x9e3779b9;
  const random = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
  let t = 0;
  let nextSample = 0;
  const ev = (type: string, f: Record<string, unknown>) => ({ t: Math.round(t), type, ...f });
  const samples = function* (): Generator<Record<string, unknown>> {
    // A sample is written when its time has come (its t is when it is written, as the agent's are).
    if (nextSample <= t) {
      yield ev('gpu', { index: 0, mem_used_bytes: Math.round(7.6e10 + random() * 1e9), util_pct: Math.round(40 + random() * 60), pcie_rx_bytes_per_s: Math.round(4e10 + random() * 1.5e10), pcie_tx_bytes_per_s: Math.round(4e10 + random() * 1.5e10), source: 'nvidia-smi' });
      while (nextSample <= t) nextSample += 1e8;
    }
  };
  yield ev('run.start', {
    run_id: 'generated-16u',
    protocol: 1,
    agent_version: 'bench',
    engine: { name: 'torch', version: 'bench' },
    config: { engine: 'torch', model: 'llama-3.1-70b-fp8', users: USERS, rounds: ROUNDS, context_tokens: 16000, new_tokens: 64, output_tokens: 64, block_tokens: 32, host_kv_bytes: 55e9, trace: true, sample_ms: 100 },
    host: { hostname: 'bench', gpus: [{ index: 0, name: 'NVIDIA H100 80GB HBM3', memory_total_bytes: 85e9, pcie_gen: 5, pcie_width: 16 }] },
    clock: { unix_ns_at_t0: 1.7645e18 },
  });
  yield ev('pool', { pool: 'gpu', capacity_blocks: GPU_BLOCKS, block_tokens: 32, block_bytes: BLOCK_BYTES });
  yield ev('pool', { pool: 'host', capacity_blocks: 10_490, block_tokens: 32, block_bytes: BLOCK_BYTES });
  yield ev('phase', { name: 'context', state: 'begin' });
  const owned: number[][] = Array.from({ length: USERS }, () => []);
  const onGpu = new Set<number>();
  const onHost = new Set<number>();
  /** Users in the order they last ran on the GPU (least recent first). */
  const lru: number[] = [];
  let nextId = 1;
  const copy = function* (dir: 'h2d' | 'd2h', blocks: number): Generator<Record<string, unknown>> {
    // ~54 GB/s: one block in ~97 µs, split into equal copies; each copy's time varies ±15 %, with
    // a gap of up to 2 µs before it.
    const each = Math.round(BLOCK_BYTES / copiesPerBlock);
    const ns = (each / 54e9) * 1e9;
    for (let i = 0; i < blocks * copiesPerBlock; i++) {
      t += random() * 2000;
      const start = t;
      t += ns * (0.85 + 0.3 * random());
      yield ev('xfer', { dir, bytes: each, start: Math.round(start), end: Math.round(t), src_mem: dir === 'h2d' ? 'pinned' : 'device', dst_mem: dir === 'h2d' ? 'device' : 'pinned', device: 0, stream: dir === 'h2d' ? 7 : 8, source: 'cupti' });
      if (i % 512 === 0) yield* samples();
    }
  };
  const moveLines = function* (op: 'offload' | 'onboard' | 'store' | 'hit', ids: number[], user: number, round: number): Generator<Record<string, unknown>> {
    for (let i = 0; i < ids.length; i += LINE_IDS) {
      const part = ids.slice(i, i + LINE_IDS);
      yield ev('blocks', { op, ids: part, user, round });
      if (op === 'offload' || op === 'onboard') yield* copy(op === 'offload' ? 'd2h' : 'h2d', part.length);
    }
  };
  for (let round = 0; round <= ROUNDS; round++) {
    if (round === 1) {
      yield ev('phase', { name: 'context', state: 'end' });
      yield ev('phase', { name: 'rounds', state: 'begin' });
    }
    const roundStart = t;
    for (let u = 0; u < USERS; u++) {
      t = roundStart + u * 1e6;
      yield ev('req', { user: u, round, phase: 'queued' });
    }
    for (let u = 0; u < USERS; u++) {
      t += 2e6;
      yield ev('req', { user: u, round, phase: 'scheduled' });
      const mine = owned[u]!;
      const back = mine.filter((b) => onHost.has(b));
      const grow = round === 0 ? CONTEXT_BLOCKS : 2;
      // Room for this user's blocks: offload whole other users, least recently run first.
      while (onGpu.size + back.length + grow > GPU_BLOCKS) {
        const victim = lru.find((v) => v !== u && owned[v]!.some((b) => onGpu.has(b)));
        if (victim === undefined) throw new Error('generated run: pool too small');
        lru.splice(lru.indexOf(victim), 1);
        const out = owned[victim]!.filter((b) => onGpu.has(b));
        yield* moveLines('offload', out, victim, round);
        for (const b of out) {
          onGpu.delete(b);
          onHost.add(b);
        }
      }
      if (back.length) {
        yield* moveLines('onboard', back, u, round);
        for (const b of back) {
          onHost.delete(b);
          onGpu.add(b);
        }
      }
      if (mine.length) yield* moveLines('hit', mine, u, round);
      const fresh = Array.from({ length: grow }, () => nextId++);
      t += 3e7;
      yield* moveLines('store', fresh, u, round);
      for (const b of fresh) onGpu.add(b);
      mine.push(...fresh);
      const at = lru.indexOf(u);
      if (at >= 0) lru.splice(at, 1);
      lru.push(u);
      t += 5e7;
      yield ev('req', { user: u, round, phase: 'first_token' });
      yield* samples();
    }
    for (let u = 0; u < USERS; u++) {
      t += 4e8;
      yield ev('req', { user: u, round, phase: 'done', prompt_tokens: 16000 + round * 128, output_tokens: 64, reused_gpu_tokens: 0, reused_host_tokens: round ? 16000 : 0, computed_tokens: round ? 128 : 16000 });
      yield* samples();
    }
    yield ev('round', { round, e2e_ns: t - roundStart, ttft_ns: Array.from({ length: USERS }, () => null) });
  }
  yield ev('phase', { name: 'rounds', state: 'end' });
  t += 1e6;
  yield ev('run.end', { status: 'ok', summary: { e2e_ns: null, ttft_ns_mean: null, ttft_ns_p50: null, ttft_ns_p99: null, blocks_offloaded: 0, blocks_onboarded: 0, blocks_evicted: 0, bytes_h2d: 0, bytes_d2h: 0 } });
}
