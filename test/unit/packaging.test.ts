import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
