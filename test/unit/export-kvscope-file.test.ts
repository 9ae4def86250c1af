/** The portable run file: byte-for-byte round trip, opening wherever a log opens, and refusing damage. */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { validateLog } from '../../src/cli/commands/validate';
import { importKvscopeFile, readKvscopeHeader, writeKvscopeFile } from '../../src/main/core/export/kvscope-file';
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
