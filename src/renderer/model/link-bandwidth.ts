/**
 * The host↔GPU link a run's GPU sits on, and what its copies achieved against it. PCIe rates are
 * per lane per direction after encoding (gen1/2: 8b/10b; gen3+: 128b/130b), as the PCI-SIG
 * generations define them; NVLink-C2C is 900 GB/s in total, 450 GB/s each way (NVIDIA GH200).
 */
import type { GpuInfo } from '../../shared/protocol';

const PCIE_LANE_BYTES_PER_S: Record<number, number> = { 1: 0.25e9, 2: 0.5e9, 3: 0.985e9, 4: 1.969e9, 5: 3.938e9, 6: 7.563e9 };

export interface LinkInfo {
  name: string;
  /** Per direction, bytes/s; null when the run did not record the link. */
  bytesPerS: number | null;
}

export function linkOf(gpu: GpuInfo | undefined): LinkInfo {
  if (!gpu) return { name: 'unknown (no GPU recorded)', bytesPerS: null };
  if (gpu.c2c) return { name: 'NVLink-C2C', bytesPerS: 450e9 };
  if (gpu.pcie_gen && gpu.pcie_width) {
    const lane = PCIE_LANE_BYTES_PER_S[gpu.pcie_gen];
    return { name: `PCIe Gen${gpu.pcie_gen} ×${gpu.pcie_width}`, bytesPerS: lane ? lane * gpu.pcie_width : null };
  }
  return { name: 'unknown (the run did not record PCIe generation and width)', bytesPerS: null };
}

/** Total length of the union of [start, end) intervals (start-sorted input). */
export function busyTime(start: Float64Array, end: Float64Array, n: number): number {
  let busy = 0;
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < n; i++) {
    const s = start[i]!;
    const e = end[i]!;
    if (s > b) {
      if (b > a) busy += b - a;
      a = s;
      b = e;
    } else if (e > b) b = e;
  }
  if (b > a) busy += b - a;
  return busy;
}
