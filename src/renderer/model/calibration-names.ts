/**
 * The what-if calibration's factors (docs/whatif.md, "How it works", Costs) as the window names
 * them, and the held factor's note split into what it was held at and why. Pure.
 */

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
