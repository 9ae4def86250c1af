/**
 * The probe's list of interpreters that import torch reaches the window (New run offers them as the
 * run's Python), read as untrusted as the rest of the answer: only paths that name a Python.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { probeFromAnswer } from '../../src/main/core/probe';

const recorded = JSON.parse(readFileSync('test/fixtures/probes/debian12-cpu-python3-without-torch.json', 'utf8')) as Record<string, unknown>;

describe('the probe answer', () => {
  it('keeps the interpreters that import torch, as this machine\'s probe found them', () => {
    const p = probeFromAnswer(JSON.stringify(recorded), 'local', 1)!;
    expect(p.torch).toBeNull();
    expect(p.torch_pythons).toEqual(recorded.torch_pythons);
    expect(p.torch_pythons![0]!.executable).toBe('/usr/bin/python3');
  });

  it('drops an entry that does not name a Python, and cuts long strings', () => {
    const hostile = { ...recorded, torch_pythons: [{ executable: '/usr/bin/tee', version: '3', torch: '2', cuda_available: true }, { executable: '/opt/venv/bin/python3', version: 'x'.repeat(999), torch: '2.5', cuda_available: 'yes' }, 'python3'] };
    const p = probeFromAnswer(JSON.stringify(hostile), 'gpu1', 1)!;
    expect(p.torch_pythons).toEqual([{ executable: '/opt/venv/bin/python3', version: 'x'.repeat(50), torch: '2.5', cuda_available: false }]);
  });

  it('an older probe without the list leaves it out', () => {
    const { torch_pythons: _, ...older } = recorded;
    expect(probeFromAnswer(JSON.stringify(older), 'local', 1)!).not.toHaveProperty('torch_pythons');
  });
});
