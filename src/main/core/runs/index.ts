/**
 * A run's life on a host, in small modules: launch.ts (the agent's options, the detached launcher,
 * cancel), tail.ts (following the run's log through reconnects), local-log.ts (the byte-identical
 * local copy), manager.ts (start, follow, cancel, resume; orphaned runs after a crash) and
 * remote-cleanup.ts (`kvscope clean`). The programs run on the host (the tail, the listing) are
 * files of the agent package (agent-programs.ts).
 */
export { agentRunArgs, cancelDetached, launchDetached, newRunId, remoteRunDir, remoteRunName, type LaunchSpec } from './launch';
export { LocalEventSink, MAX_UNTERMINATED_LINE_BYTES } from './local-log';
export { markOrphanedRuns, RunManager, type RunManagerOptions, type RunScheduler } from './manager';
export { listRemoteRuns, removeRemoteRuns, type RemoteRunFolder } from './remote-cleanup';
export { resumeHint, tailRun, type TailEnd, type TailOptions, type TailProgress, type TailResult } from './tail';
