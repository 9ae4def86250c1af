/**
 * The `kvscope` command as a user runs it: the CLI bundled once per test file (esbuild, into its
 * own file under test-artifacts/cli/), then run in a child process with the test's environment.
 * The bundle lives inside the checkout so that it finds this checkout's agent and built renderer
 * (findAppRoot walks up from it): under node_modules/.cache it found whatever checkout the
 * node_modules folder really belongs to, when that is a link shared between checkouts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { build } from 'esbuild';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Bundles src/cli into `test-artifacts/cli/<name>/kvscope.mjs`; returns the path. */
export async function buildCli(name: string): Promise<string> {
  const outfile = resolve('test-artifacts', 'cli', name, 'kvscope.mjs');
  await build({ entryPoints: ['src/cli/index.ts'], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'warning', footer: { js: 'await main(process.argv);' } });
  return outfile;
}

/** Runs the bundled CLI; `onStderr` hears all of stderr so far on each chunk (and may signal the child). */
export function runCli(cli: string, args: string[], env: Record<string, string>, onStderr?: (text: string, child: ChildProcess) => void): Promise<CliResult> {
  return new Promise((done) => {
    const p = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      onStderr?.(stderr, p);
    });
    p.on('close', (code) => done({ code, stdout, stderr }));
  });
}
