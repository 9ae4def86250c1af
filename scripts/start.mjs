// `npm start`: build if needed, then start the desktop app; where Electron's binary is missing
// (it is downloaded by electron's install script, which needs internet), say so and offer the
// browser mode, which needs nothing more.
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
if (!existsSync('out/main/index.js') || !existsSync('dist-cli/kvscope.mjs') || process.argv.includes('--rebuild')) {
  const b = spawnSync('npm', ['run', 'build', '--silent'], { stdio: 'inherit' });
  if (b.status !== 0) process.exit(b.status ?? 1);
}
let electronPath = null;
try {
  const pathFile = require.resolve('electron/path.txt');
  const rel = readFileSync(pathFile, 'utf8').trim();
  const full = require.resolve('electron').replace(/index\.js$/, `dist/${rel}`);
  if (existsSync(full)) electronPath = full;
} catch {
  electronPath = null;
}
if (!electronPath || process.argv.includes('--browser')) {
  if (!electronPath) {
    console.error(
      [
        'KV Scope: the Electron binary is not installed, so the desktop window cannot start.',
        '  Why: npm installed electron with ELECTRON_SKIP_BINARY_DOWNLOAD=1, or without internet access.',
        '  Get it: on a machine with internet, run `npm rebuild electron` (or `node node_modules/electron/install.js`).',
        '  Meanwhile: the same app runs in your browser. Starting `kvscope serve` now; open the URL it prints.',
        '',
      ].join('\n'),
    );
  }
  const child = spawn(process.execPath, ['bin/kvscope.js', 'serve', ...process.argv.slice(2).filter((a) => !a.startsWith('--rebuild') && a !== '--browser')], { stdio: 'inherit' });
  child.on('exit', (code) => process.exit(code ?? 0));
} else {
  const child = spawn(electronPath, ['.'], { stdio: 'inherit' });
  child.on('exit', (code) => process.exit(code ?? 0));
}
