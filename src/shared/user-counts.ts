/**
 * The one reader of a user-count list, for the CLI's `--users` and the New run form's Users field:
 * "4", "2,4,8", a range "2..16" (or "2-16"), a range with a step "2..16:2", or a mix. Counts keep
 * the order given (a sweep runs them in that order: the 70B sweep script puts 16 last), repeats
 * dropped. At most `MAX_USER_COUNTS` counts, each within the users option's bounds.
 */
import { optionOf } from './workload-options';

export const MAX_USER_COUNTS = 256;

/** The counts, or a sentence saying which part is wrong and what is wanted. */
export function parseUserCounts(spec: string): number[] | string {
  const { min = 1, max = Number.MAX_SAFE_INTEGER } = optionOf('users');
  const out = new Set<number>();
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:\s*(?:\.\.|-)\s*(\d+)(?::(\d+))?)?$/.exec(part);
    if (!m) return `“${part}” is not a user count, a list (2,4,8) or a range (2..16, 2..16:2)`;
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    const step = m[3] !== undefined ? Number(m[3]) : 1;
    if (a < min || b < a || step < 1) return `“${part}”: counts start at ${min} and a range goes up (LO..HI[:STEP])`;
    if (b > max) return `“${part}”: at most ${max} users`;
    if ((b - a) / step + out.size >= MAX_USER_COUNTS) return `more than ${MAX_USER_COUNTS} user counts`;
    for (let u = a; u <= b; u += step) out.add(u);
  }
  if (out.size === 0) return 'give at least one user count';
  return [...out];
}
