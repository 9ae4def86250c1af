/**
 * Streaming reader benchmark: parse + validate a 1,000,000-event log from disk on one
 * core, and show that memory does not grow with log length (the same pass over 250k and 1M
 * events). Usage: node scripts/run-ts.mjs bench/events-reader.bench.ts [--events N]
 *
 * The log is built from the line mix of a real run when one is bundled (resources/samples/*.gz),
 * else from the synthetic run, renumbered so seq is contiguous.
 */
import { createWriteStream, existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { readEventFile } from '../src/main/core/event-files';
import { RunAnalyzer } from '../src/shared/run-analysis';
import { syntheticRun } from '../test/helpers/synthetic-run';

function templateLines(): { lines: Array<Record<string, unknown>>; source: string } {
  const dir = 'resources/samples';
  const sample = existsSync(dir) ? readdirSync(dir).find((f) => f.endsWith('.jsonl.gz')) : undefined;
  if (sample) {
    const text = gunzipSync(readFileSync(join(dir, sample))).toString('utf8');
    const lines = text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      // run.start/run.end/pool once per log; repeat the body.
      .filter((e) => !['run.start', 'run.end', 'pool'].includes(String(e.type)));
    return { lines, source: `real run ${sample}` };
  }
  return { lines: syntheticRun().filter((e) => !['run.start', 'run.end', 'pool'].includes(e.type)) as never, source: 'synthetic run' };
}

async function writeLog(path: string, n: number, body: Array<Record<string, unknown>>): Promise<number> {
  const out = createWriteStream(path);
  let seq = 0;
  const write = (s: string) => (out.write(s) ? Promise.resolve() : new Promise<void>((r) => out.once('drain', () => r())));
  let buf = '';
  // Blocks lines are written as `log` lines here so the ledger is not replaying a copy of the same
  // ids again and again (that would report violations, not measure the reader).
  while (seq < n) {
    for (const e of body) {
      if (seq >= n) break;
      const line = e.type === 'blocks' ? { seq, t: seq * 1000, type: 'log', level: 'debug', msg: `blocks ${String(e.op)} x${(e.ids as unknown[]).length}` } : { ...e, seq, t: seq * 1000 };
      buf += JSON.stringify(line) + '\n';
      seq++;
      if (buf.length > 1 << 20) {
        await write(buf);
        buf = '';
      }
    }
  }
  await write(buf);
  await new Promise<void>((r) => out.end(() => r()));
  return statSync(path).size;
}

async function measure(file: string, analyze: boolean) {
  if (global.gc) global.gc();
  const rss0 = process.memoryUsage().rss;
  let peakRss = rss0;
  let peakHeap = 0;
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 5);
  const analyzer = new RunAnalyzer();
  let events = 0;
  const t0 = process.hrtime.bigint();
  const d = await readEventFile(file, { onEvent: (e) => (analyze ? analyzer.push(e) : events++) });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(timer);
  const m = process.memoryUsage();
  peakRss = Math.max(peakRss, m.rss);
  peakHeap = Math.max(peakHeap, m.heapUsed);
  return { events: d.counts.events, bad: d.counts.badLines, s, perS: d.counts.events / s, peakRssMB: peakRss / 1e6, peakHeapMB: peakHeap / 1e6 };
}

const argN = process.argv.indexOf('--events');
const N = argN > 0 ? Number(process.argv[argN + 1]) : 1_000_000;
const dir = await mkdtemp(join(tmpdir(), 'kvscope-bench-'));
const { lines, source } = templateLines();
const small = join(dir, 'small.jsonl');
const big = join(dir, 'big.jsonl');
const smallBytes = await writeLog(small, N / 4, lines);
const bigBytes = await writeLog(big, N, lines);
console.log(`machine: ${cpus()[0]?.model} × ${cpus().length}, node ${process.version}; template: ${source}`);
console.log(`logs: ${N / 4} events (${(smallBytes / 1e6).toFixed(0)} MB), ${N} events (${(bigBytes / 1e6).toFixed(0)} MB)`);
// Warm up the JIT on the small log, then measure each pass.
await measure(small, false);
for (const [label, file] of [
  ['parse+validate', big],
  ['parse+validate', small],
  ['parse+validate+analyze', big],
] as const) {
  const r = await measure(file, label.endsWith('analyze'));
  console.log(
    `${label.padEnd(24)} ${String(r.events).padStart(8)} events  ${r.s.toFixed(2)} s  ${(r.perS / 1e6).toFixed(2)} M events/s  peak RSS ${r.peakRssMB.toFixed(0)} MB  peak heap ${r.peakHeapMB.toFixed(0)} MB  bad ${r.bad}`,
  );
}
