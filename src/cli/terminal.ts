/**
 * Everything the CLI prints goes through here. Much of it is remote text: a host's error
 * messages and agent output, strings from an event log (`kvscope validate`), a probe's answer.
 * Written raw to a terminal, an escape sequence in it can forge a line ("valid: every rule
 * holds"), erase or rewrite what was printed (carriage return, cursor moves), or retitle the
 * terminal. So every control character (C0 but tab and newline, DEL, C1) and every bidirectional
 * override is written as a visible `\uXXXX` escape instead: readable, and exactly what JSON would
 * write for it, so `--json` output stays valid JSON that parses to the same text.
 */

// C0 except \t and \n, DEL, C1, and the Unicode bidi embeddings, overrides and isolates.
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every character a terminal would act on written as a `\uXXXX` escape. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Writes to stdout (made terminal-safe). */
export function writeStdout(text: string): void {
  process.stdout.write(terminalSafe(text));
}

/** Writes to stderr (made terminal-safe). */
export function writeStderr(text: string): void {
  process.stderr.write(terminalSafe(text));
}
