import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { SecretStore, secretKey, type SafeStorageLike } from '../../src/main/core/secrets';

/**
 * Stands in for Electron's safeStorage: real AES-256-GCM with a key that lives only in this object
 * (as the OS keychain's key lives only in the keychain).
 */
function fakeKeychain(available = true): SafeStorageLike & { calls: number } {
  const key = randomBytes(32);
  return {
    calls: 0,
    isEncryptionAvailable: () => available,
    encryptString(plain: string) {
      this.calls++;
      const iv = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', key, iv);
      const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
      return Buffer.concat([iv, c.getAuthTag(), body]);
    },
    decryptString(enc: Buffer) {
      const d = createDecipheriv('aes-256-gcm', key, enc.subarray(0, 12));
      d.setAuthTag(enc.subarray(12, 28));
      return Buffer.concat([d.update(enc.subarray(28)), d.final()]).toString('utf8');
    },
  };
}

const SECRET = 'hunter2-passphrase-ÿ-7f3a';

/** Every byte under `dir`, for "the plaintext is nowhere on disk" checks. */
function allBytes(dir: string): Buffer {
  return Buffer.concat(readdirSync(dir).map((n) => readFileSync(join(dir, n))));
}

function expectNoPlaintext(dir: string, secret: string): void {
  const bytes = allBytes(dir);
  for (const form of [Buffer.from(secret, 'utf8'), Buffer.from(Buffer.from(secret).toString('base64')), Buffer.from(Buffer.from(secret).toString('hex')), Buffer.from(JSON.stringify(secret))]) {
    expect(bytes.includes(form)).toBe(false);
  }
}

describe('secrets', () => {
  it('keeps secrets in memory for the session and writes nothing unless asked to remember', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
    const store = new SecretStore(join(d, 'secrets.json'), fakeKeychain());
    const out = await store.set(secretKey('passphrase', '/home/u/.ssh/id_ed25519'), SECRET);
    expect(out).toEqual({ remembered: false, reason: null });
    expect(await store.get(secretKey('passphrase', '/home/u/.ssh/id_ed25519'))).toBe(SECRET);
    expect(readdirSync(d)).toEqual([]);
    // A new session (a new store) does not know it.
    expect(await new SecretStore(join(d, 'secrets.json'), fakeKeychain()).get(secretKey('passphrase', '/home/u/.ssh/id_ed25519'))).toBeNull();
  });

  it('remember writes only keychain-encrypted bytes (0600), and a new session reads them back', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
    const keychain = fakeKeychain();
    const store = new SecretStore(join(d, 'secrets.json'), keychain);
    const k = secretKey('password', 'alice@gpu-box');
    expect(await store.set(k, SECRET, { remember: true })).toEqual({ remembered: true, reason: null });
    expect(keychain.calls).toBe(1);
    expect(readdirSync(d)).toEqual(['secrets.json']);
    expectNoPlaintext(d, SECRET);
    if (process.platform !== 'win32') expect(statSync(join(d, 'secrets.json')).mode & 0o777).toBe(0o600);
    const later = new SecretStore(join(d, 'secrets.json'), keychain);
    expect(await later.get(k)).toBe(SECRET);
    expect(await later.rememberedCount()).toBe(1);
  });

  it('with no keychain, remember is refused with a reason and plaintext never reaches the disk', async () => {
    for (const keychain of [fakeKeychain(false), null]) {
      const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
      const store = new SecretStore(join(d, 'secrets.json'), keychain);
      const out = await store.set('password:bob@h', SECRET, { remember: true });
      expect(out.remembered).toBe(false);
      expect(out.reason).toMatch(/keychain/);
      expect(await store.get('password:bob@h')).toBe(SECRET);
      expect(readdirSync(d)).toEqual([]);
      expect(store.rememberAvailability().available).toBe(false);
    }
  });

  it('refuses an adapter that returns the plaintext', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
    const leaky: SafeStorageLike = {
      isEncryptionAvailable: () => true,
      encryptString: (s) => Buffer.from(`v10${s}`),
      decryptString: (b) => b.toString().slice(3),
    };
    const out = await new SecretStore(join(d, 'secrets.json'), leaky).set('password:x@y', SECRET, { remember: true });
    expect(out.remembered).toBe(false);
    expect(existsSync(join(d, 'secrets.json'))).toBe(false);
  });

  it('an entry the keychain can no longer decrypt is forgotten with a warning, not an error', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
    await new SecretStore(join(d, 'secrets.json'), fakeKeychain()).set('password:a@b', SECRET, { remember: true });
    const other = new SecretStore(join(d, 'secrets.json'), fakeKeychain()); // a different key: a reset keychain
    expect(await other.get('password:a@b')).toBeNull();
    expect(other.warnings.join(' ')).toMatch(/could not be decrypted/);
    expect(await other.rememberedCount()).toBe(0);
  });

  it('forgetAll clears memory and the file', async () => {
    const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
    const store = new SecretStore(join(d, 'secrets.json'), fakeKeychain());
    await store.set('password:a@b', 'one', { remember: true });
    await store.set('passphrase:/k', 'two');
    expect(await store.forgetAll()).toBe(2);
    expect(await store.get('password:a@b')).toBeNull();
    expect(await store.get('passphrase:/k')).toBeNull();
    expect(readdirSync(d)).toEqual([]);
  });
});

describe('SSH prompts keep their answers in the secret store', () => {
  it('asks once per session, remembers only when told (encrypted), and asks again after a wrong one', async () => {
    const { PromptBroker } = await import('../../src/main/core/host-handlers');
    const d = mkdtempSync(join(tmpdir(), 'kvscope-secrets-'));
    const store = new SecretStore(join(d, 'secrets.json'), fakeKeychain());
    const pushed: Array<{ id: string; type: string }> = [];
    const broker = new PromptBroker((m) => m.kind === 'prompt' && pushed.push(m.prompt), 10_000, store);
    const prompts = broker.prompts();
    const q = { host: 'gpu-box', keyFile: '/home/ü/.ssh/id_ed25519', attempt: 1 };

    const first = prompts.passphrase(q);
    await vi.waitFor(() => expect(pushed).toHaveLength(1));
    broker.answer(pushed[0]!.id, 'secret', SECRET, true);
    expect(await first).toBe(SECRET);
    expectNoPlaintext(d, SECRET);
    expect(await store.rememberedCount()).toBe(1);

    // The next connection this session: no question.
    expect(await prompts.passphrase(q)).toBe(SECRET);
    expect(pushed).toHaveLength(1);

    // It was wrong (attempt 2): forgotten, and the user is asked.
    const retry = prompts.passphrase({ ...q, attempt: 2 });
    await vi.waitFor(() => expect(pushed).toHaveLength(2));
    expect(await store.rememberedCount()).toBe(0);
    broker.answer(pushed[1]!.id, 'secret', 'right-one');
    expect(await retry).toBe('right-one');
    expect(await store.rememberedCount()).toBe(0); // not asked to remember this time
    expect(await prompts.passphrase(q)).toBe('right-one');

    // Passwords alike, keyed by user@host.
    const pw = prompts.password({ host: 'h', user: 'alice', attempt: 1 });
    await vi.waitFor(() => expect(pushed).toHaveLength(3));
    broker.answer(pushed[2]!.id, 'secret', 'pw1');
    expect(await pw).toBe('pw1');
    expect(await store.get('password:alice@h')).toBe('pw1');
  });
});
