/**
 * Runs-library actions behind the window's Runs view: rename, delete, import, reveal. Kept
 * beside RunStore (which lists and loads) so the store stays read-mostly; every action checks the run
 * id the same way it does.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile, rename as fsRename } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { ImportRunSource, RunListing } from '../../shared/api';
import { EventLineDecoder } from '../../shared/events-reader';
import { CodedError } from '../../shared/result';
import { checkRunId, type RunStore } from './run-store';
import { checkFreeSpace, importKvscopeFile, isKvscopeFile, KVSCOPE_EXT, MAX_IMPORT_BYTES } from './export/kvscope-file';
import { tmpdir } from 'node:os';

const SAMPLE_PREFIX = 'sample:';
const tooLarge = (name: string) => new CodedError('too_large', `import: ${name} is larger than ${MAX_IMPORT_BYTES} bytes (1 GiB); nothing was written`, { limit: MAX_IMPORT_BYTES });

function refuseBundled(id: string, what: string): void {
  if (id.startsWith(SAMPLE_PREFIX)) throw new CodedError('unsupported', `${what}: ${id} is a bundled sample and is read-only`);
}

async function listingOf(store: RunStore, id: string): Promise<RunListing> {
  const found = (await store.list()).find((r) => r.id === id);
  if (!found) throw new CodedError('not_found', `no run ${id}`);
  return found;
}

export async function renameRun(store: RunStore, id: string, name: string): Promise<RunListing> {
  id = String(id);
  refuseBundled(id, 'rename');
  const clean = String(name ?? '').trim();
  if (!clean) throw new CodedError('invalid_argument', 'name: a run name cannot be empty', { field: 'name' });
  if (clean.length > 200) throw new CodedError('invalid_argument', 'name: at most 200 characters', { field: 'name' });
  const meta = await store.readMeta(id);
  await store.writeMeta({ ...meta, name: clean });
  return listingOf(store, id);
}

export async function deleteRun(store: RunStore, id: string): Promise<{ id: string }> {
  id = String(id);
  refuseBundled(id, 'delete');
  const dir = store.runDir(id);
  await store.readMeta(id); // not_found for a folder that is not a run: never rm what we did not make
  // Rename first so a half-finished delete never leaves a run that lists but cannot load.
  const trash = join(store.runsDir, `.deleting-${id}-${process.pid}-${Date.now()}`);
  await fsRename(dir, trash);
  await rm(trash, { recursive: true, force: true });
  return { id };
}

/** The folder (or bundled file) that holds a run, for "reveal on disk"; the Electron shell opens it. */
export async function revealRun(store: RunStore, id: string): Promise<string> {
  id = String(id);
  const file = await store.logPath(id);
  try {
    await stat(file);
  } catch {
    throw new CodedError('not_found', `run ${id} has no log at ${file}`);
  }
  return id.startsWith(SAMPLE_PREFIX) ? file : store.runDir(id);
}

function slug(name: string): string {
  const base = name.replace(/\.gz$/i, '').replace(/\.jsonl$/i, '').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '');
  return (base || 'imported').slice(0, 80);
}

/**
 * Copies an event log into the library as a new run folder. The bytes are decoded first: a file
 * with no valid `run.start` is refused (nothing is written); bad lines inside an otherwise valid
 * log are kept byte for byte (the loader reports them, as for any run).
 */
export async function importRun(store: RunStore, source: ImportRunSource): Promise<RunListing> {
  // A portable run file (.kvscope, docs/kvscope-file.md) is restored byte for byte by its own reader.
  const kvscope = await importIfKvscopeFile(store, source);
  if (kvscope) return kvscope;
  let bytes: Buffer;
  let fileName: string;
  if (source && typeof (source as { path?: unknown }).path === 'string') {
    const path = (source as { path: string }).path;
    fileName = basename(path);
    let s;
    try {
      s = await stat(path);
    } catch {
      throw new CodedError('not_found', `no such file: ${path}`);
    }
    const file = s.isDirectory() ? join(path, 'events.jsonl') : path;
    if (s.isDirectory()) fileName = basename(path);
    // Sized before it is read: a file is never read whole into memory to learn it is too big.
    if ((await stat(file).catch(() => s)).size > MAX_IMPORT_BYTES) throw tooLarge(fileName);
    bytes = await readFile(file);
  } else if (source && typeof (source as { bytesBase64?: unknown }).bytesBase64 === 'string') {
    const s = source as { fileName: string; bytesBase64: string };
    fileName = String(s.fileName || 'imported.jsonl');
    bytes = Buffer.from(s.bytesBase64, 'base64');
  } else {
    throw new CodedError('invalid_argument', 'import: give { path } or { fileName, bytesBase64 }');
  }
  if (bytes.length > MAX_IMPORT_BYTES) throw tooLarge(fileName);
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      // A few MB of gzip can hold gigabytes: decompressed only up to the same limit.
      bytes = gunzipSync(bytes, { maxOutputLength: MAX_IMPORT_BYTES });
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(`${fileName} (decompressed)`);
      throw new CodedError('bad_run', `import: ${fileName} is not a readable .gz (${(e as Error).message})`);
    }
  }
  let started: { run_id: string; host: string } | null = null;
  let good = 0;
  const decoder = new EventLineDecoder({
    onEvent: (e) => {
      good++;
      if (e.type === 'run.start' && !started) started = { run_id: e.run_id, host: e.host.hostname };
    },
  });
  decoder.push(bytes);
  decoder.end();
  const start = started as { run_id: string; host: string } | null;
  if (!start) throw new CodedError('bad_run', `import: ${fileName} has no valid run.start line (${good} valid events): not a KV Scope event log`);
  await store.ensure();
  const existing = new Set(await readdir(store.runsDir));
  const base = `imported-${slug(fileName)}`;
  let id = base;
  for (let i = 2; existing.has(id); i++) id = `${base}-${i}`;
  checkRunId(id);
  const dir = store.runDir(id);
  await checkFreeSpace(store.runsDir, bytes.length, `importing ${fileName}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'events.jsonl'), bytes);
  await store.writeMeta({
    id,
    name: slug(fileName),
    host: start.host || 'imported',
    status: 'ok',
    createdAt: new Date().toISOString(),
    imported_from: fileName,
    source_run_id: start.run_id,
  });
  return listingOf(store, id);
}

/** importRun for a `.kvscope` file (by path, or bytes dropped into a browser window); null for other files. */
async function importIfKvscopeFile(store: RunStore, source: ImportRunSource): Promise<RunListing | null> {
  const path = (source as { path?: unknown } | null)?.path;
  if (typeof path === 'string') {
    if (!isKvscopeFile(path)) return null;
    return listingOf(store, (await importKvscopeFile(path, store.runsDir)).id);
  }
  const dropped = source as { fileName?: unknown; bytesBase64?: unknown } | null;
  if (typeof dropped?.fileName !== 'string' || !isKvscopeFile(dropped.fileName) || typeof dropped.bytesBase64 !== 'string') return null;
  const bytes = Buffer.from(dropped.bytesBase64, 'base64');
  if (bytes.length > MAX_IMPORT_BYTES) throw tooLarge(dropped.fileName);
  // A folder only this process made (mkdtemp: a fresh name, mode 0700), and a file created in it
  // exclusively ('wx' is O_CREAT|O_EXCL: it never follows or reuses whatever is at that path).
  const tmpDir = await mkdtemp(join(tmpdir(), 'kvscope-import-'));
  try {
    const tmp = join(tmpDir, `dropped${KVSCOPE_EXT}`);
    await writeFile(tmp, bytes, { flag: 'wx', mode: 0o600 });
    return await listingOf(store, (await importKvscopeFile(tmp, store.runsDir, { source: dropped.fileName })).id);
  } finally {
    await rm(tmpDir, { recursive: true, force: true });
  }
}
