/**
 * The `kvscope` command. Each subcommand lives in `commands/` and registers itself here; all of
 * them run on the same framework-free core as the desktop app.
 */
import { Command } from 'commander';
import { registerExport } from './commands/export';
import { registerImport } from './commands/import';
import { registerOpen } from './commands/open';
import { registerServe } from './commands/serve';
import { registerValidate } from './commands/validate';
import { registerHosts } from './commands/hosts';
import { registerRun } from './commands/run';
import { registerResume } from './commands/resume';
import { registerSweep } from './commands/sweep';
import { registerClean } from './commands/clean';
import { registerWhatIf } from './commands/whatif';
import { VERSION } from '../shared/version';
import { writeStderr } from './terminal';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('kvscope')
    .description('KV Scope: profile KV-cache offloading between GPU and host memory on your GPU hosts')
    .version(VERSION)
    .showHelpAfterError();
  registerValidate(program);
  registerServe(program);
  registerExport(program);
  registerImport(program);
  registerOpen(program);
  registerHosts(program);
  registerRun(program);
  registerResume(program);
  registerSweep(program);
  registerClean(program);
  registerWhatIf(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    const code = (e as { code?: string }).code;
    writeStderr(`kvscope: ${(e as Error).message}\n`);
    process.exitCode = code === 'invalid_argument' ? 2 : 1;
  }
}
