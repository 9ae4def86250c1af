/**
 * The README's test command on a fresh machine: `bash scripts/setup-and-test.sh` installs the
 * Debian packages the tests need when any is missing (one list, scripts/debian-test-packages.txt),
 * then the npm dependencies, then runs the tests. The script runs for real in bash from a copy of
 * scripts/; the system's package tools and npm are replaced on PATH by recorders (dpkg-query answers
 * from a list of installed packages), and scripts/triton-venv.sh and scripts/ruff-venv.sh by one each, so
 * nothing is installed here.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = process.cwd();
const listed = readFileSync(join(root, 'scripts/debian-test-packages.txt'), 'utf8')
  .split('\n')
  .map((l) => l.replace(/#.*/, '').trim())
  .filter(Boolean);

function sandbox(opts: { installed: string[]; uid: number; sudo: boolean }) {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-setup-test-'));
  mkdirSync(join(dir, 'scripts'));
  for (const f of ['setup-and-test.sh', 'debian-test-packages.txt']) copyFileSync(join(root, 'scripts', f), join(dir, 'scripts', f));
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const log = join(dir, 'calls.log');
  const tool = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  writeFileSync(join(dir, 'installed'), opts.installed.join('\n') + '\n');
  // dpkg-query -W -f='${Status}' PKG
  tool('dpkg-query', `pkg="\${@: -1}"; grep -qxF -- "$pkg" ${JSON.stringify(join(dir, 'installed'))} && printf 'install ok installed'; exit 0`);
  for (const t of ['apt-get', 'npm']) tool(t, `echo "${t} $*" >> ${JSON.stringify(log)}`);
  // The Triton tests' venv (a 2.5 GB download) and ruff's: their scripts are replaced by recorders too.
  writeFileSync(join(dir, 'scripts', 'triton-venv.sh'), `echo "triton-venv" >> ${JSON.stringify(log)}\n`);
  writeFileSync(join(dir, 'scripts', 'ruff-venv.sh'), `echo "ruff-venv" >> ${JSON.stringify(log)}\n`);
  tool('id', `echo ${opts.uid}`);
  if (opts.sudo) tool('sudo', `echo "sudo $1" >> ${JSON.stringify(log)}; exec "$@"`);
  const r = spawnSync('/bin/bash', [join(dir, 'scripts', 'setup-and-test.sh')], { encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin`, HOME: dir } });
  expect(r.status, r.stderr).toBe(0);
  let calls: string[] = [];
  try {
    calls = readFileSync(log, 'utf8').trim().split('\n');
  } catch {
    /* nothing was called */
  }
  return { stderr: r.stderr, calls };
}

describe('scripts/setup-and-test.sh (the README’s test command)', () => {
  it('lists the packages the tests use', () => {
    for (const p of ['chromium', 'openssh-server', 'python3-torch', 'python3-pytest', 'python3-venv']) expect(listed).toContain(p);
  });

  it('as root, installs exactly the missing Debian packages, then npm ci and npm test', () => {
    const { calls } = sandbox({ installed: listed.filter((p) => p !== 'chromium' && p !== 'python3-torch'), uid: 0, sudo: false });
    expect(calls).toEqual([
      'apt-get update -qq',
      'apt-get install -y -qq --no-install-recommends chromium python3-torch',
      'npm ci --no-audit --no-fund',
      'triton-venv',
      'ruff-venv',
      'npm test',
    ]);
  });

  it('with every package present, goes straight to npm', () => {
    const { calls } = sandbox({ installed: listed, uid: 0, sudo: false });
    expect(calls).toEqual(['npm ci --no-audit --no-fund', 'triton-venv', 'ruff-venv', 'npm test']);
  });

  it('as a user, installs through sudo', () => {
    const { calls } = sandbox({ installed: listed.filter((p) => p !== 'python3-pytest'), uid: 1000, sudo: true });
    expect(calls.slice(0, 4)).toEqual(['sudo env', 'apt-get update -qq', 'sudo env', 'apt-get install -y -qq --no-install-recommends python3-pytest']);
  });

  it('as a user without sudo, names what is missing and still runs the tests', () => {
    const { calls, stderr } = sandbox({ installed: listed.filter((p) => p !== 'chromium'), uid: 1000, sudo: false });
    expect(stderr).toMatch(/missing Debian packages chromium; not root and no sudo/);
    expect(calls).toEqual(['npm ci --no-audit --no-fund', 'triton-venv', 'ruff-venv', 'npm test']);
  });
});
