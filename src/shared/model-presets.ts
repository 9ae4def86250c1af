/**
 * The built-in engine's model presets, read from the agent's own list
 * (resources/agent/kvscope_agent/presets.json, which kvscope_agent/presets.py loads too), and the
 * sizes the agent derives from them: KV bytes a token, a block's bytes, the weights' bytes on a
 * GPU. test/unit/model-presets.test.ts checks these against `kvscope_agent presets --json`.
 */
import presetsDoc from '../../resources/agent/kvscope_agent/presets.json';

export interface ModelShape {
  layers: number;
  hidden: number;
  heads: number;
  kv_heads: number;
  ffn: number;
  vocab: number;
  weight_format: string;
  kv_dtype: string;
}

export const MODEL_PRESETS: Readonly<Record<string, ModelShape>> = presetsDoc.presets;
export const PRESET_NAMES: readonly string[] = Object.keys(MODEL_PRESETS);

/** Where the built-in engine computes: bf16 on a GPU, fp32 on the CPU (the agent's --dtype auto). */
export type ComputeDevice = 'cuda' | 'cpu';

/** Bytes of one KV element: FP8 KV is one byte; else the compute dtype's. */
export function kvElementBytes(m: ModelShape, device: ComputeDevice): number {
  return m.kv_dtype === 'fp8' ? 1 : device === 'cpu' ? 4 : 2;
}

/** K and V of every layer for one token (ModelConfig.kv_bytes_per_token). */
export function kvBytesPerToken(m: ModelShape, device: ComputeDevice): number {
  return m.layers * 2 * m.kv_heads * (m.hidden / m.heads) * kvElementBytes(m, device);
}

/** Parameters (ModelConfig.param_count). */
export function paramCount(m: ModelShape): number {
  const hd = m.hidden / m.heads;
  const perLayer = m.hidden * (m.heads + 2 * m.kv_heads) * hd + m.heads * hd * m.hidden + 3 * m.hidden * m.ffn + 2 * m.hidden;
  return m.layers * perLayer + 2 * m.vocab * m.hidden + m.hidden;
}

/** Weights on a GPU (presets.describe's weight_bytes_gpu): bf16, or FP8 linear layers with bf16 embeddings and norms. */
export function weightBytesGpu(m: ModelShape): number {
  const unquantised = 2 * m.vocab * m.hidden + (2 * m.layers + 1) * m.hidden;
  const linear = paramCount(m) - unquantised;
  return (m.weight_format === 'fp8' ? linear : 2 * linear) + 2 * unquantised;
}
