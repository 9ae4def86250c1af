/**
 * known_hosts, read and written the way OpenSSH does (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"):
 * plain and hashed (`|1|salt|HMAC-SHA1(salt, name)`) host fields, comma-separated patterns with
 * `*`/`?` wildcards and `!` negation, `[host]:port` for ports other than 22, and the `@revoked`
 * marker. `@cert-authority` lines are skipped (certificates are not supported) rather than misread
 * as plain keys.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname } from 'node:path';

export interface KnownHostLine {
  file: string;
  line: number;
  marker: 'revoked' | 'cert-authority' | null;
  hosts: string;
  keyType: string;
  key: Buffer;
}

export type HostKeyVerdict =
  | { kind: 'trusted'; file: string; line: number }
  | { kind: 'unknown'; otherTypes: string[] }
  | { kind: 'changed'; knownFingerprint: string; knownKeyType: string; file: string; line: number }
  | { kind: 'revoked'; file: string; line: number };

/**
 * The host part of a known_hosts name, canonicalised as OpenSSH does before it looks a key up or
 * records one (openssh-portable at 0ef0f5a, 2026-08-21):
 *  - ssh.c main(): "Don't lowercase addresses, they will be explicitly canonicalised":
 *    `if ((was_addr = is_addr(host)) == 0) lowercase(host);` (misc.c lowercase() is ASCII tolower);
 *  - an address goes through resolve_canonicalize() → resolve_addr(): getaddrinfo(AI_NUMERICHOST)
 *    then getnameinfo(NI_NUMERICHOST), which writes an IPv6 address in its compressed lowercase
 *    form (`0:0:0:0:0:0:0:1` → `::1`); a scoped address (`fe80::1%eth0`) is left as written.
 * So `HostName GPU-Node1.Example` is filed, hashed or plain, as `gpu-node1.example`; hashing the
 * name as written would miss OpenSSH's own entry and take a CHANGED key for an unknown one.
 */
export function canonicalHost(host: string): string {
  const family = isIP(host);
  if (family === 6) {
    try {
      return new URL(`http://[${host}]/`).hostname.slice(1, -1);
    } catch {
      return host;
    }
  }
  if (family === 4 || host.includes('%') || host.includes(':')) return host;
  return asciiLower(host);
}

/** ASCII-only lowercasing, as C's tolower() in OpenSSH (not Unicode case folding). */
function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

/**
 * The name a host's key is filed under: the canonical host on port 22, else `[host]:port`
 * (sshconnect.c get_hostfile_hostname_ipaddr() → misc.c put_host_port()).
 */
export function knownHostsName(host: string, port: number): string {
  const h = canonicalHost(host);
  return port === 22 || port === 0 ? h : `[${h}]:${port}`;
}

/** "SHA256:<base64 without padding>", exactly as `ssh-keygen -lf` prints it. */
export function fingerprintSha256(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '');
}

/** The key type named inside an SSH public key blob (its first string). */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown';
  const n = key.readUInt32BE(0);
  return key.subarray(4, 4 + n).toString('latin1');
}

function wildcardMatch(pattern: string, name: string): boolean {
  // match.c match_pattern(): `*` any run, `?` one character, every other byte literal.
  const re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 's');
  return re.test(name);
}

/**
 * Does a known_hosts host field name this host? As hostfile.c match_maybe_hashed(): a hashed
 * field (`|1|salt|hash`) is HMAC-SHA1(salt, name) of the name as given, which is why `name` must
 * already be canonical (knownHostsName); any other field is a pattern list matched by
 * match.c match_hostname(), which lowercases the name and match_pattern_list(..., dolower=1),
 * which lowercases each pattern: `!` negates, and a negated match wins over every other.
 */
export function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (!salt || !hash) return false;
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return mac === hash;
  }
  const host = asciiLower(name);
  let matched = false;
  for (const raw of field.split(',')) {
    const negated = raw.startsWith('!');
    const pat = asciiLower(negated ? raw.slice(1) : raw);
    // match_pattern_list(): a subpattern of 1023 characters or more fails the whole list.
    if (pat.length >= 1023) return false;
    if (wildcardMatch(pat, host)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** Parses known_hosts text; malformed lines are skipped, as ssh(1) does. */
export function parseKnownHosts(text: string, file: string): KnownHostLine[] {
  const out: KnownHostLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const s = lines[i]!.trim();
    if (!s || s.startsWith('#')) continue;
    const parts = s.split(/\s+/);
    let marker: KnownHostLine['marker'] = null;
    if (parts[0] === '@revoked') marker = 'revoked';
    else if (parts[0] === '@cert-authority') marker = 'cert-authority';
    else if (parts[0]!.startsWith('@')) continue;
    if (marker) parts.shift();
    const [hosts, keyType, b64] = parts;
    if (!hosts || !keyType || !b64) continue;
    const key = Buffer.from(b64, 'base64');
    if (key.length === 0) continue;
    out.push({ file, line: i + 1, marker, hosts, keyType, key });
  }
  return out;
}

/**
 * The known_hosts files for one connection: the user file(s) (written to) and the global ones
 * (read only), as UserKnownHostsFile / GlobalKnownHostsFile in ssh_config.
 */
export class KnownHosts {
  constructor(
    readonly userFiles: string[],
    readonly globalFiles: string[] = ['/etc/ssh/ssh_known_hosts'],
    /** HashKnownHosts: record new entries hashed. */
    readonly hashNew = false,
  ) {}

  async lines(): Promise<KnownHostLine[]> {
    const all: KnownHostLine[] = [];
    for (const f of [...this.userFiles, ...this.globalFiles]) {
      let text: string;
      try {
        text = await readFile(f, 'utf8');
      } catch {
        continue; // a missing file is an empty one (ssh(1) behaviour)
      }
      all.push(...parseKnownHosts(text, f));
    }
    return all;
  }

  /** Checks a server's host key (SSH wire blob) for host:port. */
  async verify(host: string, port: number, key: Buffer): Promise<HostKeyVerdict> {
    const name = knownHostsName(host, port);
    const type = keyTypeOf(key);
    const lines = await this.lines();
    // @revoked is checked first and for any host field that names this host (sshkey_check_revoked).
    for (const l of lines) {
      if (l.marker === 'revoked' && l.key.equals(key) && (l.hosts === '*' || hostFieldMatches(l.hosts, name))) {
        return { kind: 'revoked', file: l.file, line: l.line };
      }
    }
    const forHost = lines.filter((l) => l.marker === null && hostFieldMatches(l.hosts, name));
    const same = forHost.find((l) => l.key.equals(key));
    if (same) return { kind: 'trusted', file: same.file, line: same.line };
    const sameType = forHost.find((l) => l.keyType === type);
    if (sameType) {
      return { kind: 'changed', knownFingerprint: fingerprintSha256(sameType.key), knownKeyType: sameType.keyType, file: sameType.file, line: sameType.line };
    }
    // Keys of other types only: ssh(1) treats the host as new for this key type (with a warning).
    return { kind: 'unknown', otherTypes: [...new Set(forHost.map((l) => l.keyType))] };
  }

  /** Records an accepted key in the first user file (created with its folder, mode 0600), under the
   * canonical name, hashed when HashKnownHosts is on (hostfile.c format_host_entry() lowercases too). */
  async record(host: string, port: number, key: Buffer): Promise<string> {
    const file = this.userFiles[0];
    if (!file) throw new Error('no known_hosts file to record the host key in');
    const name = knownHostsName(host, port);
    let field = name;
    if (this.hashNew) {
      const salt = randomBytes(20);
      field = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
    }
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    let prefix = '';
    try {
      const existing = await readFile(file, 'utf8');
      if (existing.length > 0 && !existing.endsWith('\n')) prefix = '\n';
    } catch {
      /* new file */
    }
    await appendFile(file, `${prefix}${field} ${keyTypeOf(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
    return file;
  }
}
