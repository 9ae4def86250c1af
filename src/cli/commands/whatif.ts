/**
 * `kvscope whatif <run...> --profile gh200-96 [--users 2..16] [--out DIR]`: recorded runs replayed
 * on another card by the agent's simulator (docs/whatif.md), on this machine, as the window's
 * What-if action does. Prints the agent's table (or its JSON with --json); with --out, DIR holds the
 * simulated runs (DIR/users-N/events.jsonl, marked simulated) that `kvscope open` and `validate` take.
 */
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { isKvscopeFile, readKvscopeFile } from '../../main/core/export/kvscope-file';
import { appPaths, defaultDataDir, defaultRunsDir, findAppRoot } from '../../main/core/paths';
import { SettingsStore } from '../../main/core/settings';
import { checkUsersSpec, runLocalAgent } from '../../main/core/whatif';
import { CodedError } from '../../shared/result';
import { writeStderr, writeStdout } from '../terminal';

interface WhatIfOptions {
  profile?: string;
  users?: string;
  out?: string;
  gpuKvBytes?: string;
  sourceProfile?: string;
  python?: string;
  json?: boolean;
  listProfiles?: boolean;
}

/** A run argument as the agent reads it: paths as given (run folders, logs, sweep folders), a run id of the runs folder, a .kvscope file unpacked. */
async function agentInput(arg: string, runsDir: string, scratch: string, n: number): Promise<string> {
  if (!existsSync(arg) && /^[A-Za-z0-9._-]{1,128}$/.test(arg) && existsSync(join(runsDir, arg))) return join(runsDir, arg);
  if (!existsSync(arg)) throw new CodedError('not_found', `no such run, folder or file: ${arg}`);
  if (!isKvscopeFile(arg)) return arg;
  const file = join(scratch, `input-${n}.jsonl`);
  await pipeline(Readable.from(readKvscopeFile(arg)), createWriteStream(file));
  return file;
}

export function registerWhatIf(program: Command): void {
  program
    .command('whatif')
    .description('replay recorded runs on another card (simulated, docs/whatif.md): the runs are one model on one card, their step costs calibrate it')
    .argument('[runs...]', 'run folders, events.jsonl[.gz], .kvscope files, run ids, or a sweep folder')
    .option('--profile <id|file>', 'the card: a built-in profile (see --list-profiles) or a profile file (docs/whatif.md)')
    .option('--users <counts>', 'user counts to simulate: 2..16 or 2,4,8 (default: the runs\u2019 own)')
    .option('--out <dir>', 'write the simulated runs here (DIR/users-N/events.jsonl) and whatif.json')
    .option('--gpu-kv-bytes <bytes|plan>', 'GPU KV pool on the card (default: the runs\u2019 --gpu-kv-bytes if they gave one, else the memory plan)')
    .option('--source-profile <id|file>', 'the runs\u2019 own card, when its name matches no built-in profile')
    .option('--python <path>', 'Python to run the agent with (default: Settings\u2019 Python for local, else python3)')
    .option('--json', 'print JSON instead of the table')
    .option('--list-profiles', 'list the built-in profiles')
    .action(async (runs: string[], opts: WhatIfOptions) => {
      const paths = appPaths(findAppRoot(dirname(fileURLToPath(import.meta.url))));
      const settings = await new SettingsStore(join(defaultDataDir(), 'settings.json')).load();
      const python = opts.python ?? settings.pythonByHost.local ?? 'python3';
      const args = ['whatif'];
      if (opts.listProfiles) args.push('--list-profiles');
      else {
        if (!opts.profile) throw new CodedError('invalid_argument', '--profile is required (a built-in id such as gh200-96, or a profile file); --list-profiles lists them');
        if (runs.length === 0) throw new CodedError('invalid_argument', 'give the recorded runs to replay (run folders, logs, or a sweep folder)');
      }
      const users = checkUsersSpec(opts.users);
      const scratch = await mkdtemp(join(tmpdir(), 'kvscope-whatif-cli-'));
      try {
        const runsDir = settings.runsDir ?? defaultRunsDir();
        for (const [i, r] of runs.entries()) args.push(await agentInput(r, runsDir, scratch, i));
        if (opts.profile) args.push('--profile', opts.profile);
        if (users) args.push('--users', users);
        if (opts.out) args.push('--out', opts.out);
        if (opts.gpuKvBytes) args.push('--gpu-kv-bytes', opts.gpuKvBytes);
        if (opts.sourceProfile) args.push('--source-profile', opts.sourceProfile);
        if (opts.json) args.push('--json');
        const r = await runLocalAgent({ agentDir: paths.agentDir, python }, args);
        writeStdout(r.stdout);
        writeStderr(r.stderr);
        if (r.code === 2) process.exitCode = 2;
        else if (r.code !== 0) process.exitCode = 1;
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    });
}
