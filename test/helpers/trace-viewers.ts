/**
 * Two real trace viewers, run on an exported JSON trace, and what they make of its slices:
 *
 * - Chrome DevTools' trace engine (npm @paulirish/trace_engine, the Performance panel's model, in
 *   node through the package's own harness `analyze-trace.mjs`): it builds one tree per thread from
 *   `X` and `I` events in floating-point µs and silently leaves out an event that overlaps its
 *   parent's end (TreeHelpers.treify).
 * - speedscope (npm speedscope, its release build in real Chromium, loaded the way its own CLI
 *   does: `index.html#localProfilePath=<script>` calling `speedscope.loadFileFromBase64`): its
 *   trace-event importer turns each `X` into a begin and an end at `ts + dur`, rebased per thread,
 *   and logs a warning for every end that does not match the frame on top of its stack.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM } from './browser';

interface EngineEvent {
  ph: string;
  cat?: string;
  name?: string;
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  args?: Record<string, unknown>;
}
interface EngineNode {
  entry: EngineEvent;
  parent: EngineNode | null;
}
interface EngineThread {
  entries: EngineEvent[];
}
interface RendererData {
  processes: Map<number, { threads: Map<number, EngineThread> }>;
  entryToNode: Map<EngineEvent, EngineNode>;
}

const require = createRequire(import.meta.url);

/** What DevTools' trace engine built from a trace's thread slices. */
export interface DevtoolsTree {
  /** `X` and `I` events it took onto threads. */
  entries: number;
  /** Of those, the ones in its tree (the rest it dropped). */
  inTree: number;
  /** Events whose parent in its tree is not the slice the exporter wrote them inside. */
  misparented: string[];
}

/**
 * Parses `traceEvents` with DevTools' trace engine. `parentCat` says, per category, which category
 * the exporter's parent slice has (a category not in it is written at the top of its thread).
 */
export async function devtoolsTree(traceEvents: unknown[], parentCat: Record<string, string>): Promise<DevtoolsTree> {
  const harness = pathToFileURL(join(dirname(require.resolve('@paulirish/trace_engine/package.json')), 'analyze-trace.mjs')).href;
  const mod = (await import(/* @vite-ignore */ harness)) as {
    polyfillDOMRect(): void;
    analyzeEvents(events: unknown[]): Promise<{ parsedTrace: { data: { Renderer: RendererData } } }>;
  };
  // The harness polyfills DOMRect when it is run as a program; imported, it is our job.
  if (!('DOMRect' in globalThis)) mod.polyfillDOMRect();
  const { parsedTrace } = await mod.analyzeEvents(traceEvents);
  const r = parsedTrace.data.Renderer;
  let entries = 0;
  let inTree = 0;
  const misparented: string[] = [];
  for (const p of r.processes.values()) {
    for (const t of p.threads.values()) {
      for (const e of t.entries) {
        entries++;
        const node = r.entryToNode.get(e);
        if (!node) continue;
        inTree++;
        const want = e.cat ? parentCat[e.cat] : undefined;
        const got = node.parent?.entry.cat;
        if (got !== want && misparented.length < 20) misparented.push(`${e.cat} "${e.name}" at ${e.ts} µs: parent ${got ?? 'none'}, written inside ${want ?? 'nothing'}`);
      }
    }
  }
  return { entries, inTree, misparented };
}

/** speedscope's import warnings for a trace file (its stack mismatches), in real Chromium. */
export async function speedscopeWarnings(traceFile: string): Promise<{ warnings: string[]; title: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-speedscope-'));
  const script = join(dir, 'profile.js');
  const name = basename(traceFile);
  // What `speedscope <file>` writes before opening its page.
  writeFileSync(script, `speedscope.loadFileFromBase64(${JSON.stringify(name)}, ${JSON.stringify(readFileSync(traceFile).toString('base64'))})`);
  const index = join(dirname(require.resolve('speedscope/package.json')), 'dist', 'release', 'index.html');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--allow-file-access-from-files'] });
  try {
    const page = await browser.newPage();
    const warnings: string[] = [];
    page.on('console', (m) => {
      if (/Tried to end|still open at end of profile|stack was empty/.test(m.text())) warnings.push(m.text());
    });
    // An import that fails shows an error or an alert instead of the profile: either ends the wait.
    const failed = new Promise<never>((_, reject) => {
      page.on('pageerror', (e) => reject(new Error(`speedscope: ${String(e)}`)));
      page.on('dialog', (d) => void d.dismiss().finally(() => reject(new Error(`speedscope: ${d.message()}`))));
    });
    // Waits for events, not a clock: the page's load waits on the profile script (tens of MB for a
    // long run), so navigation is done once committed, and the import's end is the title below.
    await page.goto(`${pathToFileURL(index).href}#localProfilePath=${script}`, { waitUntil: 'commit', timeout: 0 });
    // speedscope names the page after the profile once the import is done.
    await Promise.race([page.waitForFunction(() => document.title !== 'speedscope', null, { timeout: 0 }), failed]);
    return { warnings, title: await page.title() };
  } finally {
    await browser.close();
  }
}
