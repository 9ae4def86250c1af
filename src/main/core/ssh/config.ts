/**
 * ssh_config resolution: "a host in my ~/.ssh/config" → where and how to connect, as ssh(1) would.
 *
 * Parsing and first-match-wins computation come from the `ssh-config` package; this module adds what
 * it leaves to callers: `Include` (expanded in place, relative to ~/.ssh, globs allowed), the file
 * permission rule (a config not owned by the user or writable by others is ignored with a warning,
 * like ssh(1)'s "Bad owner or permissions"), `%` tokens and `~` in paths, ProxyJump hop lists, and
 * the one seconds→milliseconds conversion of ServerAliveInterval.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';
import SSHConfig from 'ssh-config';

export interface ResolvedHost {
  /** What the user typed. */
  alias: string;
  hostname: string;
  port: number;
  user: string;
  identityFiles: string[];
  identitiesOnly: boolean;
  /** ProxyJump hops in connection order, each as written ("user@host:port" or an alias). */
  proxyJump: string[];
  /** ssh2's keepaliveInterval: MILLISECONDS (0 = off). */
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  userKnownHostsFiles: string[];
  hashKnownHosts: boolean;
  /** IdentityAgent, or SSH_AUTH_SOCK; null when there is no agent. */
  identityAgent: string | null;
  connectTimeoutMs: number;
}

export interface SshConfigSource {
  /** The config file (default ~/.ssh/config). */
  file: string;
  /** Problems met while reading (unsafe permissions, unreadable Include, ...). */
  warnings: string[];
  config: SSHConfig;
}

const home = () => process.env.HOME || homedir();

export function defaultSshConfigFile(): string {
  return join(home(), '.ssh', 'config');
}

function expandTilde(p: string): string {
  if (p === '~') return home();
  if (p.startsWith('~/')) return join(home(), p.slice(2));
  return p;
}

/** ssh(1) refuses a config that is writable by others or owned by someone else; we skip it and say why. */
function unsafeReason(file: string): string | null {
  let st;
  try {
    st = statSync(file);
  } catch {
    return null;
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  if (uid !== null && st.uid !== uid && st.uid !== 0) return `${file} is owned by uid ${st.uid}, not you: ignored (ssh(1) "Bad owner or permissions")`;
  if ((st.mode & 0o022) !== 0) return `${file} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): ignored (ssh(1) "Bad owner or permissions")`;
  return null;
}

function globFiles(pattern: string): string[] {
  // OpenSSH uses glob(3); the common case is a `*` in the last component (e.g. config.d/*).
  const dir = dirname(pattern);
  const base = basename(pattern);
  if (!/[*?]/.test(base)) return [pattern];
  const re = new RegExp('^' + base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
  try {
    return readdirSync(dir)
      .filter((n) => re.test(n) && !n.startsWith('.'))
      .sort()
      .map((n) => join(dir, n));
  } catch {
    return [];
  }
}

/**
 * Reads a config file with its Includes spliced in place. An Include inside a Host block applies
 * to that block, as in OpenSSH (the included lines continue the block textually).
 */
function readWithIncludes(file: string, warnings: string[], depth: number, baseDir: string): string {
  if (depth > 16) {
    warnings.push(`${file}: Include nested too deeply (limit 16, as ssh(1)): ignored`);
    return '';
  }
  const unsafe = unsafeReason(file);
  if (unsafe) {
    warnings.push(unsafe);
    return '';
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (depth > 0) warnings.push(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'}): ignored`);
    return '';
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*include\s*[= ]\s*(.+?)\s*$/i.exec(line);
    if (!m) {
      out.push(line);
      continue;
    }
    for (const raw of m[1]!.split(/\s+/)) {
      const unq = raw.replace(/^"(.*)"$/, '$1');
      const p = expandTilde(unq);
      const abs = isAbsolute(p) ? p : join(baseDir, p);
      for (const f of globFiles(abs)) out.push(readWithIncludes(f, warnings, depth + 1, baseDir));
    }
  }
  return out.join('\n');
}

/** Loads an ssh config (missing file = empty config). */
export function loadSshConfig(file: string = defaultSshConfigFile()): SshConfigSource {
  const warnings: string[] = [];
  // Relative Includes in a user config are relative to ~/.ssh (ssh_config(5) "Include").
  const text = readWithIncludes(file, warnings, 0, join(home(), '.ssh'));
  let config: SSHConfig;
  try {
    config = SSHConfig.parse(text);
  } catch (e) {
    warnings.push(`${file}: cannot parse (${(e as Error).message}): ignored`);
    config = SSHConfig.parse('');
  }
  return { file, warnings, config };
}

/** The concrete aliases a config names (Host lines without wildcards or negation). */
export function configAliases(src: SshConfigSource): string[] {
  const names: string[] = [];
  for (const line of src.config) {
    if (line.type !== SSHConfig.DIRECTIVE || !/^host$/i.test(line.param)) continue;
    const vals = Array.isArray(line.value) ? line.value.map((v) => v.val) : String(line.value).split(/\s+/);
    for (const v of vals) if (v && !/[*?!]/.test(v) && !names.includes(v)) names.push(v);
  }
  return names;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Expands the ssh_config(5) TOKENS used in paths: %d %h %p %r %u %n %%. */
function expandTokens(s: string, t: { host: string; port: number; user: string; alias: string }): string {
  return expandTilde(s).replace(/%([%dhprun])/g, (_m, c: string) => {
    switch (c) {
      case '%':
        return '%';
      case 'd':
        return home();
      case 'h':
        return t.host;
      case 'p':
        return String(t.port);
      case 'r':
        return t.user;
      case 'u':
        return userInfo().username;
      case 'n':
        return t.alias;
      default:
        return _m;
    }
  });
}

/**
 * ServerAliveInterval is SECONDS in ssh_config(5); ssh2's keepaliveInterval is MILLISECONDS.
 * This is the one place the two meet. ssh(1) defaults to 0 (off); we keep 15 s so a dead link is
 * noticed by a live tail even when the user set nothing (CountMax 3 → ~45 s, ssh's default count).
 */
export function serverAliveToKeepaliveMs(serverAliveIntervalSeconds: string | undefined): number {
  if (serverAliveIntervalSeconds === undefined) return 15_000;
  const s = Number(serverAliveIntervalSeconds);
  return Number.isFinite(s) && s >= 0 ? Math.round(s * 1000) : 15_000;
}

/** Parses "user@host:port" (a ProxyJump hop or a destination). */
export function parseDestination(d: string): { user?: string; host: string; port?: number } {
  let rest = d.replace(/^ssh:\/\//, '');
  let user: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
  }
  let port: number | undefined;
  const bracket = /^\[(.+)\](?::(\d+))?$/.exec(rest);
  if (bracket) {
    rest = bracket[1]!;
    if (bracket[2]) port = Number(bracket[2]);
  } else {
    const m = /^([^:]+):(\d+)$/.exec(rest);
    if (m) {
      rest = m[1]!;
      port = Number(m[2]);
    }
  }
  return { user, host: rest, port };
}

/** Resolves an alias (or user@host:port) against a config, the way ssh(1) computes options. */
export function resolveHost(src: SshConfigSource, destination: string): ResolvedHost {
  const d = parseDestination(destination);
  // matchExec:false — `Match exec` would run a command from the config; we never do.
  const c = src.config.compute({ Host: d.host, ...(d.user ? { User: d.user } : {}) }, { ignoreCase: true, matchExec: false });
  const get = (k: string) => first(c[k.toLowerCase()]);
  const alias = d.host;
  const hostname = get('HostName') ?? d.host;
  const port = d.port ?? Number(get('Port') ?? 22);
  const user = d.user ?? get('User') ?? userInfo().username;
  const tok = { host: hostname, port, user, alias };
  const idRaw = c['identityfile'];
  const identityFiles = (Array.isArray(idRaw) ? idRaw : idRaw ? [idRaw] : []).map((f) => expandTokens(f, tok));
  const pj = get('ProxyJump');
  const proxyJump = !pj || pj.toLowerCase() === 'none' ? [] : pj.split(',').map((s) => s.trim()).filter(Boolean);
  const ukh = c['userknownhostsfile'];
  const ukhList = (Array.isArray(ukh) ? ukh : ukh ? String(ukh).split(/\s+/) : []).map((f) => expandTokens(f, tok));
  const agentRaw = get('IdentityAgent');
  let identityAgent: string | null = process.env.SSH_AUTH_SOCK || null;
  if (agentRaw) identityAgent = agentRaw.toLowerCase() === 'none' ? null : agentRaw === 'SSH_AUTH_SOCK' ? identityAgent : expandTokens(agentRaw, tok);
  const ct = Number(get('ConnectTimeout'));
  return {
    alias,
    hostname,
    port,
    user,
    identityFiles: identityFiles.length ? identityFiles : [],
    identitiesOnly: (get('IdentitiesOnly') ?? 'no').toLowerCase() === 'yes',
    proxyJump,
    keepaliveIntervalMs: serverAliveToKeepaliveMs(get('ServerAliveInterval')),
    keepaliveCountMax: Number(get('ServerAliveCountMax') ?? 3),
    userKnownHostsFiles: ukhList.length ? ukhList : [join(home(), '.ssh', 'known_hosts')],
    hashKnownHosts: (get('HashKnownHosts') ?? 'no').toLowerCase() === 'yes',
    identityAgent,
    connectTimeoutMs: Number.isFinite(ct) && ct > 0 ? ct * 1000 : 20_000,
  };
}

/** The key files ssh(1) tries when the config names none (ssh_config(5) IdentityFile default). */
export function defaultIdentityFiles(): string[] {
  const d = join(home(), '.ssh');
  return ['id_rsa', 'id_ecdsa', 'id_ecdsa_sk', 'id_ed25519', 'id_ed25519_sk'].map((n) => join(d, n));
}
