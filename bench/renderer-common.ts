/**
 * Shared harness of the window benchmarks (bench/renderer-*.bench.ts): writes a generated run into
 * a temporary runs folder, serves the built renderer through the real bridge (startServer, as
 * `kvscope serve` does), opens it in Debian's Chromium with software rendering (--disable-gpu, the
 * flags the e2e tests use), and measures frames with requestAnimationFrame inside the page.
 */
import { mkdirSync, mkdtempSync, writeFileSync, createWriteStream } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createCore, type Core } from '../src/main/core/app-core';
import { startServer, type RunningServer } from '../src/main/core/serve';
import type { PageGlobal } from '../test/helpers/page-dom';

export const CHROMIUM = process.env.KVSCOPE_CHROMIUM ?? '/usr/bin/chromium';
export const RENDERER_DIR = join(process.cwd(), 'out', 'renderer');

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

export interface Harness {
  core: Core;
  server: RunningServer;
  browser: Browser;
  page: Page;
  runsDir: string;
  close(): Promise<void>;
}

export async function openHarness(runsDir = mkdtempSync(join(tmpdir(), 'kvscope-bench-')), options: { samplesDir?: string | null } = {}): Promise<Harness> {
  const core = await createCore({ runsDir, samplesDir: options.samplesDir ?? null, shell: 'browser' });
  const server = await startServer({ core, staticDir: RENDERER_DIR });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', ...(process.env.KVSCOPE_BENCH_CHROMIUM_ARGS ?? '').split(' ').filter(Boolean)],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, colorScheme: 'dark' });
  const errors: string[] = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(String(e)));
  return {
    core,
    server,
    browser,
    page,
    runsDir,
    async close() {
      if (errors.length) console.error('page errors:', errors.slice(0, 5));
      await browser.close();
      await server.close();
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
  const load = (() => {
    try {
      return execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ');
    } catch {
      return '?';
    }
  })();
  return `${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${chromiumVersion} headless --disable-gpu (software), load avg ${load} (shared machine)`;
}
