/**
 * Shared harness of the window benchmarks (bench/renderer-*.bench.ts): writes a generated run into
 * a temporary runs folder, serves the built renderer through the real bridge and opens it in
 * Debian's Chromium with software rendering, as the e2e tests do (test/helpers/browser.ts
 * `serveWindow`), and measures frames with requestAnimationFrame inside the page.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import type { Page } from 'playwright-core';
import { CHROMIUM, serveWindow, type ServedWindow } from '../test/helpers/browser';
import type { PageGlobal } from '../test/helpers/page-dom';

/** Writes events (as JSONL, streamed) into <runsDir>/<id>/events.jsonl with a meta.json. */
export async function writeRun(runsDir: string, id: string, lines: Iterable<Record<string, unknown>>): Promise<number> {
  mkdirSync(join(runsDir, id), { recursive: true });
  writeFileSync(join(runsDir, id, 'meta.json'), JSON.stringify({ id, name: id, host: 'bench', status: 'ok', createdAt: new Date().toISOString() }));
  const out = createWriteStream(join(runsDir, id, 'events.jsonl'));
  let n = 0;
  let buf = '';
  for (const l of lines) {
    buf += JSON.stringify({ seq: n++, ...l }) + '\n';
    if (buf.length > 1 << 20) {
      if (!out.write(buf)) await new Promise<void>((r) => out.once('drain', () => r()));
      buf = '';
    }
  }
  out.write(buf);
  await new Promise<void>((r) => out.end(r));
  return n;
}

export interface Harness extends ServedWindow {
  /** A page opened blank (1400×900, dark). */
  page: Page;
  runsDir: string;
}

/** More Chromium flags for a benchmark: KVSCOPE_BENCH_CHROMIUM_ARGS (space-separated). */
export async function openHarness(runsDir = mkdtempSync(join(tmpdir(), 'kvscope-bench-')), options: { samplesDir?: string | null } = {}): Promise<Harness> {
  const w = await serveWindow({ runsDir, samplesDir: options.samplesDir ?? null }, { chromiumArgs: (process.env.KVSCOPE_BENCH_CHROMIUM_ARGS ?? '').split(' ').filter(Boolean) });
  const page = await w.open(null);
  return {
    ...w,
    page,
    runsDir,
    async close() {
      if (w.errors.length) console.error('page errors:', w.errors.slice(0, 5));
      await w.close();
    },
  };
}

/** Page-side: rAF frame intervals (ms) over `ms` of wall time. */
export function recordFrames(ms: number): Promise<number[]> {
  const g = globalThis as unknown as { requestAnimationFrame(cb: (t: number) => void): number };
  return new Promise((resolve) => {
    const out: number[] = [];
    let last = 0;
    let first = 0;
    const tick = (t: number) => {
      if (!first) first = t;
      if (last) out.push(t - last);
      last = t;
      if (t - first < ms) g.requestAnimationFrame(tick);
      else resolve(out);
    };
    g.requestAnimationFrame(tick);
  });
}

export type PageG = PageGlobal;

export function stats(intervals: number[]): { frames: number; medianMs: number; p95Ms: number; medianFps: number; p5Fps: number } {
  const s = [...intervals].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1)))]!;
  return { frames: s.length, medianMs: q(0.5), p95Ms: q(0.95), medianFps: 1000 / q(0.5), p5Fps: 1000 / q(0.95) };
}

export function machine(): string {
  let chromiumVersion = 'unknown';
  try {
    chromiumVersion = execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    // keep unknown
  }
  return `${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${chromiumVersion} headless --disable-gpu (software), load avg ${loadAvg()} (shared machine)`;
}

/** The 1, 5 and 15 minute load averages now, as /proc/loadavg gives them. */
export function loadAvg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}
