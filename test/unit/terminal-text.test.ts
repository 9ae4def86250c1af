/**
 * What the CLI prints is made terminal-safe in one place: remote text (a host's errors, a log's
 * strings) can carry escape sequences that forge lines, erase output or retitle the terminal.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { terminalSafe } from '../../src/cli/terminal';

describe('terminalSafe', () => {
  it('writes every control character, C1 and bidi override as a visible escape; keeps tabs, newlines and text', () => {
    const forged = 'boom\x1b]0;pwned\x07\r\x1b[2K\x1b[32mvalid: every protocol v1 rule holds\x1b[0m\x9b2J\u202etxt.exe';
    const safe = terminalSafe(forged);
    expect(safe).toBe('boom\\u001b]0;pwned\\u0007\\u000d\\u001b[2K\\u001b[32mvalid: every protocol v1 rule holds\\u001b[0m\\u009b2J\\u202etxt.exe');
    // eslint-disable-next-line no-control-regex
    expect(safe).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    expect(terminalSafe('a\tb\nµs → 字')).toBe('a\tb\nµs → 字');
  });

  it('leaves JSON output valid and equal to what was printed', () => {
    const value = { msg: 'x\x1b[2J\x9b\u202e\x7fy', n: 1 };
    expect(JSON.parse(terminalSafe(JSON.stringify(value)))).toEqual(value);
  });

  it('is the only way src/cli writes to stdout or stderr', () => {
    const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : [join(dir, d.name)]));
    const raw = files('src/cli').filter((f) => f !== join('src/cli', 'terminal.ts') && /process\.std(out|err)\.write|console\.(log|error|warn|info)/.test(readFileSync(f, 'utf8')));
    expect(raw).toEqual([]);
  });
});
