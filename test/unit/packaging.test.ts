import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import Ajv from 'ajv';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// electron-builder reads electron-builder.yml with js-yaml and validates it against this schema
// (app-builder-lib/scheme.json); the same two steps here catch a typo before `npm run dist` does.
const root = process.cwd();
// js-yaml comes with electron-builder (app-builder-lib reads this file with it); untyped here on purpose.
const { load } = createRequire(join(root, 'node_modules/app-builder-lib/package.json'))('js-yaml') as { load(text: string): unknown };
const config = load(readFileSync(join(root, 'electron-builder.yml'), 'utf8')) as Record<string, unknown>;

describe('electron-builder configuration', () => {
  it('is valid against electron-builder’s own schema', () => {
    const schema = JSON.parse(readFileSync(join(root, 'node_modules/app-builder-lib/scheme.json'), 'utf8')) as object;
    const ajv = new Ajv({ strict: false, allErrors: true, allowUnionTypes: true });
    const validate = ajv.compile(schema);
    const ok = validate(config);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it('targets AppImage + deb, dmg and nsis, and ships the agent and samples beside the asar', () => {
    expect((config.linux as { target: string[] }).target).toEqual(['AppImage', 'deb']);
    expect((config.mac as { target: string[] }).target).toEqual(['dmg']);
    expect((config.win as { target: string[] }).target).toEqual(['nsis']);
    const extra = config.extraResources as Array<{ from: string; to: string }>;
    // index.ts: appPaths(process.resourcesPath) → <resources>/resources/agent and /samples.
    expect(extra.map((e) => [e.from, e.to])).toEqual([
      ['resources/agent', 'resources/agent'],
      ['resources/samples', 'resources/samples'],
    ]);
    expect(config.productName).toBe('KV Scope');
    expect((config.fileAssociations as Array<{ ext: string }>)[0]!.ext).toBe('kvscope');
    expect(config.electronFuses).toMatchObject({ runAsNode: false, enableNodeOptionsEnvironmentVariable: false, onlyLoadAppFromAsar: true });
  });

  it('npm run dist builds first, then packages with this file', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.dist).toMatch(/^npm run build && electron-builder --config electron-builder\.yml/);
  });
});

// What the installers carry beside the asar, computed as electron-builder computes it: its own
// file matchers (app-builder-lib) over this file's extraResources, walked with its own directory
// walker (builder-util), so a filter that would ship the agent's tests fails here, not in a
// downloaded installer.
type Matcher = { from: string; to: string; createFilter(): (file: string, stat: import('node:fs').Stats) => boolean };
const builderRequire = createRequire(join(root, 'node_modules/app-builder-lib/package.json'));
const { getFileMatchers } = builderRequire(join(root, 'node_modules/app-builder-lib/out/fileMatcher.js')) as {
  getFileMatchers(
    config: unknown,
    name: string,
    destination: string,
    options: { macroExpander: (s: string) => string; customBuildOptions: object; globalOutDir: string; defaultSrc: string },
  ): Matcher[] | null;
};
const { walk } = builderRequire('builder-util') as {
  walk(dir: string, filter: (file: string, stat: import('node:fs').Stats) => boolean): Promise<string[]>;
};

async function shipped(fromDir: string): Promise<string[]> {
  const matchers = getFileMatchers(config, 'extraResources', join(root, 'dist', 'resources'), {
    macroExpander: (s) => s,
    customBuildOptions: {},
    globalOutDir: join(root, 'dist'),
    defaultSrc: root,
  });
  const m = (matchers ?? []).find((x) => x.from === join(root, fromDir));
  if (!m) throw new Error(`no extraResources entry from ${fromDir}`);
  const files = await walk(m.from, m.createFilter());
  return files.map((f) => relative(m.from, f).split(sep).join('/')).sort();
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const visit = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) visit(p);
      else out.push(relative(dir, p).split(sep).join('/'));
    }
  };
  visit(dir);
  return out.sort();
}

describe('what the installers ship beside the asar', () => {
  it('the agent without its tests: every source file of the package, nothing under tests/', async () => {
    const agent = join(root, 'resources', 'agent');
    const files = await shipped('resources/agent');
    expect(existsSync(join(agent, 'tests'))).toBe(true); // there is something to leave out
    expect(files.filter((f) => f.startsWith('tests/') || f === 'tests')).toEqual([]);
    const sources = filesUnder(join(agent, 'kvscope_agent'))
      .filter((f) => !f.includes('__pycache__/') && !f.endsWith('.pyc'))
      .map((f) => `kvscope_agent/${f}`);
    expect(sources.length).toBeGreaterThan(10);
    expect(files.filter((f) => f.startsWith('kvscope_agent/'))).toEqual(sources);
    expect(files).toContain('kvscope_agent/tracer/kvscope_cupti.c'); // built on the GPU host
  });

  it('every bundled run of resources/samples', async () => {
    const runs = filesUnder(join(root, 'resources', 'samples')).filter((f) => f.endsWith('.jsonl.gz'));
    expect(runs.length).toBeGreaterThan(0);
    expect((await shipped('resources/samples')).filter((f) => f.endsWith('.jsonl.gz'))).toEqual(runs);
  });
});

describe('npm scripts', () => {
  it('name files that exist (a script that points nowhere fails here, not at the command line)', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const missing: string[] = [];
    for (const [name, cmd] of Object.entries(pkg.scripts)) {
      for (const m of cmd.matchAll(/\b(?:node|bash|sh)\s+((?:\.\/)?[\w./-]+\.(?:mjs|cjs|js|sh))/g)) {
        if (!existsSync(join(root, m[1]!))) missing.push(`${name}: ${m[1]}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('test:e2e runs the end-to-end tests on a fresh build', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['test:e2e']).toMatch(/^npm run build\b.* && vitest run test\/e2e$/);
  });
});
