/**
 * Live pools benchmark: 20,000 blocks resident (10,000 in the GPU pool, 10,000 in the
 * host pool) and 5,000 moves per second (every 10 ms of run time, 25 onboard + 25 offload), replayed
 * at 1× in the real Live view through `kvscope serve`'s bridge. Target: median rAF frame rate ≥ 55.
 *
 *   npm run build && node scripts/run-ts.mjs bench/renderer-pools.bench.ts [--seconds 8]
 */
import { openHarness, recordFrames, stats, writeRun, machine } from './renderer-common';
import type { PageGlobal } from '../test/helpers/page-dom';

const argSeconds = Number(process.argv[process.argv.indexOf('--seconds') + 1]) || 8;
const RESIDENT = 10_000;
const RUN_S = 40;
const MOVES_PER_TICK = 25; // each way, every 10 ms → 5,000 moves/s

function* poolsRun(): Generator<Record<string, unknown>> {
  let t = 0;
  const ev = (type: string, f: Record<string, unknown>) => ({ t: Math.round(t), type, ...f });
  yield ev('run.start', { run_id: 'bench-pools', protocol: 1, agent_version: 'bench', engine: { name: 'torch', version: 'bench' }, config: { users: 16, rounds: 10 }, host: { hostname: 'bench', gpus: [{ index: 0, name: 'bench GPU' }] }, clock: { unix_ns_at_t0: Date.now() * 1e6 } });
  yield ev('pool', { pool: 'gpu', capacity_blocks: 12_000, block_tokens: 32, block_bytes: 5_242_880 });
  yield ev('pool', { pool: 'host', capacity_blocks: 12_000, block_tokens: 32, block_bytes: 5_242_880 });
  // 20,000 blocks stored; the first 10,000 offloaded to host: 10,000 resident in each pool.
  const onGpu: number[] = [];
  const onHost: number[] = [];
  for (let b = 0; b < 2 * RESIDENT; b += 500) {
    const ids = Array.from({ length: 500 }, (_, i) => b + i);
    yield ev('blocks', { op: 'store', ids, user: (b / 500) % 16, round: 0 });
    if (b < RESIDENT) {
      yield ev('blocks', { op: 'offload', ids, user: (b / 500) % 16, round: 0 });
      onHost.push(...ids);
    } else onGpu.push(...ids);
  }
  t = 1e9;
  for (let tick = 0; tick < RUN_S * 100; tick++) {
    t = 1e9 + tick * 10e6;
    const up = onHost.splice(0, MOVES_PER_TICK);
    const down = onGpu.splice(0, MOVES_PER_TICK);
    yield ev('blocks', { op: 'offload', ids: down, user: tick % 16, round: 1 + Math.floor(tick / 400) });
    yield ev('blocks', { op: 'onboard', ids: up, user: tick % 16, round: 1 + Math.floor(tick / 400) });
    onHost.push(...down);
    onGpu.push(...up);
    yield ev('xfer', { dir: 'd2h', bytes: MOVES_PER_TICK * 5_242_880, start: t - 3e6, end: t, source: 'cupti' });
    yield ev('xfer', { dir: 'h2d', bytes: MOVES_PER_TICK * 5_242_880, start: t - 3e6, end: t, source: 'cupti' });
  }
  t += 1e6;
  yield ev('run.end', { status: 'ok', summary: { e2e_ns: 0, ttft_ns_mean: 0, ttft_ns_p50: 0, ttft_ns_p99: 0, blocks_offloaded: 0, blocks_onboarded: 0, blocks_evicted: 0, bytes_h2d: 0, bytes_d2h: 0 } });
}

const h = await openHarness();
try {
  const lines = await writeRun(h.runsDir, 'bench-pools', poolsRun());
  await h.page.goto(`${h.server.url}#/runs/bench-pools/live`);
  await h.page.waitForSelector('[data-testid=pools][data-gpu]', { timeout: 120_000 });
  // Start 0.2 s into the steady state, at 1×, and measure while it plays.
  await h.page.evaluate(() => {
    const g = globalThis as unknown as PageGlobal;
    const s = g.document.querySelector('[data-action=scrub]')!;
    s.value = String(1.2e9);
    s.dispatchEvent(new g.Event('input', { bubbles: true }));
  });
  await h.page.click('[data-action=play]');
  await h.page.waitForTimeout(500);
  const readT = () => h.page.evaluate(() => Number((globalThis as unknown as PageGlobal).document.querySelector('[data-testid=pools]')!.dataset.t));
  const tBefore = await readT();
  const intervals = await h.page.evaluate(recordFrames, argSeconds * 1000);
  const tAfter = await readT();
  const t = await h.page.evaluate(() => (globalThis as unknown as PageGlobal).document.querySelector('[data-testid=pools]')!.dataset);
  const inFlight = await h.page.textContent('.live-stats dd:nth-of-type(5)');
  const s = stats(intervals);
  const result = {
    bench: 'live pools: 20,000 blocks, 5,000 moves/s, 1× replay',
    date: new Date().toISOString(),
    machine: machine(),
    log_lines: lines,
    // The reader must have kept every line (a generator bug would show here as skipped lines).
    bad_lines_skipped: await h.page.locator('.run-header .warn').count() ? await h.page.textContent('.run-header .warn') : 0,
    gpu_blocks: Number(t.gpu),
    host_blocks: Number(t.host),
    // Run time replayed while measuring (1× speed: should be about the wall time measured).
    replayed_s: (tAfter - tBefore) / 1e9,
    moves_replayed: Math.round(((tAfter - tBefore) / 1e9) * 5000),
    blocks_in_flight_at_end: Number(inFlight),
    ...s,
    target: 'median ≥ 55 fps',
    pass: s.medianFps >= 55,
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await h.close();
}
