/**
 * The New run form's starting values from Settings (the form keeps text fields, as typed).
 * Pure, so the mapping is tested on its own (test/unit/settings-form.test.ts).
 */
import type { Settings } from '../../../shared/api';
import type { RunForm } from '../../model/run-form';
import { bytesText } from '../../../shared/workload-options';

export function runFormDefaults(settings: Pick<Settings, 'workload' | 'sampleMs'>): Partial<RunForm> {
  const w = settings.workload;
  return {
    users: w.usersMin === w.usersMax ? String(w.usersMin) : `${w.usersMin}-${w.usersMax}`,
    rounds: String(w.rounds),
    context_tokens: String(w.contextTokens),
    new_tokens: String(w.newTokens),
    output_tokens: String(w.outputTokens),
    gpu_pool: String(w.freeGpuMemoryFraction),
    host_pool: bytesText(w.hostKvBytes),
    sample_ms: String(settings.sampleMs),
  };
}
