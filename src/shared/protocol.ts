/**
 * Agent → app event protocol, version 2 (docs/protocol.md); version 1 logs are read as they are.
 *
 * The protocol is data that the agent ships and the app reads alike:
 * resources/agent/kvscope_agent/protocol/events.schema.json (one JSON Schema per event type, the
 * runtime truth, compiled here once by Ajv) and protocol.json (version, line limits, bad-line
 * reasons, rule codes). The Python agent checks the same files (kvscope_agent/protocol), and
 * test/fixtures/protocol/ holds logs with the verdict both must give. The types below are written
 * out by hand for readable editor hints; test/unit/protocol.test.ts holds their required keys and
 * enums equal to the schemas. New optional keys are allowed everywhere (the protocol is extended
 * compatibly), so schemas never set `additionalProperties: false`.
 */
import Ajv, { type ValidateFunction } from 'ajv';
import schemaDoc from '../../resources/agent/kvscope_agent/protocol/events.schema.json';
import protocolDoc from '../../resources/agent/kvscope_agent/protocol/protocol.json';

export const PROTOCOL_VERSION: number = protocolDoc.version;
/** A line longer than this (newline not counted) is refused by every reader (docs/protocol.md). */
export const MAX_LINE_BYTES: number = protocolDoc.max_line_bytes;
/**
 * A line nested deeper than this (objects and arrays inside each other) is refused by every reader
 * before it is parsed: no event needs more than a few levels, and a value nested thousands deep
 * (extra keys are allowed, so the schema would pass it) overflows the stack of whatever
 * serializes it next (JSON.stringify in `kvscope serve`, structured clone over Electron IPC).
 */
export const MAX_JSON_DEPTH: number = protocolDoc.max_json_depth;
/**
 * A pool line declaring more blocks than this is refused (the `pool` schema's maximum: the largest
 * pool recorded so far is 3,356,933 blocks, and a pool of billions of cells is no engine's, while
 * every view sizes its grid by it).
 */
export const MAX_POOL_BLOCKS: number = schemaDoc.events.pool.allOf[1]!.properties!.capacity_blocks!.maximum!;

/** Why a line is refused, with its text (protocol.json `bad_lines`). */
export const BAD_LINE_TEXT = protocolDoc.bad_lines;
export type BadLineReason = keyof typeof BAD_LINE_TEXT;

/**
 * A pool's id (`^[a-z][a-z0-9_]{0,31}$`): "gpu" (tier 0) and "host" in every run, "disk" and
 * "remote" where an engine has those tiers, any other id with the tier its pool line gives.
 */
export type PoolName = string;
/** The ids docs/protocol.md gives a meaning: the GPU pool, pinned host memory, a local disk, a remote store. */
export const KNOWN_POOLS = ['gpu', 'host', 'disk', 'remote'] as const;
/** A pool's name in words: "GPU", "host", "disk", "remote", or its id ("the GPU pool", "the disk pool"). */
export function poolWord(pool: PoolName): string {
  return pool === 'gpu' ? 'GPU' : pool;
}

/** A pool's name as a title: "GPU pool", "Host pool", "Disk pool". */
export function poolTitle(pool: PoolName): string {
  const w = poolWord(pool);
  return `${w[0]!.toUpperCase()}${w.slice(1)} pool`;
}

/** A pool's tier when its line leaves it out (every v1 log): gpu 0, host 1. */
export const DEFAULT_TIER: Readonly<Record<string, number>> = { gpu: 0, host: 1 };
/** `offload` and `onboard` are v1's names for the moves gpu → host and host → gpu. */
export type BlockOp = 'store' | 'move' | 'evict' | 'hit' | 'offload' | 'onboard';
/** The copies between memories that CUPTI traces. */
export type CopyDir = 'h2d' | 'd2h' | 'd2d' | 'h2h';
/** A disk tier's I/O, which only the engine can time: h2f writes host memory to a file, f2h reads it back. */
export type DiskDir = 'h2f' | 'f2h';
export type XferDir = CopyDir | DiskDir;
export type MemKind = 'pinned' | 'pageable' | 'device' | 'managed' | 'unknown' | 'file';
export type ReqPhase = 'queued' | 'scheduled' | 'first_token' | 'done';
export type RunStatus = 'ok' | 'error' | 'cancelled';
export type PhaseName = 'setup' | 'load_model' | 'context' | 'rounds' | 'teardown';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

interface EventBase {
  /** 0 on the first line, +1 on every line. */
  seq: number;
  /** Nanoseconds since run start on the agent's monotonic clock. */
  t: number;
}

export interface GpuInfo {
  index: number;
  name: string;
  uuid?: string;
  memory_total_bytes?: number;
  pcie_gen?: number | null;
  pcie_width?: number | null;
  c2c?: boolean | null;
}

export interface RunStartEvent extends EventBase {
  type: 'run.start';
  run_id: string;
  protocol: number;
  agent_version: string;
  engine: { name: string; version: string };
  config: RunConfig;
  host: {
    hostname: string;
    gpus: GpuInfo[];
    driver_version?: string | null;
    cuda_version?: string | null;
    python_version?: string | null;
    torch_version?: string | null;
  };
  clock: { unix_ns_at_t0: number };
  capabilities?: Record<string, { on: boolean; source?: string; reason?: string; [k: string]: unknown }>;
  /** Present on a run the what-if simulator made (docs/whatif.md): no GPU ran it. */
  simulated?: SimulatedInfo;
}

/** run.start `simulated`: the card simulated, the measured runs it was calibrated on, the fit. */
export interface SimulatedInfo {
  profile: { id: string; name: string; link?: string; numbers?: Record<string, { value: number; source: string; basis?: string }> };
  source: { run_ids: string[]; gpu: string | null; model?: string | null; profile?: string; users?: number[]; [k: string]: unknown };
  calibration?: Record<string, unknown>;
  users?: number;
  method?: string;
  /** The calibration's held factors that move this run's numbers (name → what it was held at and why). */
  uncertain?: Record<string, string>;
  /** Where such a factor was held: this run's E2E and mean TTFT across what the source runs allow, ns. */
  range?: { e2e_ns: [number, number]; ttft_ns_mean: [number, number] };
}

/** The agent's options in snake_case, fully resolved (docs/protocol.md, `run.start` `config`). */
export interface RunConfig {
  engine?: string;
  model?: string;
  device?: string;
  users?: number;
  rounds?: number;
  context_tokens?: number;
  new_tokens?: number;
  output_tokens?: number;
  block_tokens?: number;
  gpu_kv_bytes?: number | null;
  host_kv_bytes?: number;
  free_gpu_memory_fraction?: number | null;
  seed?: number;
  trace?: boolean;
  sample_ms?: number;
  [engineSpecific: string]: unknown;
}

export interface PoolEvent extends EventBase {
  type: 'pool';
  pool: PoolName;
  /** 0 nearest compute (the gpu pool), up to 7; left out for gpu (0) and host (1) only. */
  tier?: number;
  capacity_blocks: number;
  block_tokens: number;
  block_bytes: number;
  medium?: 'device' | 'pinned' | 'pageable' | 'file' | 'remote';
  /** A disk tier's folder, as given to the engine. */
  path?: string;
  /** How a disk tier reads and writes: O_DIRECT, or through the page cache. */
  io?: 'o_direct' | 'buffered';
}

export interface BlocksEvent extends EventBase {
  type: 'blocks';
  op: BlockOp;
  ids: Array<string | number>;
  /** The pool a store, evict or hit acts on (required for evict; gpu when left out). */
  pool?: PoolName;
  /** A move's source and destination pools (required for `move`). */
  from?: PoolName;
  to?: PoolName;
  user?: number;
  round?: number;
  keep_source?: boolean;
}

export interface XferEvent extends EventBase {
  type: 'xfer';
  dir: XferDir;
  bytes: number;
  start: number;
  end: number;
  src_mem?: MemKind;
  dst_mem?: MemKind;
  device?: number;
  stream?: number;
  source: 'cupti' | 'engine';
  /** The pools a copy or a disk I/O moved blocks between, where the engine says. */
  from_pool?: PoolName;
  to_pool?: PoolName;
}

export interface ReqEvent extends EventBase {
  type: 'req';
  user: number;
  round: number;
  phase: ReqPhase;
  prompt_tokens?: number;
  output_tokens?: number;
  reused_gpu_tokens?: number;
  reused_host_tokens?: number;
  computed_tokens?: number;
  reused_disk_tokens?: number;
  /** On first_token: where the request's TTFT went (docs/protocol.md, "Where a request's TTFT went"). */
  ttft_parts?: TtftParts;
}

/** Blocks brought to the GPU from one tier for a request: how many, their bytes, and the ns they held its first token back. */
export interface TtftPart {
  blocks: number;
  bytes: number;
  ns: number;
}

/** A first token's TTFT split along its critical path; the ns parts sum to first_token.t − queued.t. A part left out is 0. */
export interface TtftParts {
  queued_ns: number;
  gpu_hit_blocks?: number;
  host_reload?: TtftPart;
  disk_promote?: TtftPart;
  recompute?: { tokens: number; ns: number };
  other_ns: number;
}

/** When one request (a user's turn in a round) reached each phase, ns on the run clock; null until it does. */
export type RequestPhaseTimes = { user: number; round: number } & Record<ReqPhase, number | null>;

export interface RoundEvent extends EventBase {
  type: 'round';
  round: number;
  e2e_ns: number;
  ttft_ns: Array<number | null>;
}

export interface GpuSampleEvent extends EventBase {
  type: 'gpu';
  index: number;
  mem_used_bytes: number | null;
  util_pct: number | null;
  mem_util_pct?: number | null;
  power_w?: number | null;
  sm_clock_mhz?: number | null;
  pcie_rx_bytes_per_s?: number | null;
  pcie_tx_bytes_per_s?: number | null;
  source: 'nvidia-smi' | 'nvml';
}

export interface PhaseEvent extends EventBase {
  type: 'phase';
  name: PhaseName;
  state: 'begin' | 'end';
}

export interface LogEvent extends EventBase {
  type: 'log';
  level: LogLevel;
  msg: string;
}

export interface RunSummary {
  e2e_ns: number | null;
  ttft_ns_mean: number | null;
  ttft_ns_p50: number | null;
  ttft_ns_p99: number | null;
  blocks_offloaded: number;
  blocks_onboarded: number;
  blocks_evicted: number;
  bytes_h2d: number;
  bytes_d2h: number;
  /** Blocks moved host → disk and disk → host (a run with a disk tier). */
  blocks_spilled?: number;
  blocks_promoted?: number;
  bytes_disk_read?: number;
  bytes_disk_write?: number;
  disk?: { path_fs?: string; io?: 'o_direct' | 'buffered'; plain_read_bytes_per_s?: number | null; plain_write_bytes_per_s?: number | null };
  [extra: string]: unknown;
}

export interface RunEndEvent extends EventBase {
  type: 'run.end';
  status: RunStatus;
  error?: { code: string; message: string };
  summary: RunSummary;
}

export type KvEvent =
  | RunStartEvent
  | PoolEvent
  | BlocksEvent
  | XferEvent
  | ReqEvent
  | RoundEvent
  | GpuSampleEvent
  | PhaseEvent
  | LogEvent
  | RunEndEvent;

export type EventType = KvEvent['type'];
/** Every event type, in events.schema.json's order (test/unit/protocol.test.ts holds it equal to `EventType`). */
export const EVENT_TYPES = Object.keys(schemaDoc.events) as readonly EventType[];

// ---------------------------------------------------------------------------------------------
// JSON Schemas (runtime validation), from events.schema.json

type Schema = Record<string, unknown>;
const SCHEMAS = schemaDoc.events as unknown as Record<EventType, Schema>;

let validators: Map<string, ValidateFunction> | null = null;

function compiled(): Map<string, ValidateFunction> {
  if (validators) return validators;
  // strict:false because `if/then` inside a typed schema trips Ajv's strictTypes check.
  const ajv = new Ajv({ allErrors: false, strict: false });
  validators = new Map(Object.entries(SCHEMAS).map(([type, schema]) => [type, ajv.compile({ ...schema, $defs: schemaDoc.$defs })]));
  return validators;
}

/** The source and destination pools of a blocks line that moves blocks (v1's offload and onboard are the moves gpu → host and host → gpu), else null. */
export function blockMove(e: BlocksEvent): { from: PoolName; to: PoolName } | null {
  if (e.op === 'offload') return { from: 'gpu', to: 'host' };
  if (e.op === 'onboard') return { from: 'host', to: 'gpu' };
  if (e.op === 'move') return { from: e.from!, to: e.to! };
  return null;
}

/** Whether a transfer is a memory copy (CUPTI's kind) rather than a disk tier's I/O. */
export function isCopyDir(dir: XferDir): dir is CopyDir {
  return dir !== 'h2f' && dir !== 'f2h';
}

/** An xfer line of a memory copy (not a disk tier's I/O). */
export type CopyEvent = XferEvent & { dir: CopyDir };

export function isCopy(e: XferEvent): e is CopyEvent {
  return isCopyDir(e.dir);
}

/** Why a parsed line is not a valid event. */
export type InvalidReason =
  | { kind: 'not_object' }
  | { kind: 'unknown_type'; type: string }
  | { kind: 'schema'; type: string; path: string; message: string };

/**
 * Whether JSON text nests objects/arrays more than `max` deep (brackets inside strings do not
 * count). Cheap for event lines: the exact scan runs only when the line has more than `max`
 * opening brackets at all, which no valid event has.
 */
export function jsonDeeperThan(text: string, max = MAX_JSON_DEPTH): boolean {
  let open = 0;
  for (const ch of ['{', '[']) {
    for (let i = text.indexOf(ch); i !== -1 && open <= max; i = text.indexOf(ch, i + 1)) open++;
  }
  if (open <= max) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/**
 * Validates one parsed JSON value as a protocol event (v2, which every v1 line is).
 * @returns the event, or the reason it is not one.
 */
export function validateEvent(value: unknown): { ok: true; event: KvEvent } | { ok: false; reason: InvalidReason } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, reason: { kind: 'not_object' } };
  }
  const type = (value as { type?: unknown }).type;
  const validate = typeof type === 'string' ? compiled().get(type) : undefined;
  if (!validate) {
    return { ok: false, reason: { kind: 'unknown_type', type: String(type) } };
  }
  if (validate(value)) return { ok: true, event: value as KvEvent };
  const err = validate.errors?.[0];
  const why = err?.instancePath === '/capacity_blocks' && err.keyword === 'maximum' ? ` (${(value as { capacity_blocks?: unknown }).capacity_blocks}): no engine allocates a pool of more blocks` : '';
  return {
    ok: false,
    reason: {
      kind: 'schema',
      type: type as string,
      path: err?.instancePath || '/',
      message: err ? `${err.instancePath || '/'} ${err.message ?? 'is invalid'}${why}` : 'is invalid',
    },
  };
}

/** The JSON Schema of one event type, as events.schema.json writes it (`$ref`s point into `SCHEMA_DEFS`). */
export function schemaOf(type: EventType): Schema {
  return SCHEMAS[type];
}

/** The shared definitions the event schemas `$ref`. */
export const SCHEMA_DEFS = schemaDoc.$defs as unknown as Record<string, Schema>;
