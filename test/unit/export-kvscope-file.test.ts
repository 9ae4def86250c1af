/** The portable run file: byte-for-byte round trip, opening wherever a log opens, and refusing damage. */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it, vi } from 'vitest';
import { validateLog } from '../../src/cli/commands/validate';
import { importKvscopeFile, MAX_IMPORT_BYTES, readKvscopeHeader, writeKvscopeFile } from '../../src/main/core/export/kvscope-file';
import { HostService } from '../../src/main/core/hosts';
import { RunManager } from '../../src/main/core/runs';
import { RunStore } from '../../src/main/core/run-store';
import { importRun } from '../../src/main/core/runs-library';

const RUN = join(process.cwd(), 'test', 'fixtures', 'runs', 'cpu-tiny-export');
const LOG = join(RUN, 'events.jsonl');
const META = JSON.parse(readFileSync(join(RUN, 'meta.json'), 'utf8'));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('.kvscope run file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-file-'));
  const file = join(dir, 'run.kvscope');

  it('round-trips the events byte for byte, with the meta', async () => {
    const w = await writeKvscopeFile(LOG, META, file);
    const original = readFileSync(LOG);
    expect(w.eventsBytes).toBe(original.length);
    expect(w.sha256).toBe(sha(original));
    // The documented layout: gzip of header line, the exact bytes, digest line.
    const raw = gunzipSync(readFileSync(file));
    const nl = raw.indexOf(0x0a);
    const header = JSON.parse(raw.subarray(0, nl).toString('utf8'));
    expect(header).toMatchObject({ kvscope_file: 1, events_bytes: original.length, meta: META });
    expect(raw.subarray(nl + 1, nl + 1 + original.length).equals(original)).toBe(true);
    expect(JSON.parse(raw.subarray(nl + 1 + original.length).toString('utf8'))).toEqual({ events_sha256: sha(original) });

    const runsDir = join(dir, 'runs');
    const r = await importKvscopeFile(file, runsDir);
    expect(r.id).toBe(META.id);
    expect(readFileSync(join(runsDir, r.id, 'events.jsonl')).equals(original)).toBe(true);
    expect(JSON.parse(readFileSync(join(runsDir, r.id, 'meta.json'), 'utf8'))).toMatchObject({ ...META, imported_from: file });
    // A second import does not overwrite the first.
    const again = await importKvscopeFile(file, runsDir);
    expect(again.id).toBe(`${META.id}-2`);
    expect((await readKvscopeHeader(file)).meta.name).toBe(META.name);
  });

  it('stores the decompressed bytes of a .gz log (the sample format)', async () => {
    const gz = join(dir, 'events.jsonl.gz');
    writeFileSync(gz, gzipSync(readFileSync(LOG)));
    const out = join(dir, 'from-gz.kvscope');
    await writeKvscopeFile(gz, { ...META, id: 'from-gz' }, out);
    const r = await importKvscopeFile(out, join(dir, 'runs-gz'));
    expect(readFileSync(join(r.dir, 'events.jsonl')).equals(readFileSync(LOG))).toBe(true);
  });

  it('opens in kvscope validate and the runs library import like a log', async () => {
    await writeKvscopeFile(LOG, META, file);
    const v = await validateLog(file);
    const direct = await validateLog(LOG);
    expect(v.valid).toBe(true);
    expect(v.analysis.events).toBe(direct.analysis.events);
    expect(v.analysis.e2e_ns).toBe(direct.analysis.e2e_ns);
    const store = new RunStore(join(dir, 'library'), null);
    const listing = await importRun(store, { path: file });
    expect(listing.id).toBe(META.id);
    expect(listing.e2e_ns).toBe(direct.analysis.e2e_ns);
    const dropped = await importRun(store, { fileName: 'dropped.kvscope', bytesBase64: readFileSync(file).toString('base64') });
    expect(readFileSync(join(store.runsDir, dropped.id, 'events.jsonl')).equals(readFileSync(LOG))).toBe(true);
  });

  it('refuses a cut-off or altered file with a clear error and leaves nothing in the runs folder', async () => {
    await writeKvscopeFile(LOG, META, file);
    const bytes = readFileSync(file);
    const cut = join(dir, 'cut.kvscope');
    writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length * 0.8)));
    const runsDir = join(dir, 'runs-bad');
    await expect(importKvscopeFile(cut, runsDir)).rejects.toThrow(/damaged or cut off|cut off/);
    // Same size, one event byte changed: the digest catches it.
    const raw = gunzipSync(bytes);
    const nl = raw.indexOf(0x0a);
    const i = raw.indexOf('"t":', nl) + 4;
    raw[i] = raw[i] === 0x31 ? 0x32 : 0x31;
    const altered = join(dir, 'altered.kvscope');
    writeFileSync(altered, gzipSync(raw));
    await expect(importKvscopeFile(altered, runsDir)).rejects.toThrow(/sha256/);
    const notOurs = join(dir, 'not-ours.kvscope');
    writeFileSync(notOurs, gzipSync('{"hello":1}\nabc'));
    await expect(importKvscopeFile(notOurs, runsDir)).rejects.toThrow(/not a KV Scope run file/);
    expect(existsSync(runsDir) ? readdirSync(runsDir) : []).toEqual([]);
  });
});

/** A run file made by hand: `declared` event bytes in the header (default: the real count), a chosen digest. */
function runFile(path: string, meta: Record<string, unknown>, events: Buffer, o: { declared?: number; digest?: string } = {}): string {
  const header = JSON.stringify({ kvscope_file: 1, events_bytes: o.declared ?? events.length, meta });
  writeFileSync(path, gzipSync(Buffer.concat([Buffer.from(header + '\n'), events, Buffer.from('\n' + JSON.stringify({ events_sha256: o.digest ?? sha(events) }) + '\n')])));
  return path;
}

describe('importing a .kvscope file someone else made', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-file-hostile-'));
  const events = readFileSync(LOG);

  it('keeps a finished record only: nothing that resume or cancel would run on a host', async () => {
    const victim = join(dir, 'victim.txt');
    writeFileSync(victim, 'precious\n');
    // What a crafted file carried: resume ran [python, '-', remote_dir, ...] on that host.
    const crafted = runFile(join(dir, 'crafted.kvscope'), {
      id: 'crafted', name: 'looks fine', host: 'gpu', status: 'running', createdAt: '2026-01-01T00:00:00Z',
      python: '/usr/bin/tee', remote_dir: victim, remote_pgid: 1, agent_dir: '/tmp', agent_args: ['--out=/'], tail_pid: 1, bytes_received: 0,
    }, events);
    const store = new RunStore(join(dir, 'runs'), null);
    const listing = await importRun(store, { path: crafted });
    const meta = await store.readMeta(listing.id);
    expect(Object.keys(meta).sort()).toEqual(['createdAt', 'host', 'id', 'imported_at', 'imported_from', 'name', 'source_run_id', 'status']);
    expect(meta).toMatchObject({ id: 'crafted', name: 'looks fine', host: 'gpu', status: 'incomplete', imported_from: crafted });
    expect(listing.resumable).toBe(false);
    // And resume/cancel refuse an imported run outright, before connecting anywhere.
    const runs = new RunManager({ store, hosts: new HostService({ dataDir: dir, agentSourceDir: 'resources/agent', prompts: { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null } }) });
    await expect(runs.resume(listing.id)).rejects.toMatchObject({ code: 'unsupported', message: expect.stringMatching(/imported .* never followed/) });
    await expect(runs.cancel(listing.id)).rejects.toMatchObject({ code: 'unsupported' });
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
  });

  it('refuses a declared size over the limit before writing anything (a few MB of gzip can declare gigabytes)', async () => {
    // A header declaring 2 GiB and no body: refused on its word, before a byte is read or written.
    const big = runFile(join(dir, 'big.kvscope'), { id: 'big' }, Buffer.alloc(0), { declared: 2 * 1024 ** 3 });
    const runsDir = join(dir, 'runs-big');
    await expect(importKvscopeFile(big, runsDir)).rejects.toMatchObject({ code: 'too_large', message: expect.stringContaining(`declares 2147483648 bytes of events, more than an import takes (${MAX_IMPORT_BYTES})`) });
    expect(existsSync(runsDir)).toBe(false);
  });

  it('checks the digest before writing: a damaged file is refused before the runs folder is touched', async () => {
    const damaged = runFile(join(dir, 'damaged.kvscope'), { id: 'damaged' }, events, { digest: '0'.repeat(64) });
    // A runs folder that cannot be made (its parent is a file): only a write would notice.
    writeFileSync(join(dir, 'a-file'), '');
    await expect(importKvscopeFile(damaged, join(dir, 'a-file', 'runs'))).rejects.toMatchObject({ code: 'bad_run', message: expect.stringMatching(/sha256 .* the file says 0{64}/) });
  });

  it('refuses a file larger than the free space, with both numbers, writing nothing', async (ctx) => {
    const small = join(dir, 'small-disk');
    mkdirSync(small);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]).status !== 0) {
      ctx.skip('cannot mount a tmpfs here (needs root): the free-space check is not exercised');
      return;
    }
    try {
      const file = runFile(join(dir, 'fits-limit.kvscope'), { id: 'fits' }, Buffer.alloc(4 << 20, 0x0a));
      await expect(importKvscopeFile(file, small)).rejects.toMatchObject({ code: 'io_error', message: expect.stringMatching(/needs 4194304 bytes and .* has \d+ bytes free; nothing was written/) });
      expect(readdirSync(small)).toEqual([]);
    } finally {
      spawnSync('umount', ['-l', small]);
    }
  });

  it('a dropped file goes through a private temp folder: a symlink planted at the old predictable path is never followed', async () => {
    const victim = join(dir, 'victim-of-drop.txt');
    writeFileSync(victim, 'precious\n');
    // The old path was tmpdir()/kvscope-import-<pid>-<Date.now()>.kvscope: with the clock held,
    // an attacker's symlink waits at exactly that path.
    await writeKvscopeFile(LOG, { ...META, id: 'dropped-run' }, join(dir, 'drop.kvscope'));
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-06-01T00:00:00Z'));
    const planted = [join(tmpdir(), `kvscope-import-${process.pid}-${Date.now()}.kvscope`)];
    symlinkSync(victim, planted[0]!);
    try {
      const store = new RunStore(join(dir, 'runs-drop'), null);
      const listing = await importRun(store, { fileName: 'drop.kvscope', bytesBase64: readFileSync(join(dir, 'drop.kvscope')).toString('base64') });
      expect(readFileSync(victim, 'utf8')).toBe('precious\n');
      expect(readFileSync(join(store.runsDir, listing.id, 'events.jsonl')).equals(events)).toBe(true);
      expect((await store.readMeta(listing.id)).imported_from).toBe('drop.kvscope');
    } finally {
      vi.useRealTimers();
      for (const p of planted) rmSync(p, { force: true });
    }
  });
});

