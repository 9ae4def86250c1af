/**
 * How the window words the what-if calibration (docs/whatif.md, "How it works"): its factors'
 * names, a held factor's note split into what it was held at and why, and its self-check. Pure.
 */
import { formatCount } from '../../shared/format';

const FACTOR_NAMES: Record<string, string> = {
  weights_factor: 'the cost of reading the weights',
  kv_factor: 'the cost of reading K/V',
  prefill_step_ns: "a prefill step's fixed cost",
  prefill_factor: 'the cost per prefill FLOP',
  step_ns: "a step's fixed time (beside its weight reads)",
};

/** A calibration factor in words; an unknown one (a newer agent's) by its own name. */
export function calibrationFactorName(factor: string): string {
  return FACTOR_NAMES[factor] ?? factor;
}

/** The agent's note on a held factor ("held at 5.7 ms, the middle of 0 to 11.4 ms: why…") as (what it was held at, why). */
export function splitHeldNote(note: string): { heldAt: string; why: string } {
  const i = note.indexOf(': ');
  return i < 0 ? { heldAt: note, why: '' } : { heldAt: note.slice(0, i), why: note.slice(i + 2) };
}

/** A relative error as a signed percentage with one decimal ("+0.2%", "-1.4%"); "–" where unknown. */
export function signedPercent(v: number | null): string {
  return v === null ? '–' : `${v >= 0 ? '+' : ''}${(v * 100).toFixed(1)}%`;
}

/** The calibration replayed on its source runs' own card: "users 4: E2E -0.6%, TTFT -2.1%; users 8: …". */
export function calibrationCheckText(checks: ReadonlyArray<{ users: number; e2eError: number | null; ttftError: number | null }>): string {
  return checks.map((c) => `users ${formatCount(c.users)}: E2E ${signedPercent(c.e2eError)}, TTFT ${signedPercent(c.ttftError)}`).join('; ');
}
