/**
 * A hostile GPU host, as far as KV Scope can tell: its "Python" (what the run's `python` names on
 * the host) does what a compromised or broken host would. The file is named `python-hostile-<mode>`
 * (a Python by name, as every interpreter must be); the probe (`<python> - <root>`) and the agent
 * (`<python> -m kvscope_agent run … --out DIR`) misbehave per mode, and the tail (`<python> - <dir>
 * <offset> <poll>`) is the real Python, so what the host wrote comes home as it would.
 *
 * Modes:
 *   deep       the agent writes a 40 KB event line nested 20,000 levels deep mid-run (then ends ok);
 *              the probe answers with a value nested as deep
 *   nonewline  the agent writes a run.start line, then 32 MiB without a newline, and exits
 *   flood      the probe writes 64 MiB of output
 *   escape     the agent exits 1 after writing terminal escape sequences to its stderr
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type HostileMode = 'deep' | 'nonewline' | 'flood' | 'escape';

/** A deep value as one line of JSON text: `depth` nested arrays. */
export const deepJson = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);

const AGENT_PY = String.raw`
import json, os, sys
mode, args = sys.argv[1], sys.argv[2:]
out = [a.split("=", 1)[1] for a in args if a.startswith("--out=")] or [args[args.index("--out") + 1]]
os.makedirs(out[0], exist_ok=True)
f = open(os.path.join(out[0], "events.jsonl"), "w")
def emit(o):
    f.write(json.dumps(o, separators=(",", ":")) + "\n"); f.flush()
emit({"seq": 0, "t": 0, "type": "run.start", "run_id": "hostile", "protocol": 1, "agent_version": "hostile", "engine": {"name": "torch", "version": "x"},
      "config": {"rounds": 1}, "host": {"hostname": "hostile", "gpus": []}, "clock": {"unix_ns_at_t0": 0}})
if mode == "deep":
    emit({"seq": 1, "t": 1, "type": "log", "level": "info", "msg": "before"})
    f.write('{"seq":2,"t":2,"type":"log","level":"info","msg":"deep","extra":' + "[" * 20000 + "]" * 20000 + "}\n"); f.flush()
    emit({"seq": 3, "t": 3, "type": "run.end", "status": "ok", "summary": {"blocks_offloaded": 0, "blocks_onboarded": 0, "blocks_evicted": 0, "bytes_h2d": 0, "bytes_d2h": 0}})
elif mode == "nonewline":
    chunk = "x" * (1 << 20)
    for _ in range(32):
        f.write(chunk); f.flush()
elif mode == "escape":
    sys.stderr.write("\x1b]0;pwned\x07\r\x1b[2K\x1b[32mrun ok: every round finished\x1b[0m\n")
    sys.exit(1)
f.close()
`;

/** Writes `python-hostile-<mode>` into `dir` (on the "host": this machine through sshd); returns its path. */
export function writeHostilePython(dir: string, mode: HostileMode, realPython = '/usr/bin/python3'): string {
  const agent = join(dir, `hostile-agent.py`);
  writeFileSync(agent, AGENT_PY);
  const path = join(dir, `python-hostile-${mode}`);
  writeFileSync(
    path,
    [
      '#!/bin/sh',
      `if [ "$1" = "-m" ]; then exec ${realPython} ${agent} ${mode} "$@"; fi`,
      // The probe: `- <root>` (the tail is `- <dir> <offset> <poll>`).
      `if [ "$1" = "-" ] && [ $# -eq 2 ]; then`,
      mode === 'deep' ? `  exec ${realPython} -c 'print("{\\"hostname\\": \\"hostile\\", \\"notes\\": " + "[" * 20000 + "]" * 20000 + "}")'` : mode === 'flood' ? '  exec head -c 67108864 /dev/zero' : '  :',
      'fi',
      `exec ${realPython} "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(path, 0o755);
  return path;
}
