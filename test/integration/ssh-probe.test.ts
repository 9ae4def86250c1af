/**
 * probe.py's nvidia-smi parsing, fed the outputs recorded on the project's H100
 * (resources/agent/tests/fixtures/nvidia-smi, see its README) through an `nvidia-smi` on PATH that
 * replays them, plus probe.py run the way a host without the agent runs it: `python3 - < probe.py`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HostProbe } from '../../src/shared/api';

const FIX = resolve('resources/agent/tests/fixtures/nvidia-smi');
const PROBE = resolve('resources/agent/kvscope_agent/probe.py');

function probeWithReplayedSmi(): HostProbe {
  const bin = mkdtempSync(join(tmpdir(), 'kvscope-fake-smi-'));
  // Replays recorded answers by query; the free-memory query (not recorded) is derived from the
  // banner's "0MiB / 81559MiB" line of the same recording.
  writeFileSync(
    join(bin, 'nvidia-smi'),
    [
      '#!/bin/sh',
      'case "$1" in',
      `  --query-gpu=index,name,uuid,memory.total,pcie.link.gen.max,pcie.link.width.max,driver_version,pci.bus_id) cat ${FIX}/h100-query-gpu-probe-fields.csv ;;`,
      `  --query-gpu=index,c2c.mode) cat ${FIX}/h100-query-gpu-c2c.csv ;;`,
      `  --query-gpu=index,memory.free) echo "0, 81559" ;;`,
      `  "") cat ${FIX}/h100-banner.txt ;;`,
      '  *) echo "unexpected query: $*" >&2; exit 2 ;;',
      'esac',
    ].join('\n') + '\n',
    { mode: 0o755 },
  );
  const r = spawnSync('/usr/bin/python3', ['-', tmpdir()], { input: readFileSync(PROBE), env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as HostProbe;
}

describe('probe.py', () => {
  it('reads the recorded H100: name, memory, PCIe Gen5 x16, no C2C, driver and CUDA', () => {
    const p = probeWithReplayedSmi();
    expect(p.gpus).toEqual([
      { index: 0, name: 'NVIDIA H100 80GB HBM3', uuid: 'GPU-<uuid>', memory_total_bytes: 81559 * 2 ** 20, memory_free_bytes: 81559 * 2 ** 20, pcie_gen: 5, pcie_width: 16, c2c: false },
    ]);
    expect(p.driver_version).toBe('580.159.04');
    expect(p.cuda_version).toBe('13.0');
    expect(p.notes).toEqual([]);
  });

  it('without nvidia-smi, says so and still reports Python, torch, disk and RAM', () => {
    const r = spawnSync('/usr/bin/python3', ['-'], { input: readFileSync(PROBE), env: { ...process.env, PATH: '/usr/bin:/bin' }, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const p = JSON.parse(r.stdout) as HostProbe;
    expect(p.gpus).toEqual([]);
    expect(p.notes.join(' ')).toMatch(/nvidia-smi not found/);
    expect(p.python?.executable).toBe('/usr/bin/python3');
    expect(p.torch?.cuda_available).toBe(false);
    expect(p.disk_free_bytes).toBeGreaterThan(0);
    expect(p.ram_total_bytes).toBeGreaterThan(p.ram_available_bytes ?? Infinity);
  });
});
