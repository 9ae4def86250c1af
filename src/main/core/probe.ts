/**
 * Probe a host in one round trip: the stdlib-only probe program (resources/agent/kvscope_agent/
 * probe.py) is sent as the program text of `<python> - <root>` over a single exec channel, so it
 * works before the agent is deployed and needs nothing on the host but Python.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HostProbe } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { shellCommand } from './shell-quote';
import type { HostExec } from './ssh/host-exec';

export async function probeWith(exec: HostExec, opts: { alias: string; python: string; agentSourceDir: string; root: string }): Promise<HostProbe> {
  const script = await readFile(join(opts.agentSourceDir, 'kvscope_agent', 'probe.py'));
  const t0 = Date.now();
  const r = await exec.exec(shellCommand([opts.python, '-', opts.root]), script);
  const text = r.stdout.toString('utf8').trim();
  if (r.code !== 0 || !text) {
    const why = r.code === 127 ? `${opts.python} was not found on ${opts.alias} (set the host's Python with --python)` : `exit ${r.code}: ${r.stderr.toString().trim().slice(-500)}`;
    throw new CodedError('ssh_error', `probe of ${opts.alias} failed: ${why}`, { python: opts.python });
  }
  let raw: Omit<HostProbe, 'alias'> & { hostname: string | null };
  try {
    raw = JSON.parse(text.split('\n').pop()!) as typeof raw;
  } catch {
    throw new CodedError('ssh_error', `probe of ${opts.alias}: unreadable answer: ${text.slice(0, 200)}`);
  }
  return { ...raw, alias: opts.alias, elapsed_ms: Date.now() - t0 };
}
