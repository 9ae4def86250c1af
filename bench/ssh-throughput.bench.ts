/**
 * SSH tail benchmark, over a real sshd on loopback, through the same code the app uses
 * (launchDetached + tailRun: python tail over an exec channel → EventLineDecoder (Ajv-validated)
 * → LocalEventSink → the runs library).
 *
 * 1. Throughput: a 1,000,000-event events.jsonl already on the "host", a finished run (exit file
 *    present); time from starting the tail at byte 0 to the whole file stored locally and checked
 *    byte-identical. Target ≥ 200,000 events/s.
 * 2. Latency: a load generator (a stand-in for the agent that only writes protocol lines at a
 *    steady rate, NOT the agent) appends batches of events every 10 ms for a few seconds; each
 *    event's write time is its `t` on the run clock (anchored by run.start clock.unix_ns_at_t0);
 *    the stored time is when tailRun hands the batch on after writing it to the local file.
 *    Target p95 ≤ 250 ms.
 *
 * Usage: node scripts/run-ts.mjs bench/ssh-throughput.bench.ts [--events N] [--seconds S] [--rate R]
 */
import { cpus, totalmem, tmpdir, release } from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { HostService } from '../src/main/core/hosts';
import { launchDetached, tailRun } from '../src/main/core/runs';
import { RunStore } from '../src/main/core/run-store';
import { keygen, currentUser, startSshd, sshdSkipReason } from '../test/helpers/sshd';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const EVENTS = arg('events', 1_000_000);
const SECONDS = arg('seconds', 5);
const RATE = arg('rate', 2000);

const skip = sshdSkipReason();
if (skip) {
  console.log(`skipped: ${skip}`);
  process.exit(0);
}

/** Protocol v1 lines in the mix of a real run's body (blocks, xfer, req, gpu). */
function line(seq: number, t: number): string {
  switch (seq % 4) {
    case 0:
      return `{"seq":${seq},"t":${t},"type":"blocks","op":"offload","ids":[${seq},${seq + 1}],"user":${seq % 8},"round":3}`;
    case 1:
      return `{"seq":${seq},"t":${t},"type":"xfer","dir":"d2h","bytes":655360,"start":${t - 5000},"end":${t},"src_mem":"device","dst_mem":"pinned","device":0,"stream":7,"source":"cupti"}`;
    case 2:
      return `{"seq":${seq},"t":${t},"type":"req","user":${seq % 8},"round":3,"phase":"scheduled"}`;
    default:
      return `{"seq":${seq},"t":${t},"type":"gpu","index":0,"mem_used_bytes":71000000000,"util_pct":97,"source":"nvidia-smi"}`;
  }
}

function runStart(unixNs: bigint): string {
  return `{"seq":0,"t":0,"type":"run.start","run_id":"bench","protocol":1,"agent_version":"bench","engine":{"name":"torch","version":"bench"},"config":{"users":8,"rounds":10},"host":{"hostname":"bench","gpus":[],"driver_version":null,"cuda_version":null},"clock":{"unix_ns_at_t0":${unixNs}}}`;
}

/** The load generator's program: writes `rate` events/s in 10 ms batches, flushing each. */
const LOAD_GENERATOR = String.raw`
import os, sys, time
out, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t0m = time.monotonic_ns(); t0u = time.time_ns()
f = open(os.path.join(out, "events.jsonl"), "w")
f.write('{"seq":0,"t":0,"type":"run.start","run_id":"bench-latency","protocol":1,"agent_version":"bench","engine":{"name":"torch","version":"bench"},"config":{"users":8,"rounds":10},"host":{"hostname":"bench","gpus":[],"driver_version":null,"cuda_version":null},"clock":{"unix_ns_at_t0":%d}}\n' % t0u)
f.flush()
seq = 1; per = max(1, int(rate / 100)); end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(per):
        t = time.monotonic_ns() - t0m
        f.write('{"seq":%d,"t":%d,"type":"req","user":%d,"round":1,"phase":"scheduled"}\n' % (seq, t, seq % 8)); seq += 1
    f.flush()
    time.sleep(0.01)
t = time.monotonic_ns() - t0m
f.write('{"seq":%d,"t":%d,"type":"run.end","status":"ok","summary":{"e2e_ns":null,"ttft_ns_mean":null,"ttft_ns_p50":null,"ttft_ns_p99":null,"blocks_offloaded":0,"blocks_onboarded":0,"blocks_evicted":0,"bytes_h2d":0,"bytes_d2h":0}}\n' % (seq, t))
f.close()
`;

const dir = mkdtempSync(join(tmpdir(), 'kvscope-sshbench-'));
const key = keygen(join(dir, 'id'));
const sshd = await startSshd({ authorizedKeys: [key.pub], name: 'bench' });
writeFileSync(join(dir, 'ssh_config'), `Host bench\n  HostName 127.0.0.1\n  Port ${sshd.port}\n  User ${currentUser()}\n  IdentityFile ${key.priv}\n  IdentityAgent none\n`, { mode: 0o600 });
writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n`);
const hosts = new HostService({
  dataDir: dir,
  agentSourceDir: 'resources/agent',
  sshConfigFile: join(dir, 'ssh_config'),
  knownHostsFile: join(dir, 'known_hosts'),
  python: '/usr/bin/python3',
  prompts: { unknownHostKey: async () => false, passphrase: async () => null, password: async () => null },
});
const store = new RunStore(join(dir, 'runs'), null);
await store.ensure();

// ---- 1. throughput ----
const remote1 = join(dir, 'remote', 'runs', 'throughput');
mkdirSync(remote1, { recursive: true });
await new Promise<void>((resolve) => {
  const w = createWriteStream(join(remote1, 'events.jsonl'));
  w.write(runStart(BigInt(Date.now()) * 1_000_000n) + '\n');
  for (let s = 1; s < EVENTS - 1; s++) w.write(line(s, s * 1000) + '\n');
  w.write(`{"seq":${EVENTS - 1},"t":${EVENTS * 1000},"type":"run.end","status":"ok","summary":{"e2e_ns":null,"ttft_ns_mean":null,"ttft_ns_p50":null,"ttft_ns_p99":null,"blocks_offloaded":0,"blocks_onboarded":0,"blocks_evicted":0,"bytes_h2d":0,"bytes_d2h":0}}\n`);
  w.end(resolve);
});
writeFileSync(join(remote1, 'exit'), '0\n');
writeFileSync(join(remote1, 'pid'), '1\n');
const remoteBytes = readFileSync(join(remote1, 'events.jsonl'));
await store.writeMeta({ id: 'throughput', name: 'throughput', host: 'bench', status: 'running', createdAt: new Date().toISOString() });
let t0 = performance.now();
const r1 = await tailRun({ store, agentSourceDir: hosts.opts.agentSourceDir, runId: 'throughput', remoteDir: remote1, python: '/usr/bin/python3', connect: () => hosts.connect('bench') });
const secs = (performance.now() - t0) / 1000;
const local1 = readFileSync(join(store.runsDir, 'throughput', 'events.jsonl'));
const identical = local1.equals(remoteBytes);
const rate1 = EVENTS / secs;

// ---- 2. latency ----
const genDir = join(dir, 'load-generator');
mkdirSync(join(genDir, 'kvscope_agent'), { recursive: true });
writeFileSync(join(genDir, 'bench_load_generator.py'), LOAD_GENERATOR);
const remote2 = join(dir, 'remote', 'runs', 'latency');
const exec = await hosts.connect('bench');
await store.writeMeta({ id: 'latency', name: 'latency', host: 'bench', status: 'running', createdAt: new Date().toISOString() });
// launchDetached runs `<python> -m kvscope_agent run <args> --out DIR`; the stand-in python is a
// tiny shell wrapper that runs the load generator instead (so the detach/pid/exit path is real).
const wrapper = join(dir, 'python-load-generator');
writeFileSync(wrapper, `#!/bin/sh\n# stand-in for the agent: argv is -m kvscope_agent run --out DIR\nexec /usr/bin/python3 ${join(genDir, 'bench_load_generator.py')} "$6" ${RATE} ${SECONDS}\n`, { mode: 0o755 });
const latencies: number[] = [];
/** Events written after the tail is up (the first 0.5 s includes starting the tail itself). */
const steady: number[] = [];
let unixAtT0: number | null = null;
const pgid = await launchDetached({ exec, python: wrapper, agentDir: genDir, remoteDir: remote2, agentArgs: [] });
t0 = performance.now();
const r2 = await tailRun({
  store,
  agentSourceDir: hosts.opts.agentSourceDir,
  runId: 'latency',
  remoteDir: remote2,
  python: '/usr/bin/python3',
  initial: exec,
  pgid,
  connect: () => hosts.connect('bench'),
  onEvents: (events) => {
    const now = Date.now() * 1e6;
    for (const e of events) {
      if (e.type === 'run.start') unixAtT0 = e.clock.unix_ns_at_t0;
      else if (unixAtT0 !== null && e.type === 'req') {
        const ms = (now - (unixAtT0 + e.t)) / 1e6;
        latencies.push(ms);
        if (e.t > 0.5e9) steady.push(ms);
      }
    }
  },
});
latencies.sort((a, b) => a - b);
steady.sort((a, b) => a - b);
const pctOf = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;
const pct = (p: number) => pctOf(latencies, p);
await sshd.stop();

const machine = `${cpus()[0]?.model ?? 'cpu'} (${cpus().length} cores), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.versions.node}`;
const report = [
  `# ssh-throughput bench — ${new Date().toISOString()}`,
  ``,
  `machine: ${machine}; sshd: OpenSSH on 127.0.0.1 (loopback), ssh2 client, one connection`,
  ``,
  `| measure | result | target |`,
  `|---|---|---|`,
  `| throughput, remote file → local store (${EVENTS.toLocaleString('en')} events, ${(remoteBytes.length / 2 ** 20).toFixed(1)} MiB) | ${Math.round(rate1).toLocaleString('en')} events/s (${secs.toFixed(2)} s, ${(remoteBytes.length / 2 ** 20 / secs).toFixed(1)} MiB/s), status ${r1.status}, byte-identical: ${identical} | ≥ 200,000 events/s |`,
  `| write → stored latency, ${RATE} events/s for ${SECONDS} s, all ${latencies.length} events (incl. those written while the tail was starting) | p50 ${pct(50).toFixed(1)} ms, p95 ${pct(95).toFixed(1)} ms, p99 ${pct(99).toFixed(1)} ms, max ${latencies[latencies.length - 1]?.toFixed(1)} ms, status ${r2.status} | p95 ≤ 250 ms |`,
  `| the same, steady state (${steady.length} events written after t = 0.5 s) | p50 ${pctOf(steady, 50).toFixed(1)} ms, p95 ${pctOf(steady, 95).toFixed(1)} ms, p99 ${pctOf(steady, 99).toFixed(1)} ms, max ${steady[steady.length - 1]?.toFixed(1)} ms | p95 ≤ 250 ms |`,
  ``,
].join('\n');
process.stdout.write(report + '\n');
if (!identical || r1.status !== 'ok' || r2.status !== 'ok') process.exitCode = 1;
