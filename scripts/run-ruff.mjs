// Lints the Python agent (resources/agent: the package, the programs it sends to hosts, its tests)
// with ruff, as ruff.toml says. The ruff is scripts/ruff-venv.sh's ($KVSCOPE_RUFF_VENV, or
// ~/.cache/kvscope/venv-ruff-<version>), else one on PATH. Without either the step is skipped with a
// line saying so, except under CI, where a missing ruff fails (scripts/setup-and-test.sh makes it).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

const pin = /^PIN=(\S+)$/m.exec(readFileSync('scripts/ruff-venv.sh', 'utf8'))[1];
const venv = process.env.KVSCOPE_RUFF_VENV ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kvscope', `venv-${pin.replace('==', '-')}`);
let ruff = join(venv, 'bin', 'ruff');
if (!existsSync(ruff)) ruff = spawnSync('sh', ['-c', 'command -v ruff'], { encoding: 'utf8' }).stdout.trim();
if (!ruff) {
  const msg = `no ruff (bash scripts/ruff-venv.sh makes ${venv}): the Python agent was not linted`;
  if (process.env.CI) {
    console.error(msg);
    process.exit(1);
  }
  console.log(`skipped: ${msg}`);
  process.exit(0);
}
const r = spawnSync(ruff, ['check', '--no-cache', '.'], { stdio: 'inherit' });
process.exit(r.status ?? 1);
