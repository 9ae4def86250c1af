/**
 * `kvscope resume <run> [connection options]`: follows a run again from its last stored byte, to
 * its end. For a run whose follower stopped while the run went on on its host: the follower was
 * killed, the app crashed, the link was down for longer than the reconnect window, or this
 * machine's disk filled. The tail starts at exactly the local copy's length, so the local
 * events.jsonl ends byte-identical to the host's. Output and exit status as `kvscope run`.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { defaultDataDir, defaultRunsDir } from '../../main/core/paths';
import { RunManager } from '../../main/core/runs';
import { RunStore } from '../../main/core/run-store';
import { withSlurm } from '../../main/core/slurm';
import { addHostOptions, hostServiceFromCli, type HostCliOptions } from './hosts';
import { followToEnd, stderrProgress } from './run';
import { writeStderr } from '../terminal';

/** A run folder's path (`kvscope run --out DIR`), or a run id in the runs folder. */
export function resumeTarget(run: string, runsDir: string | undefined): { runsDir: string; runId: string } {
  const path = resolve(run);
  if (existsSync(resolve(path, 'meta.json')) && statSync(path).isDirectory()) return { runsDir: dirname(path), runId: basename(path) };
  return { runsDir: runsDir ? resolve(runsDir) : defaultRunsDir(), runId: run };
}

export function registerResume(program: Command): void {
  addHostOptions(
    program
      .command('resume')
      .description('follow an incomplete run again from its last stored byte to its end (its log ends byte-identical to the host\'s)')
      .argument('<run>', 'a run folder (as `kvscope run` printed it) or a run id in the runs folder')
      .option('--runs-dir <dir>', 'runs library, for a run id (default: the app data folder\'s runs/)'),
  ).action(async (run: string, opts: HostCliOptions & { runsDir?: string }) => {
    const target = resumeTarget(run, opts.runsDir);
    const store = new RunStore(target.runsDir, null);
    const hosts = hostServiceFromCli({ ...opts, dataDir: defaultDataDir() });
    const runs = new RunManager(withSlurm({ store, hosts, push: stderrProgress() }));
    const log = resolve(store.runDir(target.runId), 'events.jsonl');
    const stored = existsSync(log) ? statSync(log).size : 0;
    const { runId, remoteDir } = await runs.resume(target.runId);
    writeStderr(`following run ${runId} again in ${remoteDir} (${stored} bytes stored here)\n`);
    await followToEnd(runs, store, runId);
  });
}
