/** `kvscope import <file.kvscope>`: restores a portable run file into the runs folder, byte for byte. */
import type { Command } from 'commander';
import { importKvscopeFile } from '../../main/core/export/kvscope-file';
import { defaultRunsDir } from '../../main/core/paths';
import { writeStdout, writeStderr } from '../terminal';

export function registerImport(program: Command): void {
  program
    .command('import')
    .description('restore a .kvscope run file into the runs folder (prints the new run id)')
    .argument('<file>', 'a .kvscope file written by `kvscope export --format kvscope` or the app')
    .option('--runs-dir <dir>', 'runs folder (default: the app data folder)')
    .action(async (file: string, opts: { runsDir?: string }) => {
      const r = await importKvscopeFile(file, opts.runsDir ?? defaultRunsDir());
      writeStderr(`imported ${r.eventsBytes} bytes of events into ${r.dir}\n`);
      writeStdout(`${r.id}\n`);
    });
}
