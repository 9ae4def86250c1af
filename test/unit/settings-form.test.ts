import { describe, expect, it } from 'vitest';
import { DEFAULT_SETTINGS } from '../../src/main/core/settings';
import { runFormDefaults } from '../../src/renderer/features/settings/run-form-defaults';
import { DEFAULT_FORM, validateRunForm } from '../../src/renderer/model/run-form';

describe('New run defaults from Settings', () => {
  it('the default settings give exactly the form’s seed defaults', () => {
    const mapped = runFormDefaults(DEFAULT_SETTINGS);
    for (const [k, v] of Object.entries(mapped)) expect([k, v]).toEqual([k, DEFAULT_FORM[k as keyof typeof DEFAULT_FORM]]);
  });

  it('changed settings become form text the form’s own validation accepts', () => {
    const mapped = runFormDefaults({ workload: { ...DEFAULT_SETTINGS.workload, usersMin: 4, usersMax: 4, hostKvBytes: 123456789, rounds: 3 }, sampleMs: 250 });
    expect(mapped).toMatchObject({ users: '4', host_pool: '123456789', rounds: '3', sample_ms: '250' });
    const v = validateRunForm({ ...DEFAULT_FORM, hosts: ['local'], ...mapped });
    expect(v.ok ? [] : v.errors).toEqual([]);
    expect(v.ok && v.run?.workload).toMatchObject({ users: 4, rounds: 3, host_kv_bytes: 123456789, sample_ms: 250 });
  });
});
