// `npm test`: everything CI checks, in order, with one summary line at the end.
// typecheck → lint → ruff (the Python agent) → build (window + CLI) → vitest (unit, integration with real sshd, e2e in
// real Chromium) → pytest (the Python agent) → pytest-triton (the Triton kernel tests in the venv of
// scripts/triton-venv.sh, under the CPU interpreter). Every step runs even if an earlier one failed, so
// one run shows every failure; the exit code is non-zero if any step failed.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';

mkdirSync('test-artifacts', { recursive: true });
// A skipped pytest-triton step (no venv) writes no report: an old one must not be counted.
rmSync('test-artifacts/pytest-triton.xml', { force: true });
const steps = [
  ['typecheck', 'npx', ['tsc', '-b']],
  ['lint', 'npx', ['eslint', '.']],
  ['ruff', 'node', ['scripts/run-ruff.mjs']],
  ['build', 'npm', ['run', 'build', '--silent']],
  ['vitest', 'npx', ['vitest', 'run', '--reporter=default', '--reporter=json', '--outputFile.json=test-artifacts/vitest.json']],
  ['pytest', 'node', ['scripts/run-pytest.mjs', '--junitxml=test-artifacts/pytest.xml']],
  ['pytest-triton', 'node', ['scripts/run-pytest.mjs', '--triton', '--junitxml=test-artifacts/pytest-triton.xml']],
];
const only = process.argv.slice(2);
const failed = [];
for (const [name, cmd, args] of steps) {
  if (only.length && !only.includes(name)) continue;
  process.stdout.write(`\n=== ${name} ===\n`);
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, ELECTRON_SKIP_BINARY_DOWNLOAD: '1' } });
  const s = ((Date.now() - t0) / 1000).toFixed(1);
  if (r.status !== 0) failed.push(name);
  process.stdout.write(`=== ${name}: ${r.status === 0 ? 'ok' : `FAILED (exit ${r.status ?? r.signal})`} in ${s} s ===\n`);
}

let passed = 0;
let fails = 0;
let skipped = 0;
if (existsSync('test-artifacts/vitest.json')) {
  const v = JSON.parse(readFileSync('test-artifacts/vitest.json', 'utf8'));
  passed += v.numPassedTests ?? 0;
  fails += v.numFailedTests ?? 0;
  skipped += (v.numPendingTests ?? 0) + (v.numTodoTests ?? 0);
}
for (const xml of ['test-artifacts/pytest.xml', 'test-artifacts/pytest-triton.xml']) {
  if (!existsSync(xml)) continue;
  const x = readFileSync(xml, 'utf8');
  // pytest writes <testsuites><testsuite name="pytest" tests=...>: match the inner element.
  const m = /<testsuite\s[^>]*>/.exec(x)?.[0] ?? '';
  const attr = (k) => Number(new RegExp(`${k}="(\\d+)"`).exec(m)?.[1] ?? 0);
  const total = attr('tests');
  const f = attr('failures') + attr('errors');
  const sk = attr('skipped');
  passed += total - f - sk;
  fails += f;
  skipped += sk;
}
if (failed.length) process.stdout.write(`\nfailed steps: ${failed.join(', ')}\n`);
process.stdout.write(`${passed} passed, ${fails} failed, ${skipped} skipped\n`);
process.exit(failed.length ? 1 : 0);
