/**
 * Probe a host in one round trip: the stdlib-only probe program (resources/agent/kvscope_agent/
 * probe.py) is sent as the program text of `<python> - <root>` over a single exec channel, so it
 * works before the agent is deployed and needs nothing on the host but Python.
 *
 * The answer is the host's to write, so it is read as untrusted: nesting is bounded before it is
 * parsed, and only the HostProbe fields are kept, each checked for its type (strings cut to a
 * length a window can show). Whatever else the host sends never reaches the window or a terminal.
 */
import type { HostProbe, ProbeEngine, ProbeGpu, TorchPython } from '../../shared/api';
import { jsonDeeperThan } from '../../shared/protocol';
import { CodedError } from '../../shared/result';
import { readAgentProgram } from './agent-programs';
import { PYTHON_PATH_RE } from './python-path';
import { shellCommand } from './shell-quote';
import type { HostExec } from './ssh/host-exec';

/** The probe's answer is one JSON line of a few kB; more is not a probe answer. */
export const MAX_PROBE_OUTPUT_BYTES = 1 << 20;

const ENGINE_NAMES: ReadonlyArray<ProbeEngine['name']> = ['torch', 'tensorrt_llm', 'vllm'];

const obj = (v: unknown): Record<string, unknown> | null => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null);
const str = (v: unknown, max = 500): string | null => (typeof v === 'string' ? v.slice(0, max) : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const bool = (v: unknown): boolean | null => (typeof v === 'boolean' ? v : null);
const list = (v: unknown, max = 64): unknown[] => (Array.isArray(v) ? v.slice(0, max) : []);

/** The HostProbe in a probe's answer line, every field type-checked; null when it is not one. */
export function probeFromAnswer(line: string, alias: string, elapsedMs: number): HostProbe | null {
  if (jsonDeeperThan(line, 8)) return null;
  let raw: Record<string, unknown> | null;
  try {
    raw = obj(JSON.parse(line));
  } catch {
    return null;
  }
  if (!raw) return null;
  const py = obj(raw.python);
  const torch = obj(raw.torch);
  const gpus: ProbeGpu[] = list(raw.gpus).flatMap((g) => {
    const o = obj(g);
    if (!o || num(o.index) === null) return [];
    return [{
      index: num(o.index)!,
      name: str(o.name, 200) ?? '?',
      uuid: str(o.uuid, 200),
      memory_total_bytes: num(o.memory_total_bytes),
      memory_free_bytes: num(o.memory_free_bytes),
      pcie_gen: num(o.pcie_gen),
      pcie_width: num(o.pcie_width),
      c2c: bool(o.c2c),
    }];
  });
  const engines: ProbeEngine[] = list(raw.engines, 8).flatMap((e) => {
    const o = obj(e);
    const name = ENGINE_NAMES.find((n) => n === o?.name);
    if (!o || !name) return [];
    return [{ name, available: o.available === true, version: str(o.version, 100), reason: str(o.reason) }];
  });
  // Interpreters that import torch (docs/protocol.md "The host probe's answer"): the window offers
  // them as a run's Python, so only paths that name a Python (python-path.ts) are kept.
  const torchPythons: TorchPython[] = list(raw.torch_pythons, 24).flatMap((t) => {
    const o = obj(t);
    const exe = typeof o?.executable === 'string' && o.executable.length <= 4096 && PYTHON_PATH_RE.test(o.executable) ? o.executable : null;
    if (!o || !exe) return [];
    return [{ executable: exe, version: str(o.version, 50) ?? '?', torch: str(o.torch, 100) ?? '?', cuda_available: o.cuda_available === true }];
  });
  return {
    alias,
    hostname: str(raw.hostname, 253),
    os: str(raw.os, 200),
    python: py && typeof py.executable === 'string' && typeof py.version === 'string' ? { executable: py.executable.slice(0, 4096), version: py.version.slice(0, 50) } : null,
    torch: torch && typeof torch.version === 'string' ? { version: torch.version.slice(0, 100), cuda: str(torch.cuda, 50), cuda_available: torch.cuda_available === true } : null,
    ...(Array.isArray(raw.torch_pythons) ? { torch_pythons: torchPythons } : {}),
    engines,
    gpus,
    driver_version: str(raw.driver_version, 100),
    cuda_version: str(raw.cuda_version, 100),
    disk_free_bytes: num(raw.disk_free_bytes),
    ram_total_bytes: num(raw.ram_total_bytes),
    ram_available_bytes: num(raw.ram_available_bytes),
    notes: list(raw.notes, 32).flatMap((n) => (typeof n === 'string' ? [n.slice(0, 1000)] : [])),
    elapsed_ms: elapsedMs,
  };
}

export async function probeWith(exec: HostExec, opts: { alias: string; python: string; agentSourceDir: string; root: string }): Promise<HostProbe> {
  const script = await readAgentProgram(opts.agentSourceDir, 'probe.py');
  const t0 = Date.now();
  const r = await exec.exec(shellCommand([opts.python, '-', opts.root]), script, { maxOutputBytes: MAX_PROBE_OUTPUT_BYTES });
  const text = r.stdout.toString('utf8').trim();
  if (r.code !== 0 || !text) {
    const why = r.code === 127 ? `${opts.python} was not found on ${opts.alias} (set the host's Python with --python)` : `exit ${r.code}: ${r.stderr.toString().trim().slice(-500)}`;
    throw new CodedError('ssh_error', `probe of ${opts.alias} failed: ${why}`, { python: opts.python });
  }
  const probe = probeFromAnswer(text.split('\n').pop()!, opts.alias, Date.now() - t0);
  if (!probe) throw new CodedError('ssh_error', `probe of ${opts.alias}: unreadable answer: ${JSON.stringify(text.slice(0, 200))}`);
  return probe;
}
