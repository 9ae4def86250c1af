import { mkdtempSync, existsSync, writeFileSync, mkdirSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createCore } from '../../src/main/core/app-core';
import { syntheticRun, toJsonl } from '../helpers/synthetic-run';

async function core() {
  const runsDir = mkdtempSync(join(tmpdir(), 'kvscope-lib-'));
  return { runsDir, core: await createCore({ runsDir, samplesDir: null, shell: 'browser' }) };
}

describe('runs library actions', () => {
  it('imports a log (plain and gzipped), renames, reveals and deletes it', async () => {
    const { core: c, runsDir } = await core();
    const text = toJsonl(syntheticRun());
    const a = await c.handlers.importRun({ fileName: 'my run.jsonl', bytesBase64: Buffer.from(text).toString('base64') });
    expect(a.ok).toBe(true);
    const b = await c.handlers.importRun({ fileName: 'my run.jsonl.gz', bytesBase64: gzipSync(Buffer.from(text)).toString('base64') });
    expect(b.ok && a.ok && b.value.id !== a.value.id).toBe(true);
    if (!a.ok || !b.ok) return;
    const loaded = await c.handlers.loadRun(a.value.id);
    expect(loaded.ok && loaded.value.events.length).toBe(syntheticRun().length);
    const renamed = await c.handlers.renameRun(a.value.id, '  bigger pool ');
    expect(renamed.ok && renamed.value.name).toBe('bigger pool');
    expect((await c.handlers.renameRun(a.value.id, '   ')).ok).toBe(false);
    const where = await c.handlers.revealRun(a.value.id);
    expect(where.ok && where.value).toBe(join(runsDir, a.value.id));
    expect((await c.handlers.deleteRun(a.value.id)).ok).toBe(true);
    expect(existsSync(join(runsDir, a.value.id))).toBe(false);
    const list = await c.handlers.listRuns();
    expect(list.ok && list.value.map((r) => r.id)).toEqual([b.value.id]);
  });

  it('refuses a file that is not an event log and writes nothing', async () => {
    const { core: c } = await core();
    const r = await c.handlers.importRun({ fileName: 'notes.txt', bytesBase64: Buffer.from('hello\n').toString('base64') });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe('bad_run');
    const list = await c.handlers.listRuns();
    expect(list.ok && list.value).toEqual([]);
  });

  it('refuses ids that escape the runs folder and read-only samples', async () => {
    const { core: c } = await core();
    expect((await c.handlers.deleteRun('../x')).ok).toBe(false);
    const r = await c.handlers.deleteRun('sample:h100');
    expect(!r.ok && r.error.code).toBe('unsupported');
  });

  it('lists a run from its cached log facts whatever its meta says (an "error" meta over a log without run.end)', async () => {
    const { core: c, runsDir } = await core();
    const events = syntheticRun().filter((e) => e.type !== 'run.end');
    mkdirSync(join(runsDir, 'failed-run'));
    const log = join(runsDir, 'failed-run', 'events.jsonl');
    writeFileSync(log, toJsonl(events));
    writeFileSync(join(runsDir, 'failed-run', 'meta.json'), JSON.stringify({ id: 'failed-run', name: 'failed', host: 'local', status: 'error', createdAt: '', error: { code: 'agent_died', message: 'x' } }));
    const mtime = new Date('2026-01-02T03:04:05Z');
    utimesSync(log, mtime, mtime);
    const first = await c.handlers.listRuns();
    expect(first.ok && first.value.map((r) => [r.id, r.model])).toEqual([['failed-run', 'tiny']]);
    // The same bytes' size and mtime with other content: a listing that re-reads the log shows it.
    writeFileSync(log, toJsonl(events).replace('"model":"tiny"', '"model":"tinx"'));
    utimesSync(log, mtime, mtime);
    const second = await c.handlers.listRuns();
    expect(second.ok && second.value.map((r) => [r.id, r.model])).toEqual([['failed-run', 'tiny']]);
    // The meta itself is read every time: a rename shows at once, from the same cached log facts.
    expect((await c.handlers.renameRun('failed-run', 'renamed')).ok).toBe(true);
    const third = await c.handlers.listRuns();
    expect(third.ok && third.value.map((r) => [r.name, r.model])).toEqual([['renamed', 'tiny']]);
  });
});

