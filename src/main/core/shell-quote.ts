/**
 * The ONE way anything reaches a remote (or local) shell command line.
 *
 * Every argument is wrapped in POSIX single quotes; a single quote inside becomes `'\''` (close,
 * escaped quote, reopen). Inside single quotes a POSIX shell gives no character a special meaning
 * (POSIX.1-2017 XCU 2.2.2), so `;`, `$( )`, backticks, `"`, newlines, globs and `--` stay literal
 * bytes of one word. NUL cannot be passed through argv at all, so it is refused rather than
 * silently truncated. Quoting stops the shell, not the program: an option value that itself looks
 * like an option (`--out=/elsewhere`) must also be fused to its option (`--model=<value>`, one
 * word) by the caller, as runs/launch.ts's agentRunArgs does, so argparse can only read it as a value.
 */
import { CodedError } from '../../shared/result';

/** Quotes one argument for a POSIX shell (sh, dash, bash, zsh in sh mode). */
export function shellQuote(arg: string): string {
  if (typeof arg !== 'string') throw new CodedError('invalid_argument', `shell argument is not a string: ${String(arg)}`);
  if (arg.includes('\0')) throw new CodedError('invalid_argument', 'a command argument cannot contain a NUL byte');
  // Plain words are left bare so logs stay readable; the set is deliberately tiny. `=` is not in
  // it: a bare `NAME=value` word before a command is an assignment (POSIX XCU 2.10.2 rule 7), so a
  // python path of `X=1` would turn the next word into the command; quoted, it never is one.
  if (arg.length > 0 && /^[A-Za-z0-9_@%+:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Joins argv into one shell command line, each word quoted by `shellQuote`. */
export function shellCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/**
 * A path under the remote user's home written as `"$HOME"/rest`: the home part is expanded by the
 * shell, the rest is quoted. Used because `~` does not expand inside quotes.
 */
export function homePath(rel: string): string {
  if (rel.startsWith('/')) return shellQuote(rel);
  return `"$HOME"/${shellQuote(rel)}`;
}
