/**
 * The one contract between the renderer and the app's core. The Electron preload object
 * `satisfies KvScopeApi`; the browser bridge (kvscope serve) implements the same type over a
 * WebSocket. Every call resolves to a Result (see result.ts); subscriptions return an unsubscribe
 * function. Add a method here first, then to `CORE_METHODS`, the preload and the core handlers:
 * test/unit/api-contract.test.ts fails until all four agree.
 */
import type { BadLine } from './events-reader';
import type { KvEvent } from './protocol';
import type { Result } from './result';
import type { RunAnalysis } from './run-analysis';
import type { EngineName } from './workload-options';

export interface AppInfo {
  name: string;
  version: string;
  /** "electron" in the desktop app, "browser" through kvscope serve. */
  shell: 'electron' | 'browser';
  versions: Record<string, string>;
  runsDir: string;
}

/** One row of the runs library. */
export interface RunListing {
  id: string;
  name: string;
  /** Where the run came from: "sample" (bundled), "local", or a host alias. */
  host: string;
  status: 'ok' | 'error' | 'cancelled' | 'running' | 'incomplete';
  createdAt: string;
  model: string | null;
  users: number | null;
  rounds: number | null;
  engine: string | null;
  gpu: string | null;
  e2e_ns: number | null;
  /** Queued TTFT (queued → first token) over the timed rounds. */
  ttft_ns_mean: number | null;
  /** Service TTFT (admitted → first token) over the timed rounds. */
  service_ttft_ns_mean?: number | null;
  /** Why a failed run failed ("code: message", from run.end or from the app when the agent never started); null otherwise. */
  error?: string | null;
  /** True for runs shipped with the app (read-only). */
  bundled: boolean;
  /** Workload settings that make a different configuration in Compare (run.start config; null when absent). */
  context_tokens?: number | null;
  /** The GPU KV pool's size when the run capped it (run.start config `gpu_kv_bytes`); null: sized from free GPU memory. */
  gpu_kv_bytes?: number | null;
  /** 0: no host pool (the recompute baseline). */
  host_kv_bytes?: number | null;
  /** A disk tier's bytes behind the host pool (run.start config `disk_kv_bytes`; null or 0: none). */
  disk_kv_bytes?: number | null;
  /** Blocks the run moved between each pair of pools, keyed `${from}>${to}` (RunAnalysis.moves): whether a tier carried any block. */
  tier_moves?: Record<string, number> | null;
  /** Set on a run the what-if simulator made (run.start `simulated`): no GPU ran it. */
  simulated?: SimulatedRunInfo | null;
  /** An incomplete run started from this machine (not imported): `resumeRun` follows it again. */
  resumable?: boolean;
}

/** What a simulated run says of itself, for the lists and charts that must label it. */
export interface SimulatedRunInfo {
  /** The simulated card: a profile id ("gh200-96") and its name. */
  profile: string;
  profileName: string;
  /** The measured runs the simulator was calibrated on (their run.start run_id). */
  sourceRunIds: string[];
  /** The card those ran on. */
  sourceGpu: string | null;
  /** Where the calibration held a factor the measured runs could not determine: this run's E2E and mean (queued) TTFT across it, ns; null when nothing held moves them. */
  range?: { e2e_ns: [number, number]; ttft_ns_mean: [number, number] } | null;
}

/** A run as the window opens it: its row of the library, and its index's bytes (docs/run-index.md). */
export interface RunIndexBytes {
  listing: RunListing;
  index: Uint8Array;
}

/** A run loaded for viewing: all valid events (in seq order), what was skipped, and the summary. */
export interface LoadedRun {
  listing: RunListing;
  events: KvEvent[];
  badLines: BadLine[];
  badLineTotal: number;
  analysis: RunAnalysis;
}

// ---- Hosts, runs over SSH, sweeps ----

/** Where a host entry came from: the user's ssh config, the app's own host list, or the built-in Local host. */
export type HostSource = 'ssh-config' | 'app' | 'local';

/** One host the user can run on, as resolved the way ssh(1) would (alias → HostName, User, Port, ...). */
export interface HostEntry {
  /** The name the user types: an ssh-config alias, an app host's name, or "local". */
  alias: string;
  source: HostSource;
  hostname: string | null;
  user: string | null;
  port: number | null;
  /** ProxyJump hops in connection order (empty: direct). */
  proxyJump: string[];
  identityFiles: string[];
  /** Python interpreter the agent runs with on this host (default "python3"). */
  python: string;
  /** Why parts of the config were ignored (an unsafe config file, an unreadable key, ...). */
  warnings: string[];
  /** Set when the host is a Slurm login node: runs become jobs (saveCluster; core/slurm). */
  cluster?: ClusterOptions | null;
}

/**
 * A Slurm login node's submission options, kept per host alias (clusters.json in the data folder)
 * and overridable per run (RunRequest.slurm, the CLI's --slurm-* options). Every value is checked
 * (core/slurm/options.ts) and only ever reaches a shell quoted.
 */
export interface ClusterOptions {
  /** `--partition` (one name or a comma list). */
  partition?: string;
  /** `--account`. */
  account?: string;
  /** GPUs per job: `--gres=gpu:N`, or `gpu:<type>:N` with gpuTypes. */
  gpus?: number;
  /** Card types (`--gres=gpu:<type>:N`): a sweep runs one job array per type; a single run takes the first. */
  gpuTypes?: string[];
  /** `--time` (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS). */
  timeLimit?: string;
  /** Extra sbatch options, one per line, written as `#SBATCH <line>` (e.g. `--qos=high`). */
  sbatch?: string[];
  /** A shell line run in the job before the agent (e.g. `module load cuda && source ~/venv/bin/activate`). */
  setup?: string;
  /** The folder on the cluster's shared filesystem for the agent and runs (default: the remote root, ~/.cache/kvscope). */
  sharedDir?: string;
  /** A sweep's job array runs at most this many elements at once (`--array=0-N%K`). */
  arrayLimit?: number;
  /** How often the queue is asked (squeue), in seconds (default 5). */
  pollSeconds?: number;
}

/** What a probe of a Slurm login node learns (sinfo, sacctmgr, a write test). */
export interface SlurmProbe {
  /** "slurm 23.11.4" as `sinfo --version` prints it; null when Slurm's commands are not found. */
  version: string | null;
  partitions: Array<{ name: string; default: boolean; available: string; nodes: number; timeLimit: string; gpuTypes: string[]; gres: string[] }>;
  /** The user's default account (sacctmgr); null where accounting is not kept. */
  defaultAccount: string | null;
  sharedDir: { path: string; writable: boolean; error: string | null };
  notes: string[];
}

/** A host added in the app (kept in the user data folder). */
export interface HostInput {
  alias: string;
  hostname: string;
  user?: string;
  port?: number;
  identityFile?: string;
  /** "host1,user@host2:22" as in ssh_config. */
  proxyJump?: string;
  python?: string;
}

export interface ProbeGpu {
  index: number;
  name: string;
  uuid: string | null;
  memory_total_bytes: number | null;
  memory_free_bytes: number | null;
  pcie_gen: number | null;
  pcie_width: number | null;
  /** NVLink-C2C between CPU and GPU (GH200-class hosts). */
  c2c: boolean | null;
}

export interface ProbeEngine {
  name: 'torch' | 'tensorrt_llm' | 'vllm';
  available: boolean;
  version: string | null;
  /** Why it does not import, when it doesn't. */
  reason: string | null;
}

/** What one probe round trip learns about a host. */
/** An interpreter on a host that imports torch, as the probe found it. */
export interface TorchPython {
  /** The path as found (a venv's bin/python3): what to give as the run's Python. */
  executable: string;
  /** Python's version. */
  version: string;
  /** torch's version. */
  torch: string;
  cuda_available: boolean;
}

export interface HostProbe {
  alias: string;
  hostname: string | null;
  os: string | null;
  python: { executable: string; version: string } | null;
  torch: { version: string; cuda: string | null; cuda_available: boolean } | null;
  /** Every interpreter found on the host that imports torch (docs/protocol.md "The host probe's answer"); absent from older probes. */
  torch_pythons?: TorchPython[];
  engines: ProbeEngine[];
  gpus: ProbeGpu[];
  driver_version: string | null;
  cuda_version: string | null;
  /** Free bytes where runs and the agent go (~/.cache/kvscope). */
  disk_free_bytes: number | null;
  ram_total_bytes: number | null;
  ram_available_bytes: number | null;
  /** Non-fatal problems (nvidia-smi missing, ...). */
  notes: string[];
  elapsed_ms: number;
  /** A Slurm login node's scheduler side (set for cluster hosts). */
  slurm?: SlurmProbe;
}

/**
 * A question the core needs the user to answer while it connects; pushed as `{kind:'prompt'}`.
 * Answer host-key prompts with `answerHostKey`, the others with `providePassphrase`. An unanswered
 * prompt times out and the connection fails; secrets are never logged or stored.
 */
export type HostPrompt =
  | {
      id: string;
      type: 'host-key';
      /** The alias being connected, and the hop (host:port) whose key is unknown. */
      host: string;
      hop: string;
      keyType: string;
      /** "SHA256:..." as ssh-keygen -l prints it. */
      fingerprint: string;
      message: string;
    }
  | { id: string; type: 'passphrase'; host: string; keyFile: string; message: string }
  | { id: string; type: 'password'; host: string; user: string; message: string };

/**
 * The agent's workload options (`python3 -m kvscope_agent run`), snake_case as in run.start.config:
 * the rows of its option table (shared/workload-options.ts), where each key's type, bounds and
 * engines are. These are the ones the app's own code reads or sets; any other row of the table
 * may be given too (the CLI sets them by name), and agentRunArgs checks every key against the table.
 */
export interface AgentWorkload {
  engine?: EngineName;
  /** "tiny", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-70b-fp8" or a config.json path on the host. */
  model?: string;
  /** "cuda", "cuda:N" or "cpu". */
  device?: string;
  users?: number;
  rounds?: number;
  context_tokens?: number;
  new_tokens?: number;
  output_tokens?: number;
  block_tokens?: number;
  gpu_kv_bytes?: number;
  free_gpu_memory_fraction?: number;
  host_kv_bytes?: number;
  seed?: number;
  trace?: boolean;
  sample_ms?: number;
  /** The built-in engine's offload (engine "torch" only). */
  offload_policy?: OffloadPolicy;
  /** The built-in engine's onboards run beside the offload that makes room (engine "torch" only);
   * absent = the agent's auto (copyOverlapAuto). */
  copy_overlap?: boolean;
}

/**
 * The built-in engine's offload policies (the option table's choices, OFFLOAD_POLICIES in
 * shared/workload-options.ts, each explained there):
 * lazy: a block goes to the host when evicted and leaves it when onboarded (TensorRT-LLM);
 * lazy-keep: the same, but the host keeps its copy, so evicting it again unchanged copies nothing;
 * write-through: blocks are copied to the host as they are computed once the GPU pool is full.
 */
export type OffloadPolicy = 'lazy' | 'lazy-keep' | 'write-through';

/** What the bundled agent's `--copy-overlap auto` (its default) picks for each policy: on where an
 * admission both offloads and onboards a whole conversation (lazy), measured on an H200
 * (engine/__init__.py, default_copy_overlap; a unit test holds the two equal). */
export function copyOverlapAuto(policy: OffloadPolicy): boolean {
  return policy === 'lazy';
}

export interface RunRequest {
  /** A host alias, or "local". */
  host: string;
  /** Run name shown in the library (default: made from host, model and users). */
  name?: string;
  /** Overrides the host's Python interpreter for this run. */
  python?: string;
  workload: AgentWorkload;
  /** Submit as a Slurm job: these options over the host's saved cluster options. */
  slurm?: ClusterOptions;
}

export interface RunStarted {
  runId: string;
  /** The run folder on the host (on this machine for Local). */
  remoteDir: string;
}

export interface SweepRequest {
  hosts: string[];
  /** One run per user count per host. */
  users: number[];
  workload: Omit<AgentWorkload, 'users'>;
  python?: string;
  name?: string;
  /** Cluster hosts: these options over the host's saved ones; the sweep is one job array per card type. */
  slurm?: ClusterOptions;
}

/** One row of a sweep's table. */
export interface SweepRow {
  host: string;
  users: number;
  runId: string | null;
  status: RunListing['status'] | 'pending';
  e2e_ns: number | null;
  ttft_ns_mean: number | null;
  error: string | null;
  /** Cluster hosts: the Slurm job (`<array id>_<index>`) and the card type of this row. */
  job_id?: string | null;
  gpu_type?: string | null;
}

// ---- Desktop shell: settings, files, notifications ----

export type Theme = 'system' | 'dark' | 'light';

/** The New run form's defaults: the seed's workload (resources/agent/README.md, "Options"). */
export interface WorkloadDefaults {
  /** A sweep runs one run per user count from usersMin to usersMax. */
  usersMin: number;
  usersMax: number;
  contextTokens: number;
  newTokens: number;
  outputTokens: number;
  rounds: number;
  /** Host KV pool in bytes (the seed's kv_host_cache_bytes). */
  hostKvBytes: number;
  /** GPU KV pool as a fraction of free GPU memory after weights (the seed's free_gpu_memory_fraction). */
  freeGpuMemoryFraction: number;
  blockTokens: number;
}

/** settings.json in the user data folder. */
export interface Settings {
  version: 1;
  workload: WorkloadDefaults;
  /** The runs folder; null = `runs` in the user data folder. Takes effect at the next start. */
  runsDir: string | null;
  /** Python interpreter per host alias (e.g. a venv's python); hosts not named use "python3". */
  pythonByHost: Record<string, string>;
  /** nvidia-smi sample period in milliseconds (the agent's --sample-ms). */
  sampleMs: number;
  theme: Theme;
  /** Run ids opened lately, newest first (kept by the app for File → Recent; saveSettings ignores it). */
  recentRuns: string[];
}

/** What getSettings/saveSettings return: the settings and where they live. */
export interface SettingsSnapshot {
  settings: Settings;
  defaults: Settings;
  /** The settings file, or null when settings last only for this session. */
  file: string | null;
  /** Set when settings.json was unreadable or invalid at load: where it was moved and why. */
  recovered: { movedTo: string; reason: string } | null;
  /** Whether passwords and passphrases can be remembered (OS keychain through Electron safeStorage). */
  secrets: { rememberAvailable: boolean; remembered: number; reason: string | null };
}

export interface OpenFileDialogOptions {
  title?: string;
  /**
   * "run": open a .kvscope file, an events.jsonl(.gz) or a run folder; "engine-dump": open JSON /
   * JSON lines; "folder": choose a folder (the runs folder); "export": a save dialog for a new file.
   */
  purpose?: 'run' | 'engine-dump' | 'folder' | 'export';
  /** export: the file name offered (e.g. "run-1.trace.json"). */
  defaultName?: string;
}

/** A run made viewable by openPath: its id in the library, and whether it was copied in. */
export interface OpenedRun {
  runId: string;
  imported: boolean;
  listing: RunListing;
}

/** Menu actions, sent to the renderer as `{kind:'menu'}` pushes (zoom is handled by the shell itself). */
export type MenuAction =
  | 'new-run'
  | 'open-run'
  | 'import-engine-dump'
  | 'export'
  | 'show-run'
  | 'view-live'
  | 'view-timeline'
  | 'view-compare'
  | 'settings';

/** Pushed from core to the renderer, batched (never one message per event). */
/**
 * Formats of `exportRun` and `kvscope export`: a trace as Chrome Trace Event JSON (Perfetto,
 * DevTools, chrome://tracing) or as Perfetto's native protobuf, CSV tables, or a portable run file.
 */
export type ExportFormat = 'perfetto' | 'perfetto-proto' | 'csv' | 'kvscope';
/**
 * Every export format, with what the window calls it (short: the Export menu sits in a toolbar
 * row) and the default name's ending (docs/export.md): the JSON trace opens in Perfetto, DevTools
 * and chrome://tracing; the .pftrace is Perfetto's own format.
 */
export const EXPORT_FORMAT_CHOICES: ReadonlyArray<{ id: ExportFormat; label: string; ext: string }> = [
  { id: 'perfetto', label: 'Trace, JSON (.trace.json)', ext: '.trace.json' },
  { id: 'perfetto-proto', label: 'Trace, Perfetto (.pftrace)', ext: '.pftrace' },
  { id: 'csv', label: 'CSV tables (folder)', ext: '-csv' },
  { id: 'kvscope', label: 'Portable run file (.kvscope)', ext: '.kvscope' },
];
export interface ExportRunOptions {
  /** csv only: write just this table to the destination file (else both tables into the destination folder). */
  table?: 'rounds' | 'requests';
}
export interface ExportRunResult {
  files: string[];
  /** Valid events exported (0 for kvscope, which copies bytes without decoding). */
  events: number;
  /** Bad lines skipped (also named in a trace's metadata). */
  badLines: number;
  /** What was skipped, one line each, for the user. */
  skipped: string[];
  /** perfetto, perfetto-proto only: block moves no copy could be matched to. */
  unmatchedMoves: number | null;
}
/** Which chart an image shows. */
export type ChartImageKind = 'compare' | 'timeline';

export type PushMessage =
  | { kind: 'run-events'; runId: string; events: KvEvent[] }
  /** `restarted`: the run's log starts over (a requeued Slurm job runs again from its beginning). */
  | { kind: 'run-status'; runId: string; status: RunListing['status']; message?: string; restarted?: boolean }
  | { kind: 'progress'; runId: string; stage: string; fraction: number | null; etaS: number | null; message: string }
  | { kind: 'prompt'; prompt: HostPrompt }
  | { kind: 'sweep-status'; sweepId: string; rows: SweepRow[]; done: boolean }
  /** A menu command or a file opened from outside (command line, second instance, Finder): `runId` with show-run. */
  | { kind: 'menu'; action: MenuAction; runId?: string };

export type Unsubscribe = () => void;

/** Where an imported run's log comes from: a path on this machine, or a file's bytes (browser upload). */
export type ImportRunSource = { path: string } | { fileName: string; bytesBase64: string };

/** A card the what-if simulator can replay runs on (a built-in profile; docs/whatif.md). */
export interface WhatIfProfile {
  id: string;
  name: string;
  /** The host link: "PCIe Gen5 x16", "NVLink-C2C". */
  link: string;
  /** Every number the simulator reads, with where it comes from. */
  numbers: Record<string, { value: number; source: string; basis: string }>;
}

export interface WhatIfRequest {
  /** Measured library runs of one model on one card (a run, or a sweep): what is calibrated on. */
  runIds: string[];
  /** A built-in profile id (whatIfProfiles). */
  profile: string;
  /** User counts to simulate: "2..16", "2,4,8"; absent: the runs' own. */
  users?: string;
}

export interface WhatIfResult {
  /** The simulated runs, added to the library (host "simulated", run.start `simulated`). */
  runIds: string[];
  /** The GPU pool on the simulated card (the agent's memory plan) and how many users it holds. */
  gpuPool: { blocks: number; bytes: number; usersItHolds: number; note: string };
  /** Each source run replayed on its own card: how close the calibration came (relative error). */
  selfCheck: Array<{ users: number; e2eError: number | null; ttftError: number | null }>;
  /** Cost factors the source runs could not determine: what each was held at, and why (empty: every factor was measured). */
  uncertain: Array<{ factor: string; why: string }>;
  /** Where a factor was held: each users point's E2E and mean TTFT at either end of what the source runs allow, ns. */
  ranges: Array<{ users: number; e2eNs: [number, number]; ttftNsMean: [number, number] }>;
}

export interface KvScopeApi {
  getAppInfo(): Promise<Result<AppInfo>>;
  listRuns(): Promise<Result<RunListing[]>>;
  loadRun(runId: string): Promise<Result<LoadedRun>>;
  /**
   * The run's listing and index (docs/run-index.md, read with src/shared/run-index): how the
   * window opens a run. The index is built from the log first when missing or stale, with
   * `progress` pushes (stage `index`) while that runs. Through `kvscope serve` the bytes travel in
   * one binary WebSocket frame.
   */
  loadRunIndex(runId: string): Promise<Result<RunIndexBytes>>;
  /** Runs library. Bundled samples are read-only: rename/delete refuse them. */
  renameRun(runId: string, name: string): Promise<Result<RunListing>>;
  deleteRun(runId: string): Promise<Result<{ id: string }>>;
  importRun(source: ImportRunSource): Promise<Result<RunListing>>;
  /** The run's folder (or bundled file) on disk; the Electron shell also shows it in the file manager. */
  revealRun(runId: string): Promise<Result<string>>;
  /** The cards the what-if simulator knows (docs/whatif.md). */
  whatIfProfiles(): Promise<Result<WhatIfProfile[]>>;
  /** Replays measured runs on another card (the agent's simulator, run on this machine); the simulated runs join the library. */
  runWhatIf(request: WhatIfRequest): Promise<Result<WhatIfResult>>;
  /** Hosts from ~/.ssh/config, the app's own hosts, and Local. */
  listHosts(): Promise<Result<HostEntry[]>>;
  /** Adds or replaces an app host (kept in the user data folder). */
  saveHost(host: HostInput): Promise<Result<HostEntry>>;
  removeHost(alias: string): Promise<Result<void>>;
  /** Makes a host a Slurm cluster with these submission options (null: a plain host again). */
  saveCluster(alias: string, options: ClusterOptions | null): Promise<Result<HostEntry>>;
  /** Connects (asking through prompts when needed) and probes the host in one round trip. */
  probeHost(alias: string, options?: { python?: string }): Promise<Result<HostProbe>>;
  /** The user's answer to a `host-key` prompt: accept records the key in known_hosts. */
  answerHostKey(promptId: string, accept: boolean): Promise<Result<void>>;
  /**
   * The user's answer to a `passphrase` or `password` prompt; null cancels. It is kept for the
   * session; `remember` also stores it encrypted by the OS keychain where there is one.
   */
  providePassphrase(promptId: string, secret: string | null, options?: { remember?: boolean }): Promise<Result<void>>;
  /** Deploys the agent, starts it detached and tails it; events arrive as `run-events` pushes. */
  startRun(request: RunRequest): Promise<Result<RunStarted>>;
  /** TERM to the run's process group, KILL after a grace period. */
  cancelRun(runId: string): Promise<Result<void>>;
  /**
   * Follows an incomplete run again from its last stored byte (listing.resumable), to a log
   * byte-identical to the host's. Refused for imported runs, which are never followed.
   */
  resumeRun(runId: string): Promise<Result<RunStarted>>;
  /** One run per user count per host; hosts in parallel; `sweep-status` pushes carry the table. */
  startSweep(request: SweepRequest): Promise<Result<{ sweepId: string }>>;
  /** Settings: read, and validate + write atomically. */
  getSettings(): Promise<Result<SettingsSnapshot>>;
  saveSettings(settings: Settings): Promise<Result<SettingsSnapshot>>;
  /** Forgets every remembered password and passphrase (memory and keychain-encrypted file). */
  forgetSecrets(): Promise<Result<{ forgotten: number }>>;
  /** Opens a .kvscope file, an events.jsonl(.gz) or a run folder: library runs open in place, others are imported. */
  openPath(path: string): Promise<Result<OpenedRun>>;
  /** Exports a library run to an absolute path, streaming; `progress` pushes (stage `export-<format>`) while it runs. */
  exportRun(runId: string, format: ExportFormat, destPath: string, options?: ExportRunOptions): Promise<Result<ExportRunResult>>;
  /** Restores a .kvscope run file into the library (byte for byte) and lists it. */
  importRunFile(path: string): Promise<Result<RunListing>>;
  /**
   * Writes a chart image the renderer drew: SVG text or a `data:image/png;base64,` URL (≤ 50 MB),
   * to an absolute .svg/.png path (extension must match), or into a folder as `<run>-<kind>.<ext>`.
   */
  saveImage(runIdOrName: string, kind: ChartImageKind, dataUrlOrSvg: string, destPath: string): Promise<Result<{ path: string; bytes: number; format: 'png' | 'svg' }>>;
  /** File → Import Engine Dump: a TensorRT-LLM or vLLM KV-event dump translated by the agent into a run. */
  importEngineDump(path: string, engine: 'tensorrt_llm' | 'vllm'): Promise<Result<OpenedRun>>;
  /** The desktop file dialog; resolves to a path, or null when cancelled. `unsupported` in a browser. */
  openFileDialog(options?: OpenFileDialogOptions): Promise<Result<string | null>>;
  /** A desktop notification. `unsupported` in a browser (the page may use the Notification API instead). */
  notify(title: string, body: string): Promise<Result<void>>;
  /** Receives pushed batches; returns the function that stops them. */
  onPush(listener: (message: PushMessage) => void): Unsubscribe;
  /**
   * Electron only (absent in a browser): the path of a dropped file, for drag and drop. Runs in the
   * preload (webUtils.getPathForFile) because File.path is gone since Electron 32.
   */
  pathForFile?(file: Blob): string | null;
}

/** Methods that are request/response calls (everything except subscriptions). */
export type CoreMethod = Exclude<keyof KvScopeApi, LocalMember>;

/** Members the bridge answers locally, without a call to the core. */
export type LocalMember = 'onPush' | 'pathForFile';

/** The request/response methods, listed once for the preload, the IPC layer and the bridge. */
export const CORE_METHODS = [
  'getAppInfo',
  'listRuns',
  'loadRun',
  'loadRunIndex',
  'renameRun',
  'deleteRun',
  'importRun',
  'revealRun',
  'whatIfProfiles',
  'runWhatIf',
  'listHosts',
  'saveHost',
  'removeHost',
  'saveCluster',
  'probeHost',
  'answerHostKey',
  'providePassphrase',
  'startRun',
  'cancelRun',
  'resumeRun',
  'startSweep',
  'getSettings',
  'saveSettings',
  'forgetSecrets',
  'openPath',
  'importEngineDump',
  'openFileDialog',
  'notify',
  'exportRun',
  'importRunFile',
  'saveImage',
] as const satisfies readonly CoreMethod[];

/** What main/serve implement: each call with the renderer's arguments. */
export type CoreHandlers = { [K in CoreMethod]: KvScopeApi[K] };

/** IPC channel of a method; the push channel. */
export const ipcChannel = (method: CoreMethod): string => `kvscope:${method}`;
export const PUSH_CHANNEL = 'kvscope:push';

/**
 * kvscope serve's binary result frame (serve.ts binaryResultFrame, ws-bridge.ts), for a result
 * whose value has one Uint8Array property: u32 request id, u32 JSON length, the JSON
 * `{ key, value }` (the value without that property), zero padding to a multiple of 8, then the
 * bytes, which so start 8-aligned for views of typed columns.
 */
export const BINARY_FRAME_PREFIX_BYTES = 8;

/** The one Uint8Array property of a result value, if it has one (what travels as a binary frame). */
export function binaryField(value: unknown): string | null {
  if (!value || typeof value !== 'object' || Array.isArray(value) || ArrayBuffer.isView(value)) return null;
  const keys = Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] instanceof Uint8Array);
  return keys.length === 1 ? keys[0]! : null;
}
