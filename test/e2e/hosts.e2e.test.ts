/**
 * The Hosts view against a real OpenSSH server on loopback, through the real core and bridge in real
 * Chromium: an ssh_config alias is listed beside Local; probing it asks about the unknown host key
 * with the server's own SHA256 fingerprint (as `ssh-keygen -l` prints it); accepting records the key
 * in known_hosts and the probe result is shown; an encrypted key asks for its passphrase.
 * HOME is a temp folder for this file's worker, so the user's real ~/.ssh is never read or written.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';
import { currentUser, keygen, sshdSkipReason, startSshd, type TestSshd } from '../helpers/sshd';

const skip = browserSkipReason() ?? sshdSkipReason();

describe.skipIf(skip !== null)(`Hosts view against a real sshd${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let sshd: TestSshd;
  let w: ServedWindow;
  let page: Page;
  let home: string;

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'kvscope-hosts-home-'));
    process.env.HOME = home;
    mkdirSync(join(home, '.ssh'), { mode: 0o700 });
    const plain = keygen(join(home, '.ssh', 'id_plain'));
    const locked = keygen(join(home, '.ssh', 'id_locked'), 'ed25519', 'open sesame');
    sshd = await startSshd({ authorizedKeys: [plain.pub, locked.pub], name: 'hosts-e2e' });
    const host = (alias: string, key: string) => `Host ${alias}\n  HostName 127.0.0.1\n  Port ${sshd.port}\n  User ${currentUser()}\n  IdentityFile ${key}\n  IdentitiesOnly yes\n`;
    writeFileSync(join(home, '.ssh', 'config'), host('testbox', plain.priv) + host('lockedbox', locked.priv), { mode: 0o600 });
    delete process.env.SSH_AUTH_SOCK;
    const runsDir = join(home, 'data', 'runs');
    w = await serveWindow({ runsDir, samplesDir: null, dataDir: join(home, 'data') });
    page = await w.open(null, { width: 1280, height: 800 });
  }, 60_000);

  afterAll(async () => {
    await w?.close();
    await sshd?.stop();
  });

  it('asks about the unknown host key with its fingerprint, records it on accept, and shows the probe', async () => {
    await page.goto(`${w.server.url}#/hosts`);
    await page.waitForSelector('tr[data-host=testbox]');
    expect(await page.locator('tr[data-host=local]').count()).toBe(1);
    await page.click('tr[data-host=testbox] [data-action=probe]');
    await page.waitForSelector('[data-testid=prompt]', { timeout: 30_000 });
    const want = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${join(sshd.dir, 'host_key')}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
    expect(await page.textContent('[data-testid=prompt] .fingerprint')).toBe(want);
    await page.screenshot({ path: join(ARTIFACTS, 'window-hosts-hostkey.png') });
    await page.click('[data-testid=prompt] button:has-text("Accept")');
    await page.waitForSelector('tr[data-host=testbox] [data-testid=probe], tr[data-host=testbox] .error', { timeout: 60_000 });
    expect(await page.locator('tr[data-host=testbox] .error').count()).toBe(0);
    expect(await page.textContent('tr[data-host=testbox] [data-testid=probe]')).toContain('Engines');
    const known = join(home, '.ssh', 'known_hosts');
    expect(existsSync(known) && readFileSync(known, 'utf8')).toContain(sshd.hostKeyLine.split(' ')[1]);
    expect(w.errors).toEqual([]);
  }, 90_000);

  it('asks for the passphrase of an encrypted key and connects with it', async () => {
    await page.click('tr[data-host=lockedbox] [data-action=probe]');
    await page.waitForSelector('[data-testid=prompt] input[type=password]', { timeout: 30_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'window-hosts-passphrase.png') });
    await page.fill('[data-testid=prompt] input[type=password]', 'open sesame');
    await page.click('[data-testid=prompt] button[type=submit]');
    await page.waitForSelector('tr[data-host=lockedbox] [data-testid=probe], tr[data-host=lockedbox] .error', { timeout: 60_000 });
    expect(await page.locator('tr[data-host=lockedbox] .error').count()).toBe(0);
    expect(w.errors).toEqual([]);
  }, 90_000);

  it('adds a host in the app (then listed, probe-able) and removes it; a bad port is refused by name', async () => {
    await page.fill('[data-field=alias]', 'added-box');
    await page.fill('[data-field=hostname]', '127.0.0.1');
    await page.fill('[data-field=port]', '99999');
    await page.click('[data-action=add-host]');
    await page.waitForSelector('.add-host .error');
    expect(await page.textContent('.add-host .error')).toMatch(/port/i);
    await page.fill('[data-field=port]', String(sshd.port));
    await page.click('[data-action=add-host]');
    await page.waitForSelector('tr[data-host=added-box]');
    expect(await page.textContent('tr[data-host=added-box]')).toContain('added here');
    await page.click('tr[data-host=added-box] [data-action=remove-host]');
    await page.waitForSelector('tr[data-host=added-box]', { state: 'detached' });
    expect(w.errors).toEqual([]);
  }, 60_000);
});
