// Runs the Python agent's tests with Debian's python3 (which has python3-torch and
// python3-pytest); PYTHON overrides it. pytest's exit 5 ("no tests collected") is a failure here:
// the agent always has tests.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const python = process.env.PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const probe = spawnSync(python, ['-c', 'import pytest'], { encoding: 'utf8' });
if (probe.status !== 0) {
  console.error(`${python} has no pytest: install it (Debian: apt-get install python3-pytest python3-torch)`);
  process.exit(1);
}
const r = spawnSync(python, ['-m', 'pytest', '-q', '-rs', 'tests', ...process.argv.slice(2).map((a) => a.replace('test-artifacts/', '../../test-artifacts/'))], {
  cwd: 'resources/agent',
  stdio: 'inherit',
  env: { ...process.env, PYTHONPATH: '.', PYTHONDONTWRITEBYTECODE: '1' },
});
process.exit(r.status ?? 1);
