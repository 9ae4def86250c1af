// Runs the Python agent's tests (resources/agent/tests) and the bench scripts' tests
// (bench/*_test.py) with Debian's python3 (which has python3-torch and python3-pytest); PYTHON
// overrides it. pytest's exit 5 ("no tests collected") is a failure here: the agent always has tests.
//
// --triton: the tests of the Triton paged-attention kernel and of the engine that runs it, in the
// venv of scripts/triton-venv.sh (the GPU machine's PyTorch and Triton) under Triton's CPU
// interpreter (TRITON_INTERPRET=1). Without that venv they are skipped with a line saying so,
// except under CI, where a missing venv fails (scripts/setup-and-test.sh makes it).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

const TRITON_TESTS = ['tests/test_paged_attention.py', 'tests/test_fused_ops.py', 'tests/test_engine.py', 'tests/test_fp8.py', 'tests/test_fp8_gemv.py'];
const args = process.argv.slice(2);
const triton = args[0] === '--triton';
if (triton) args.shift();
let python = process.env.PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const env = { ...process.env, PYTHONPATH: '.', PYTHONDONTWRITEBYTECODE: '1' };
if (triton) {
  const venv =
    process.env.KVSCOPE_TRITON_VENV ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kvscope', 'venv-torch2.11.0-triton3.6.0');
  python = join(venv, 'bin', 'python');
  if (!existsSync(python)) {
    const msg = `no Triton venv at ${venv}: the Triton kernel tests did not run (bash scripts/triton-venv.sh makes it)`;
    if (process.env.CI) {
      console.error(msg);
      process.exit(1);
    }
    console.log(`skipped: ${msg}`);
    process.exit(0);
  }
  env.TRITON_INTERPRET = '1';
}
const probe = spawnSync(python, ['-c', 'import pytest'], { encoding: 'utf8' });
if (probe.status !== 0) {
  console.error(`${python} has no pytest: install it (Debian: apt-get install python3-pytest python3-torch)`);
  process.exit(1);
}
const r = spawnSync(
  python,
  [
    '-m',
    'pytest',
    '-q',
    '-rs',
    ...(triton ? ['-W', 'ignore::DeprecationWarning', ...TRITON_TESTS] : ['tests', '../../bench']),
    ...args.map((a) => a.replace('test-artifacts/', '../../test-artifacts/')),
  ],
  { cwd: 'resources/agent', stdio: 'inherit', env },
);
process.exit(r.status ?? 1);
