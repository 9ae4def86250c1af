import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { validateLog } from '../../src/cli/commands/validate';
import type { KvEvent } from '../../src/shared/protocol';
import { syntheticRun, toJsonl } from '../helpers/synthetic-run';

const dir = mkdtempSync(join(tmpdir(), 'kvscope-validate-'));
const write = (name: string, events: unknown[] | string) => {
  const file = join(dir, name);
  writeFileSync(file, typeof events === 'string' ? events : toJsonl(events));
  return file;
};

describe('kvscope validate', () => {
  const run = syntheticRun();

  it('summarises a valid log', async () => {
    const r = await validateLog(write('ok.jsonl', run));
    expect(r.valid).toBe(true);
    expect(r.analysis.users).toEqual([0, 1]);
    expect(r.analysis.rounds).toEqual([0, 1, 2, 3]);
    expect(r.analysis.blocks.offloaded).toBeGreaterThan(0);
    expect(r.analysis.ttft.count).toBe(6);
    expect(r.analysis.e2e_ns).toBeGreaterThan(0);
  });

  it('reads a gzipped log and a run folder', async () => {
    const sub = join(dir, 'folder-run');
    spawnSync('mkdir', ['-p', sub]);
    writeFileSync(join(sub, 'events.jsonl.gz'), gzipSync(toJsonl(run)));
    const r = await validateLog(sub);
    expect(r.valid).toBe(true);
    expect(r.analysis.events).toBe(run.length);
  });

  it('reports a garbage line and still reads the rest', async () => {
    const text = toJsonl(run).replace('\n', '\n%%garbage%%\n');
    const r = await validateLog(write('garbage.jsonl', text));
    expect(r.valid).toBe(false);
    expect(r.badLines).toEqual([expect.objectContaining({ reason: 'not_json', line: 2 })]);
    expect(r.analysis.events).toBe(run.length);
  });

  it('names the seq of a gap and of a pool over capacity', async () => {
    const gap = await validateLog(write('gap.jsonl', run.filter((e) => e.seq !== 12)));
    expect(gap.violations[0]).toMatchObject({ rule: 'seq_gap', seq: 13 });
    const shrunk = run.map((e) => (e.type === 'pool' && e.pool === 'gpu' ? { ...e, capacity_blocks: 3 } : e)) as KvEvent[];
    const over = await validateLog(write('over.jsonl', shrunk));
    const firstOver = over.violations.find((v) => v.rule === 'over_capacity');
    expect(firstOver?.seq).toBeGreaterThan(0);
  });

  const bin = join(process.cwd(), 'dist-cli', 'kvscope.mjs');
  it.skipIf(!existsSync(bin))('exits 0 on a valid log and 1 with each rule and seq on a broken one (built CLI; skipped before `npm run build`)', () => {
    const good = spawnSync(process.execPath, ['bin/kvscope.js', 'validate', write('cli-ok.jsonl', run)], { encoding: 'utf8' });
    expect(good.status).toBe(0);
    expect(good.stdout).toContain('valid: every protocol v2 rule holds');
    expect(good.stdout).toMatch(/blocks: stored \d+, offloaded \d+, onboarded \d+, evicted \d+/);
    const dup = [...run.slice(0, 6), run[5]!, ...run.slice(6)];
    const bad = spawnSync(process.execPath, ['bin/kvscope.js', 'validate', write('cli-dup.jsonl', dup)], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stdout).toContain('seq 5: seq_duplicate');
    const missing = spawnSync(process.execPath, ['bin/kvscope.js', 'validate', join(dir, 'nope')], { encoding: 'utf8' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('no such run or file');
  });
});
