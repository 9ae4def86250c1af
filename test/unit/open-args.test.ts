import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import {
  classifyPath,
  filesFromArgv,
  findElectronBinary,
  importEngineDump,
  looksLikeRunFile,
  openPath,
  openTarget,
  resolveOpenArgument,
} from '../../src/main/core/open-args';
import { writeKvscopeFile } from '../../src/main/core/export/kvscope-file';
import { RunStore } from '../../src/main/core/run-store';
import { electronArgsFor, planOpen } from '../../src/cli/commands/open';
import { buildCli } from '../helpers/cli';
import { CodedError } from '../../src/shared/result';

// A real run of the built-in engine (test/fixtures/runs/cpu-tiny-3users/README.md).
const FIXTURE = join(process.cwd(), 'test/fixtures/runs/cpu-tiny-3users');
const FIXTURE_LOG = join(FIXTURE, 'events.jsonl');
const FIXTURE_EVENTS = readFileSync(FIXTURE_LOG, 'utf8').trim().split('\n').length;

const tmp = (p: string) => mkdtempSync(join(tmpdir(), `kvscope-open-${p}-`));

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(CodedError);
  return (e as CodedError).code;
}

describe('files passed to the desktop app (argv)', () => {
  it('packaged: [exe, ...files]; development: [electron, appPath, ...files]', () => {
    expect(filesFromArgv(['/opt/KV Scope/kvscope', 'run.kvscope'], { defaultApp: false, cwd: '/home/u' })).toEqual({ paths: ['/home/u/run.kvscope'], runIds: [] });
    expect(filesFromArgv(['/x/electron', '.', '/data/events.jsonl'], { defaultApp: true, cwd: '/w' })).toEqual({ paths: ['/data/events.jsonl'], runIds: [] });
    expect(filesFromArgv(['/x/electron', '/repo'], { defaultApp: true, cwd: '/w' })).toEqual({ paths: [], runIds: [] });
  });

  it('skips the switches Chromium adds to a second instance, keeps --open-run and everything after --', () => {
    const argv = ['/opt/kvscope', '--allow-file-access-from-files', '--original-process-start-time=1234', 'a/events.jsonl.gz', '--open-run=sample:h100', '--', '-odd-name.kvscope'];
    expect(filesFromArgv(argv, { defaultApp: false, cwd: '/second/cwd' })).toEqual({
      paths: ['/second/cwd/a/events.jsonl.gz', '/second/cwd/-odd-name.kvscope'],
      runIds: ['sample:h100'],
    });
  });

  it('names that look like runs', () => {
    expect(looksLikeRunFile('Run.KVSCOPE')).toBe('kvscope-file');
    expect(looksLikeRunFile('events.jsonl')).toBe('event-log');
    expect(looksLikeRunFile('h100-16u.jsonl.gz')).toBe('event-log');
    expect(looksLikeRunFile('notes.txt')).toBeNull();
    expect(looksLikeRunFile('dump.json')).toBeNull();
  });
});

describe('what a path is', () => {
  const d = tmp('classify');
  beforeAll(() => {
    mkdirSync(join(d, 'plain-run'));
    copyFileSync(FIXTURE_LOG, join(d, 'plain-run', 'events.jsonl'));
    mkdirSync(join(d, 'gz-run'));
    writeFileSync(join(d, 'gz-run', 'events.jsonl.gz'), gzipSync(readFileSync(FIXTURE_LOG)));
    mkdirSync(join(d, 'empty'));
    writeFileSync(join(d, 'notes.txt'), 'hello');
  });

  it('run folders (plain or gz log), logs, and clear errors for the rest', async () => {
    expect(await classifyPath(join(d, 'plain-run'))).toEqual({ kind: 'run-folder', path: join(d, 'plain-run') });
    expect(await classifyPath(join(d, 'gz-run'))).toEqual({ kind: 'run-folder', path: join(d, 'gz-run') });
    expect(await classifyPath(join(d, 'gz-run', 'events.jsonl.gz'))).toEqual({ kind: 'event-log', path: join(d, 'gz-run', 'events.jsonl.gz') });
    expect(await codeOf(classifyPath(join(d, 'empty')))).toBe('invalid_argument');
    expect(await codeOf(classifyPath(join(d, 'notes.txt')))).toBe('invalid_argument');
    expect(await codeOf(classifyPath(join(d, 'missing.kvscope')))).toBe('not_found');
  });

  it('kvscope open: a path (relative to the cwd) wins, then a library id; errors say both', async () => {
    const store = new RunStore(join(d, 'library'), join(process.cwd(), 'resources/samples'));
    await store.ensure();
    expect(await resolveOpenArgument('plain-run', { cwd: d, store })).toEqual({ kind: 'run-folder', path: join(d, 'plain-run') });
    mkdirSync(join(d, 'library', 'my-run'));
    copyFileSync(FIXTURE_LOG, join(d, 'library', 'my-run', 'events.jsonl'));
    expect(await resolveOpenArgument('my-run', { cwd: '/', store })).toEqual({ kind: 'library-run', runId: 'my-run' });
    const e = await resolveOpenArgument('no-such-run', { cwd: d, store }).catch((x: CodedError) => x);
    expect((e as CodedError).code).toBe('not_found');
    expect((e as CodedError).message).toMatch(/no such file or folder, and no run with that id/);
    expect(await codeOf(resolveOpenArgument('  ', { cwd: d, store }))).toBe('invalid_argument');
    expect(await codeOf(resolveOpenArgument('../empty', { cwd: join(d, 'library'), store }))).toBe('invalid_argument'); // a folder, not a run
  });
});

describe('opening a run from outside', () => {
  it('a folder from elsewhere is imported (a copy); a library run opens in place; twice is no duplicate', async () => {
    const d = tmp('import');
    const store = new RunStore(join(d, 'runs'), null);
    await store.ensure();
    mkdirSync(join(d, 'cpu-run'));
    copyFileSync(FIXTURE_LOG, join(d, 'cpu-run', 'events.jsonl'));
    const opened = await openPath(store, join(d, 'cpu-run'));
    expect(opened.imported).toBe(true);
    expect(readFileSync(join(d, 'runs', opened.runId, 'events.jsonl'))).toEqual(readFileSync(FIXTURE_LOG));
    const loaded = await store.load(opened.runId);
    expect(loaded.events).toHaveLength(FIXTURE_EVENTS);
    expect(loaded.analysis.blocks.offloaded).toBeGreaterThan(0);
    // The imported run, opened again by its folder or its log, is the same library run.
    for (const p of [join(d, 'runs', opened.runId), join(d, 'runs', opened.runId, 'events.jsonl')]) {
      const again = await openPath(store, p);
      expect(again).toMatchObject({ runId: opened.runId, imported: false });
    }
    expect((await store.list()).length).toBe(1);
  });

  it('a run folder holding only events.jsonl.gz, and a .kvscope portable file, import too', async () => {
    const d = tmp('gz');
    const store = new RunStore(join(d, 'runs'), null);
    await store.ensure();
    mkdirSync(join(d, 'gz-run'));
    writeFileSync(join(d, 'gz-run', 'events.jsonl.gz'), gzipSync(readFileSync(FIXTURE_LOG)));
    const gz = await openPath(store, join(d, 'gz-run'));
    expect((await store.load(gz.runId)).events).toHaveLength(FIXTURE_EVENTS);
    const file = join(d, 'shared.kvscope');
    await writeKvscopeFile(FIXTURE_LOG, { id: 'cpu', name: 'cpu tiny', host: 'local', status: 'ok', createdAt: '2026-11-27T00:00:00Z' }, file);
    const k = await openPath(store, file);
    expect(k.imported).toBe(true);
    expect(readFileSync(join(d, 'runs', k.runId, 'events.jsonl'))).toEqual(readFileSync(FIXTURE_LOG));
  });

  it('refuses relative paths, non-runs and logs without run.start, writing nothing', async () => {
    const d = tmp('bad');
    const store = new RunStore(join(d, 'runs'), null);
    await store.ensure();
    expect(await codeOf(openPath(store, 'relative/events.jsonl'))).toBe('invalid_argument');
    writeFileSync(join(d, 'junk.jsonl'), '{"not":"an event"}\n');
    expect(await codeOf(openPath(store, join(d, 'junk.jsonl')))).toBe('bad_run');
    expect(await codeOf(openTarget(store, { kind: 'library-run', runId: 'nope' }))).toBe('not_found');
    expect(await store.list()).toEqual([]);
  });
});

describe('kvscope open: the plan', () => {
  const target = { kind: 'run-folder' as const, path: '/data/run' };
  it('starts Electron on the app folder and the run when the binary is there', () => {
    expect(planOpen({ appRoot: '/app', target, browser: false, electron: { path: '/app/node_modules/electron/dist/electron' } })).toEqual({
      mode: 'electron',
      command: '/app/node_modules/electron/dist/electron',
      args: ['/app', '/data/run'],
    });
    expect(electronArgsFor('/app', { kind: 'library-run', runId: 'sample:h100' })).toEqual(['/app', '--open-run=sample:h100']);
  });

  it('falls back to the browser with the reason, or on --browser', () => {
    expect(planOpen({ appRoot: '/app', target, browser: false, electron: { reason: 'no binary' } })).toEqual({ mode: 'serve', reason: 'no binary' });
    expect(planOpen({ appRoot: '/app', target, browser: true, electron: { path: '/e' } })).toEqual({ mode: 'serve', reason: '--browser was given' });
  });

  it('finds the Electron binary through path.txt, and says why not', () => {
    const files = new Map<string, string>([['/app/node_modules/electron/package.json', '{}']]);
    const read = (p: string) => files.get(p) ?? null;
    const exists = (p: string) => files.has(p);
    expect(findElectronBinary('/app', read, exists)).toEqual({ reason: expect.stringContaining('npm rebuild electron') });
    files.set('/app/node_modules/electron/path.txt', 'electron\n');
    expect(findElectronBinary('/app', read, exists)).toEqual({ reason: expect.stringContaining('not installed') });
    files.set('/app/node_modules/electron/dist/electron', '');
    expect(findElectronBinary('/app', read, exists)).toEqual({ path: '/app/node_modules/electron/dist/electron' });
    expect(findElectronBinary('/elsewhere', read, exists)).toEqual({ reason: expect.stringContaining('electron package is not installed') });
  });
});

// The real command, bundled from source, as a user runs it.
const rendererBuilt = existsSync(join(process.cwd(), 'out/renderer/index.html'));
describe.skipIf(!rendererBuilt)(`kvscope open on the command line${rendererBuilt ? '' : ' (skipped: renderer not built, run `npm run build`)'}`, () => {
  let entry = '';
  beforeAll(async () => {
    entry = await buildCli('kvscope-open-test');
  }, 60_000);
  const children: Array<ReturnType<typeof spawn>> = [];
  afterAll(() => {
    for (const c of children) c.kill('SIGTERM');
  });

  it('bad arguments: exit code and a message naming what is accepted, nothing started', () => {
    const data = tmp('cli-bad');
    const env = { ...process.env, KVSCOPE_DATA_DIR: data };
    const missing = spawnSync(process.execPath, [entry, 'open', join(data, 'nope')], { env, encoding: 'utf8', timeout: 30_000 });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/no such file or folder, and no run with that id/);
    writeFileSync(join(data, 'notes.txt'), 'x');
    const wrong = spawnSync(process.execPath, [entry, 'open', join(data, 'notes.txt')], { env, encoding: 'utf8', timeout: 30_000 });
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/expected a \.kvscope file, an events\.jsonl/);
    expect(missing.stdout + wrong.stdout).toBe('');
  });

  const electronHere = 'path' in findElectronBinary(process.cwd(), (p) => (existsSync(p) ? readFileSync(p, 'utf8') : null), existsSync);
  it.skipIf(electronHere)('without the Electron binary it says why and serves the browser window instead', async () => {
    const data = tmp('cli-noelectron');
    const child = spawn(process.execPath, [entry, 'open', FIXTURE_LOG], { env: { ...process.env, KVSCOPE_DATA_DIR: data }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const first = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no URL in 30 s; stderr: ${stderr}`)), 30_000);
      child.stdout!.once('data', (b: Buffer) => {
        clearTimeout(timer);
        res(b.toString().split('\n')[0]!);
      });
    });
    expect(stderr).toMatch(/Electron binary is not installed \(no internet to download it; run `npm rebuild electron` where there is\)/);
    expect(first).toMatch(/#\/runs\/imported-events\/live$/);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });

  it('with --browser (or no Electron): serves the window with the run opened, and the run loads over the bridge', async () => {
    const data = tmp('cli-serve');
    const child = spawn(process.execPath, [entry, 'open', '--browser', FIXTURE], { env: { ...process.env, KVSCOPE_DATA_DIR: data }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const url = await new Promise<string>((res, rej) => {
      let out = '';
      const timer = setTimeout(() => rej(new Error(`no URL in 30 s; stderr: ${stderr}`)), 30_000);
      child.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('\n')) {
          clearTimeout(timer);
          res(out.split('\n')[0]!);
        }
      });
      child.on('exit', (code) => rej(new Error(`exited ${code}: ${stderr}`)));
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]+#\/runs\/imported-cpu-tiny-3users\/live$/);
    expect(stderr).toMatch(/desktop app cannot start here: --browser was given/);
    const page = await fetch(url.split('#')[0]!);
    expect(page.status).toBe(200);
    const u = new URL(url);
    const ws = new WebSocket(`ws://${u.host}/api?token=${u.searchParams.get('token')}`, { origin: `http://${u.host}` });
    const reply = await new Promise<{ result: { ok: boolean; value: { events: unknown[] } } }>((res, rej) => {
      ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'loadRun', args: ['imported-cpu-tiny-3users'] })));
      ws.on('message', (m) => res(JSON.parse(String(m))));
      ws.on('error', rej);
    });
    ws.close();
    expect(reply.result.ok).toBe(true);
    expect(reply.result.value.events).toHaveLength(FIXTURE_EVENTS);
    // The imported copy lives in the data folder's runs/, where the desktop app looks too.
    expect(existsSync(join(data, 'runs', 'imported-cpu-tiny-3users', 'events.jsonl'))).toBe(true);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });
});

describe('File → Import Engine Dump', () => {
  const dumps = join(process.cwd(), 'resources/agent/tests/fixtures/engine-dumps');
  const agentDir = join(process.cwd(), 'resources/agent');
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  it.skipIf(!existsSync(join(dumps, 'trtllm-8users-offload.json')))('a TensorRT-LLM dump is translated by the agent and opens as a run', async () => {
    const d = tmp('dump');
    const store = new RunStore(join(d, 'runs'), null);
    await store.ensure();
    const opened = await importEngineDump(store, { agentDir, python, path: join(dumps, 'trtllm-8users-offload.json'), engine: 'tensorrt_llm' });
    expect(opened).toMatchObject({ runId: 'imported-trtllm-8users-offload', imported: true });
    const run = await store.load(opened.runId);
    expect(run.analysis.start?.engine.name).toBe('tensorrt_llm');
    expect(run.analysis.blocks.offloaded).toBeGreaterThan(0);
    expect(run.analysis.blocks.onboarded).toBeGreaterThan(0);
  });

  it('refuses a wrong engine, a missing file, and passes the translator’s own reason for a bad dump', async () => {
    const d = tmp('dump-bad');
    const store = new RunStore(join(d, 'runs'), null);
    await store.ensure();
    expect(await codeOf(importEngineDump(store, { agentDir, python, path: join(d, 'x.json'), engine: 'sglang' }))).toBe('invalid_argument');
    expect(await codeOf(importEngineDump(store, { agentDir, python, path: join(d, 'missing.json'), engine: 'vllm' }))).toBe('not_found');
    writeFileSync(join(d, 'garbage.json'), 'this is not a dump');
    const e = await importEngineDump(store, { agentDir, python, path: join(d, 'garbage.json'), engine: 'tensorrt_llm' }).catch((x: CodedError) => x);
    expect((e as CodedError).code).toBe('bad_run');
    expect((e as CodedError).message).toMatch(/could not be translated: .*translate/);
    expect(await store.list()).toEqual([]);
  });
});
