import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { createCore } from '../../src/main/core/app-core';
import { DEFAULT_SETTINGS, SettingsStore, validateSettings, writeFileAtomic } from '../../src/main/core/settings';
import { CodedError } from '../../src/shared/result';

const dir = () => mkdtempSync(join(tmpdir(), 'kvscope-settings-'));

describe('settings', () => {
  it('defaults are the seed workload', () => {
    expect(DEFAULT_SETTINGS.workload).toEqual({
      usersMin: 2,
      usersMax: 16,
      contextTokens: 16000,
      newTokens: 64,
      outputTokens: 64,
      rounds: 10,
      hostKvBytes: 55e9,
      freeGpuMemoryFraction: 0.9,
      blockTokens: 32,
    });
    expect(DEFAULT_SETTINGS.theme).toBe('system');
    expect(DEFAULT_SETTINGS.sampleMs).toBe(100);
  });

  it('a missing file gives the defaults and writes nothing', async () => {
    const d = dir();
    const store = new SettingsStore(join(d, 'settings.json'));
    expect(await store.load()).toEqual(DEFAULT_SETTINGS);
    expect(store.recovered).toBeNull();
    expect(readdirSync(d)).toEqual([]);
  });

  it('saves, reloads, and fills keys an older file lacks', async () => {
    const d = dir();
    const file = join(d, 'settings.json');
    const store = new SettingsStore(file);
    await store.save({ ...DEFAULT_SETTINGS, theme: 'light', pythonByHost: { h100: '/opt/venv/bin/python' }, workload: { ...DEFAULT_SETTINGS.workload, rounds: 3 } });
    const again = await new SettingsStore(file).load();
    expect(again.theme).toBe('light');
    expect(again.pythonByHost).toEqual({ h100: '/opt/venv/bin/python' });
    expect(again.workload.rounds).toBe(3);
    writeFileSync(file, JSON.stringify({ version: 1, theme: 'dark' }));
    const partial = await new SettingsStore(file).load();
    expect(partial.theme).toBe('dark');
    expect(partial.workload).toEqual(DEFAULT_SETTINGS.workload);
  });

  it('refuses invalid input naming the field, and leaves the file alone', async () => {
    const d = dir();
    const file = join(d, 'settings.json');
    const store = new SettingsStore(file);
    await store.save(DEFAULT_SETTINGS);
    const before = readFileSync(file, 'utf8');
    const bad = [
      [{ ...DEFAULT_SETTINGS, workload: { ...DEFAULT_SETTINGS.workload, usersMin: 0 } }, 'workload.usersMin'],
      [{ ...DEFAULT_SETTINGS, workload: { ...DEFAULT_SETTINGS.workload, usersMin: 8, usersMax: 4 } }, 'workload.usersMax'],
      [{ ...DEFAULT_SETTINGS, workload: { ...DEFAULT_SETTINGS.workload, freeGpuMemoryFraction: 1.5 } }, 'workload.freeGpuMemoryFraction'],
      [{ ...DEFAULT_SETTINGS, theme: 'purple' }, 'theme'],
      [{ ...DEFAULT_SETTINGS, sampleMs: 2.5 }, 'sampleMs'],
      [{ ...DEFAULT_SETTINGS, pythonByHost: { h: '' } }, 'pythonByHost.h'],
    ] as const;
    for (const [input, field] of bad) {
      const e = await store.save(input).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(CodedError);
      expect((e as CodedError).code).toBe('invalid_argument');
      expect((e as CodedError).detail?.field).toBe(field);
    }
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('keeps the app-kept recent list when the view saves its copy', async () => {
    const file = join(dir(), 'settings.json');
    const store = new SettingsStore(file);
    await store.noteRecent('run-a');
    await store.noteRecent('run-b');
    await store.noteRecent('run-a');
    await store.save({ ...DEFAULT_SETTINGS, recentRuns: ['forged'] });
    expect((await new SettingsStore(file).load()).recentRuns).toEqual(['run-a', 'run-b']);
  });

  it('moves a file that is not JSON aside, reports it, and uses the defaults', async () => {
    const d = dir();
    const file = join(d, 'settings.json');
    writeFileSync(file, '{"theme": "dark", ');
    const store = new SettingsStore(file, () => new Date('2026-11-28T01:02:03.456Z'));
    expect(await store.load()).toEqual(DEFAULT_SETTINGS);
    const moved = join(d, 'settings.json.broken-2026-11-28T01-02-03-456Z');
    expect(store.recovered?.movedTo).toBe(moved);
    expect(store.recovered?.reason).toContain('not valid JSON');
    expect(readFileSync(moved, 'utf8')).toBe('{"theme": "dark", ');
    expect(readdirSync(d)).toEqual(['settings.json.broken-2026-11-28T01-02-03-456Z']);
  });

  it('moves a file with a wrong field aside and names the field', async () => {
    const d = dir();
    const file = join(d, 'settings.json');
    writeFileSync(file, JSON.stringify({ version: 1, workload: { rounds: 'ten' } }));
    const store = new SettingsStore(file);
    await store.load();
    expect(store.recovered?.reason).toContain('workload.rounds');
    expect(readdirSync(d).some((n) => n.startsWith('settings.json.broken-'))).toBe(true);
    // The next save writes a fresh, valid file beside the broken one.
    await store.save({ ...DEFAULT_SETTINGS, theme: 'dark' });
    expect(JSON.parse(readFileSync(file, 'utf8')).theme).toBe('dark');
  });

  it('validateSettings never mutates its input', () => {
    const input = { theme: 'dark' };
    validateSettings(input);
    expect(input).toEqual({ theme: 'dark' });
  });
});

describe('atomic write', () => {
  it('a crash before the rename leaves the old file whole and no temp file behind', async () => {
    const d = dir();
    const file = join(d, 'settings.json');
    await writeFileAtomic(file, 'old contents\n');
    let tmpSeen = '';
    const e = await writeFileAtomic(file, 'new contents\n', {
      hooks: {
        beforeRename: async (tmp) => {
          tmpSeen = tmp;
          // The temp file is complete (fsynced) before the rename is attempted.
          expect(await readFile(tmp, 'utf8')).toBe('new contents\n');
          throw new Error('simulated crash');
        },
      },
    }).catch((x: unknown) => x);
    expect((e as Error).message).toBe('simulated crash');
    expect(tmpSeen.startsWith(join(d, 'settings.json.'))).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe('old contents\n');
    expect(readdirSync(d)).toEqual(['settings.json']);
  });

  it('a reader racing many writers only ever sees whole files', async () => {
    const file = join(dir(), 'state.json');
    const payload = (i: number) => JSON.stringify({ i, pad: 'x'.repeat(200_000 + i) });
    await writeFileAtomic(file, payload(0));
    let reads = 0;
    let writing = true;
    const reader = (async () => {
      while (writing) {
        const text = await readFile(file, 'utf8');
        const parsed = JSON.parse(text) as { i: number; pad: string };
        expect(parsed.pad.length).toBe(200_000 + parsed.i);
        reads++;
      }
    })();
    for (let i = 1; i <= 30; i++) await writeFileAtomic(file, payload(i));
    writing = false;
    await reader;
    expect(reads).toBeGreaterThan(0);
    expect(JSON.parse(readFileSync(file, 'utf8')).i).toBe(30);
  });
});

describe('settings through the core', () => {
  it('getSettings/saveSettings round-trip, and invalid input is an invalid_argument Result with the field', async () => {
    const d = dir();
    const core = await createCore({ runsDir: join(d, 'runs'), samplesDir: null, shell: 'browser', settingsFile: join(d, 'settings.json') });
    const first = await core.handlers.getSettings();
    expect(first.ok && first.value.settings.workload.contextTokens).toBe(16000);
    expect(first.ok && first.value.file).toBe(join(d, 'settings.json'));
    expect(first.ok && first.value.secrets.rememberAvailable).toBe(false);
    const saved = await core.handlers.saveSettings({ ...DEFAULT_SETTINGS, sampleMs: 250 });
    expect(saved.ok && saved.value.settings.sampleMs).toBe(250);
    const bad = await core.handlers.saveSettings({ ...DEFAULT_SETTINGS, sampleMs: -1 });
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.error.code).toBe('invalid_argument');
    expect(!bad.ok && bad.error.detail?.field).toBe('sampleMs');
    expect(JSON.parse(readFileSync(join(d, 'settings.json'), 'utf8')).sampleMs).toBe(250);
  });

  it('in kvscope serve (no shell actions) the desktop-only calls say unsupported', async () => {
    const core = await createCore({ runsDir: join(dir(), 'runs'), samplesDir: null, shell: 'browser' });
    for (const r of [await core.handlers.openFileDialog(), await core.handlers.notify('t', 'b')]) {
      expect(r.ok).toBe(false);
      expect(!r.ok && r.error.code).toBe('unsupported');
      expect(!r.ok && r.error.message).toContain('kvscope serve');
    }
  });

  it('the shell actions are what the desktop calls reach', async () => {
    const shown: string[] = [];
    const core = await createCore({
      runsDir: join(dir(), 'runs'),
      samplesDir: null,
      shell: 'electron',
      shellActions: { openFileDialog: async (o) => `/picked/${o.purpose ?? 'run'}`, notify: (t, b) => void shown.push(`${t}|${b}`) },
    });
    const picked = await core.handlers.openFileDialog({ purpose: 'engine-dump' });
    expect(picked.ok && picked.value).toBe('/picked/engine-dump');
    expect((await core.handlers.notify('Run finished', 'r1')).ok).toBe(true);
    expect(shown).toEqual(['Run finished|r1']);
  });
});

describe('settings feed runs', () => {
  it.skipIf(!existsSync('/usr/bin/python3'))('a Local run without a python uses the one Settings names for the host, and the sample period', async () => {
    const d = dir();
    const core = await createCore({ runsDir: join(d, 'runs'), samplesDir: null, shell: 'browser', settingsFile: join(d, 'settings.json') });
    const saved = await core.handlers.saveSettings({ ...DEFAULT_SETTINGS, pythonByHost: { local: '/usr/bin/python3' }, sampleMs: 250 });
    expect(saved.ok).toBe(true);
    const statuses: string[] = [];
    core.addPushListener((m) => m.kind === 'run-status' && statuses.push(m.status));
    const started = await core.handlers.startRun({
      host: 'local',
      workload: { model: 'tiny', device: 'cpu', users: 2, rounds: 1, context_tokens: 64, new_tokens: 16, output_tokens: 4, gpu_kv_bytes: 200000, host_kv_bytes: 2000000 },
    });
    expect(started.ok ? null : started.error.message).toBeNull();
    const runId = started.ok ? started.value.runId : '';
    await vi.waitFor(() => expect(statuses.filter((s) => s !== 'running')).toHaveLength(1), { timeout: 120_000, interval: 100 });
    expect(statuses.at(-1)).toBe('ok');
    const loaded = await core.handlers.loadRun(runId);
    expect(loaded.ok && loaded.value.listing.status).toBe('ok');
    const config = loaded.ok ? (loaded.value.analysis.start?.config as Record<string, unknown>) : {};
    expect(config.sample_ms ?? config.sampleMs).toBe(250);
  }, 150_000);
});
