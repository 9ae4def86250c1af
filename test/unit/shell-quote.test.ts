import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { shellCommand, shellQuote } from '../../src/main/core/shell-quote';

const dir = mkdtempSync(join(tmpdir(), 'kvscope-quote-'));
const canary = join(dir, 'canary');

/** Strings that would run `touch canary` if they ever reached a shell unquoted. */
const HOSTILE: string[] = [
  `; touch ${canary}`,
  `$(touch ${canary})`,
  `\`touch ${canary}\``,
  `' ; touch ${canary} ; '`,
  `" ; touch ${canary} ; "`,
  `x'y"z`,
  `a\ntouch ${canary}\n`,
  `--help`,
  `-- ; touch ${canary}`,
  `--out=$(touch ${canary})`,
  `$HOME`,
  `*`,
  `~root`,
  `a b\tc`,
  `\\'`,
  `'`,
  `''`,
  ``,
  `&& touch ${canary} ||`,
  `| touch ${canary}`,
  `> ${canary}`,
  `$((1+1))`,
  `\${IFS}touch\${IFS}${canary}`,
  `héllo ☃ \u202e`,
];

const shells = ['/bin/sh', '/bin/bash', '/bin/dash'].filter((s) => existsSync(s));

/** Runs printf in a real shell and returns the words it received. */
function wordsSeenBy(shell: string, line: string): string[] {
  const out = execFileSync(shell, ['-c', line], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

describe('shellQuote', () => {
  it.each(shells)('every hostile string reaches %s as exactly one literal word and runs nothing', (shell) => {
    const line = `printf '%s\\0' ${shellCommand(HOSTILE)}`;
    expect(wordsSeenBy(shell, line)).toEqual(HOSTILE);
    expect(existsSync(canary)).toBe(false);
  });

  it('survives being quoted twice (a command inside sh -c, as the detached launcher does)', () => {
    const inner = `printf '%s\\0' ${shellCommand(HOSTILE)}`;
    const outer = `sh -c ${shellQuote(inner)}`;
    expect(wordsSeenBy('/bin/sh', outer)).toEqual(HOSTILE);
    expect(existsSync(canary)).toBe(false);
  });

  it('the canary check itself can fail: an unquoted string does run', () => {
    execFileSync('/bin/sh', ['-c', `echo ${HOSTILE[0]}`]);
    expect(existsSync(canary)).toBe(true);
    execFileSync('rm', ['-f', canary]);
  });

  it('leaves plain words bare and refuses NUL', () => {
    expect(shellQuote('llama-3.1-8b')).toBe('llama-3.1-8b');
    expect(shellQuote('/usr/bin/python3')).toBe('/usr/bin/python3');
    expect(shellQuote('')).toBe("''");
    expect(() => shellQuote('a\0b')).toThrow(/NUL/);
  });
});

describe('shellQuote and assignments', () => {
  it('a NAME=value word is never taken as a variable assignment', () => {
    const line = `${shellCommand(['X=1', 'printf'])} '%s' ok`;
    // Quoted, "X=1" is the command name (not found), so printf never runs.
    expect(() => execFileSync('/bin/sh', ['-c', line], { stdio: 'pipe' })).toThrow();
  });
});
