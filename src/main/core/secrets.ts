/**
 * Passwords and key passphrases. They live in memory for the session; "remember" writes them only
 * encrypted by the OS keychain (Electron safeStorage: Keychain on macOS, DPAPI on Windows, kwallet or
 * libsecret on Linux), and never as plaintext: with no keychain, remember is refused and the secret
 * stays in memory. Core stays framework-free: the keychain arrives as a SafeStorageLike adapter.
 */
import { readFile, unlink } from 'node:fs/promises';
import { writeFileAtomic } from './settings';

/** The part of Electron's `safeStorage` this store uses (the Electron object satisfies it). */
export interface SafeStorageLike {
  isEncryptionAvailable(): boolean;
  encryptString(plainText: string): Buffer;
  decryptString(encrypted: Buffer): string;
}

/** What a set() did about remembering. */
export interface RememberOutcome {
  remembered: boolean;
  /** Why it was not remembered, when asked to be. */
  reason: string | null;
}

interface SecretsFile {
  version: 1;
  /** key → base64 of the keychain-encrypted bytes. */
  entries: Record<string, string>;
}

/** Any text of 1..1024 characters without control characters (key file paths may be non-ASCII). */
function validKey(key: string): boolean {
  if (typeof key !== 'string' || key.length === 0 || key.length > 1024) return false;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

/** Secret keys name what they unlock: `passphrase:<key file>` or `password:<user>@<host>`. */
export function secretKey(kind: 'passphrase' | 'password', what: string): string {
  return `${kind}:${what}`;
}

export class SecretStore {
  private readonly session = new Map<string, string>();
  private remembered: Record<string, string> | null = null;
  /** Problems met reading the remembered file (undecryptable entries dropped, a bad file). */
  readonly warnings: string[] = [];

  constructor(
    /** secrets.json in the user data folder, or null: nothing is ever remembered. */
    private readonly file: string | null,
    private readonly keychain: SafeStorageLike | null,
  ) {}

  /** Whether remember can work here, and why not when it can't. */
  rememberAvailability(): { available: boolean; reason: string | null } {
    if (!this.keychain) return { available: false, reason: 'no OS keychain here (kvscope serve and the CLI keep secrets for the session only)' };
    if (!this.file) return { available: false, reason: 'this session has no user data folder to remember secrets in' };
    let ok = false;
    try {
      ok = this.keychain.isEncryptionAvailable();
    } catch {
      ok = false;
    }
    return ok ? { available: true, reason: null } : { available: false, reason: 'the OS keychain is not available, so secrets are kept for this session only' };
  }

  private async loadRemembered(): Promise<Record<string, string>> {
    if (this.remembered) return this.remembered;
    this.remembered = {};
    if (!this.file) return this.remembered;
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch {
      return this.remembered;
    }
    try {
      const parsed = JSON.parse(text) as SecretsFile;
      if (parsed?.version === 1 && parsed.entries && typeof parsed.entries === 'object') {
        for (const [k, v] of Object.entries(parsed.entries)) if (validKey(k) && typeof v === 'string') this.remembered[k] = v;
      } else {
        this.warnings.push('secrets.json has an unknown shape; remembered secrets ignored');
      }
    } catch {
      this.warnings.push('secrets.json is not valid JSON; remembered secrets ignored');
    }
    return this.remembered;
  }

  /** The secret for `key`: this session's first, then a remembered one (decrypted on demand). */
  async get(key: string): Promise<string | null> {
    const mem = this.session.get(key);
    if (mem !== undefined) return mem;
    const enc = (await this.loadRemembered())[key];
    if (enc === undefined || !this.rememberAvailability().available) return null;
    try {
      const plain = this.keychain!.decryptString(Buffer.from(enc, 'base64'));
      this.session.set(key, plain);
      return plain;
    } catch (e) {
      // A keychain reset or another user's file: drop the entry rather than fail every connect.
      this.warnings.push(`a remembered secret could not be decrypted (${(e as Error).message}); it was forgotten`);
      await this.forget(key);
      return null;
    }
  }

  /**
   * Keeps `secret` for the session; with `remember`, also writes it keychain-encrypted. Refuses to
   * remember (and says why) where the keychain is unavailable: plaintext never reaches the disk.
   */
  async set(key: string, secret: string, options: { remember?: boolean } = {}): Promise<RememberOutcome> {
    if (!validKey(key)) throw new Error('secret key must be 1..1024 characters without control characters');
    this.session.set(key, secret);
    if (!options.remember) return { remembered: false, reason: null };
    const availability = this.rememberAvailability();
    if (!availability.available) return { remembered: false, reason: availability.reason };
    const encrypted = this.keychain!.encryptString(secret);
    if (Buffer.from(encrypted).includes(Buffer.from(secret, 'utf8')) && secret.length > 0) {
      // Never trust an adapter that hands back the plaintext inside its output.
      return { remembered: false, reason: 'the keychain returned unencrypted bytes; not remembered' };
    }
    const entries = { ...(await this.loadRemembered()), [key]: Buffer.from(encrypted).toString('base64') };
    await this.writeRemembered(entries);
    return { remembered: true, reason: null };
  }

  async forget(key: string): Promise<void> {
    this.session.delete(key);
    const entries = { ...(await this.loadRemembered()) };
    if (key in entries) {
      delete entries[key];
      await this.writeRemembered(entries);
    }
  }

  /** Forgets everything, in memory and on disk; returns how many distinct secrets were dropped. */
  async forgetAll(): Promise<number> {
    const keys = new Set([...this.session.keys(), ...Object.keys(await this.loadRemembered())]);
    this.session.clear();
    this.remembered = {};
    if (this.file) await unlink(this.file).catch(() => undefined);
    return keys.size;
  }

  /** How many secrets are remembered on disk. */
  async rememberedCount(): Promise<number> {
    return Object.keys(await this.loadRemembered()).length;
  }

  private async writeRemembered(entries: Record<string, string>): Promise<void> {
    this.remembered = entries;
    if (!this.file) return;
    const body: SecretsFile = { version: 1, entries };
    // 0600: the encrypted blobs are only useful with this user's keychain, but nobody else needs them.
    await writeFileAtomic(this.file, JSON.stringify(body, null, 2) + '\n', { mode: 0o600 });
  }
}
