/** The app's preset sizes are the agent's: every preset's KV bytes a token and weight bytes, as `kvscope_agent presets --json` prints them. */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { kvBytesPerToken, MODEL_PRESETS, PRESET_NAMES, weightBytesGpu } from '../../src/shared/model-presets';

describe('model presets', () => {
  const agent = JSON.parse(execFileSync('python3', ['-m', 'kvscope_agent', 'presets', '--json'], { cwd: 'resources/agent', encoding: 'utf8', env: { ...process.env, PYTHONPATH: '.' } })) as Array<{ name: string; kv_bytes_per_token_gpu: number; weight_bytes_gpu: number; layers: number }>;
  it('lists the agent\'s presets, in its order', () => {
    expect(PRESET_NAMES).toEqual(agent.map((p) => p.name));
  });
  for (const p of agent) {
    it(`${p.name}: KV bytes a token and weight bytes on a GPU as the agent computes them; fp32 KV on the CPU`, () => {
      const m = MODEL_PRESETS[p.name]!;
      expect(kvBytesPerToken(m, 'cuda')).toBe(p.kv_bytes_per_token_gpu);
      expect(weightBytesGpu(m)).toBe(p.weight_bytes_gpu);
      // On the CPU the engine computes in fp32: twice bf16's KV (FP8 KV stays one byte).
      expect(kvBytesPerToken(m, 'cpu')).toBe(m.kv_dtype === 'fp8' ? p.kv_bytes_per_token_gpu : 2 * p.kv_bytes_per_token_gpu);
    });
  }
});
