/**
 * One SSH connection to a host, through every ProxyJump hop, with each hop's host key verified
 * against known_hosts, and authentication in ssh(1)'s order: the agent (SSH_AUTH_SOCK or
 * IdentityAgent), then key files (an encrypted key's passphrase is asked through a callback),
 * then a password as the last resort. Passphrases and passwords live only in memory for the
 * attempt that needs them: never logged, never written (ssh2's `debug` is left off for this reason).
 */
import { readFile } from 'node:fs/promises';
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2, { type AnyAuthMethod, type AuthenticationType, type Client as SshClient, type ClientChannel, type SFTPWrapper } from 'ssh2';

// ssh2 is CommonJS: under Node's real ESM loader (the CLI bundle, Electron main) only its default
// export is guaranteed, so the classes are taken from it rather than imported by name.
const { Client, utils } = ssh2;
type Client = SshClient;
import { CodedError } from '../../../shared/result';
import { defaultIdentityFiles, parseDestination, resolveHost, type ResolvedHost, type SshConfigSource } from './config';
import { fingerprintSha256, keyTypeOf, KnownHosts, knownHostsName } from './known-hosts';

export interface HostKeyQuestion {
  /** The destination the user asked for. */
  host: string;
  /** The hop whose key is unknown, as known_hosts names it. */
  hop: string;
  keyType: string;
  fingerprint: string;
  /** Key types already known for this hop (ssh(1) warns about these). */
  otherTypes: string[];
}

/** How the connection asks the user things: a dialog in the app, a terminal prompt or a flag in the CLI. */
export interface ConnectPrompts {
  /** Unknown host key: resolve true to trust it (it is then recorded in known_hosts). */
  unknownHostKey(q: HostKeyQuestion): Promise<boolean>;
  /** Passphrase of an encrypted key file; null skips the key. */
  passphrase(q: { host: string; keyFile: string; attempt: number }): Promise<string | null>;
  /** Password for user@host; null gives up. */
  password(q: { host: string; user: string; attempt: number }): Promise<string | null>;
}

export interface ConnectOptions {
  /** An alias from the config, or user@host:port. */
  destination: string;
  config: SshConfigSource;
  /** Overrides UserKnownHostsFile (the CLI's --known-hosts). */
  knownHostsFile?: string;
  /** Tried before the config's IdentityFiles (the CLI's --identity). */
  identityFile?: string;
  prompts: ConnectPrompts;
  /** Extra host overrides for hosts added in the app. */
  resolved?: ResolvedHost;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: Buffer;
  stderr: Buffer;
}

export interface ExecOptions {
  /** Most bytes of stdout and stderr together kept from the command (default DEFAULT_MAX_EXEC_OUTPUT). */
  maxOutputBytes?: number;
}

/** What an exec keeps by default: far above any of our scripts' answers (a listing of thousands of run folders is a few MB). */
export const DEFAULT_MAX_EXEC_OUTPUT = 16 << 20;

/** Collects a command's output up to a limit (SSH and Local exec share it). */
export class OutputCollector {
  readonly out: Buffer[] = [];
  readonly err: Buffer[] = [];
  private bytes = 0;
  private over = false;
  private readonly max: number;

  constructor(
    private readonly where: string,
    private readonly command: string,
    max?: number,
  ) {
    this.max = max ?? DEFAULT_MAX_EXEC_OUTPUT;
  }

  /** Adds a chunk; returns the error to fail with the first time the limit is passed. */
  add(into: Buffer[], chunk: Buffer): CodedError | null {
    if (this.over) return null;
    this.bytes += chunk.length;
    if (this.bytes > this.max) {
      this.over = true;
      this.out.length = 0;
      this.err.length = 0;
      const what = this.command.split(/\s+/).slice(0, 2).join(' ').slice(0, 80);
      return new CodedError('too_large', `${what} on ${this.where} wrote more than ${this.max} bytes of output; stopped it (a host that does not stop writing is not answering our command)`, { limit: this.max });
    }
    into.push(chunk);
    return null;
  }

  result(code: number | null, signal: string | null): ExecResult {
    return { code, signal, stdout: Buffer.concat(this.out), stderr: Buffer.concat(this.err) };
  }
}

/** A connected session: the target's client plus the jump clients it rides on. */
export class SshSession {
  private closed = false;
  readonly closedPromise: Promise<string>;
  private resolveClosed!: (why: string) => void;

  constructor(
    readonly target: ResolvedHost,
    readonly client: Client,
    private readonly hops: Client[],
  ) {
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
    const onGone = (why: string) => {
      if (!this.closed) {
        this.closed = true;
        this.resolveClosed(why);
      }
    };
    client.on('close', () => onGone('connection closed'));
    client.on('error', (e: Error) => onGone(e.message));
    for (const h of hops) h.on('close', () => onGone('jump host connection closed'));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Starts a command; the caller reads the channel. */
  execChannel(command: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new CodedError('ssh_error', `connection to ${this.target.alias} is closed`));
      this.client.exec(command, (e, ch) => (e ? reject(new CodedError('ssh_error', `exec on ${this.target.alias}: ${e.message}`)) : resolve(ch)));
    });
  }

  /**
   * Runs a command to completion, feeding `stdin` and collecting output: at most
   * `maxOutputBytes` of stdout and stderr together (the host writes them, so a host that never
   * stops writing must not grow this process); past that the channel is closed and the call
   * fails with `too_large`.
   */
  async exec(command: string, stdin?: string | Buffer, options: ExecOptions = {}): Promise<ExecResult> {
    const ch = await this.execChannel(command);
    const collect = new OutputCollector(this.target.alias, command, options.maxOutputBytes);
    return new Promise((resolve, reject) => {
      let code: number | null = null;
      let signal: string | null = null;
      const onData = (into: Buffer[]) => (b: Buffer) => {
        const over = collect.add(into, b);
        if (over) {
          ch.close();
          reject(over);
        }
      };
      ch.on('data', onData(collect.out));
      ch.stderr.on('data', onData(collect.err));
      ch.on('exit', (c: number | null, s?: string) => {
        code = c;
        signal = s ?? null;
      });
      ch.on('error', reject);
      ch.on('close', () => resolve(collect.result(code, signal)));
      if (stdin !== undefined) ch.end(stdin);
      else ch.end();
    });
  }

  sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => this.client.sftp((e, s) => (e ? reject(new CodedError('ssh_error', `sftp on ${this.target.alias}: ${e.message}`)) : resolve(s))));
  }

  close(): void {
    this.client.end();
    for (const h of [...this.hops].reverse()) h.end();
  }

  /** Drops the transport at once (tests, and giving up on a hung link). */
  destroy(): void {
    this.client.destroy();
    for (const h of this.hops) h.destroy();
  }
}

function tcp(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(new CodedError('ssh_error', `cannot reach ${host}:${port}: no answer in ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(new CodedError('ssh_error', `cannot reach ${host}:${port}: ${e.code ?? e.message}`));
    });
  });
}

const ENCRYPTED_RE = /encrypted|passphrase/i;

/** Builds ssh2's authHandler: agent → keys → password, each asked for lazily (exported for its order test). */
export function authSequence(hop: ResolvedHost, opts: ConnectOptions, isTarget: boolean, failures: string[]) {
  const keyFiles: string[] = [];
  if (isTarget && opts.identityFile) keyFiles.push(opts.identityFile);
  keyFiles.push(...(hop.identityFiles.length ? hop.identityFiles : defaultIdentityFiles()));
  const steps: Array<() => Promise<AnyAuthMethod | null>> = [];
  // IdentitiesOnly: ssh(1) would still use agent keys that match the listed files; we skip the agent
  // then (the files themselves are tried), which never offers a key the user did not name.
  if (hop.identityAgent && !(hop.identitiesOnly && hop.identityFiles.length)) {
    const agent = hop.identityAgent;
    steps.push(async () => ({ type: 'agent', username: hop.user, agent }));
  }
  for (const f of [...new Set(keyFiles)]) {
    steps.push(async () => {
      let data: Buffer;
      try {
        data = await readFile(f);
      } catch {
        return null; // ssh(1) skips an IdentityFile it cannot read
      }
      let parsed = utils.parseKey(data);
      if (!(parsed instanceof Error)) return { type: 'publickey', username: hop.user, key: data };
      if (!ENCRYPTED_RE.test(parsed.message)) {
        failures.push(`${f}: not a usable private key (${parsed.message})`);
        return null;
      }
      for (let attempt = 1; attempt <= 3; attempt++) {
        const pass = await opts.prompts.passphrase({ host: hop.alias, keyFile: f, attempt });
        if (pass === null) return null;
        parsed = utils.parseKey(data, pass);
        if (!(parsed instanceof Error)) return { type: 'publickey', username: hop.user, key: data, passphrase: pass };
      }
      failures.push(`${f}: wrong passphrase`);
      return null;
    });
  }
  let pwAttempt = 0;
  const password = async (): Promise<AnyAuthMethod | null> => {
    pwAttempt++;
    const pw = await opts.prompts.password({ host: hop.alias, user: hop.user, attempt: pwAttempt });
    return pw === null ? null : { type: 'password', username: hop.user, password: pw };
  };
  let i = 0;
  return (methodsLeft: AuthenticationType[] | null, _partial: boolean | null, next: (m: AnyAuthMethod | false) => void) => {
    const allowed = (t: string) => !methodsLeft || methodsLeft.includes(t as AuthenticationType) || (t === 'agent' && methodsLeft.includes('publickey'));
    void (async () => {
      while (i < steps.length) {
        const m = await steps[i++]!();
        if (m && allowed(m.type === 'agent' ? 'publickey' : m.type)) return next(m);
      }
      // Password last (ssh(1) PreferredAuthentications order), up to 3 tries (NumberOfPasswordPrompts).
      if (pwAttempt < 3 && allowed('password')) {
        const m = await password();
        if (m) return next(m);
      }
      next(false);
    })().catch(() => next(false));
  };
}

async function connectHop(hop: ResolvedHost, sock: Duplex, opts: ConnectOptions, isTarget: boolean, known: KnownHosts): Promise<Client> {
  const client = new Client();
  let refusal: CodedError | null = null;
  const failures: string[] = [];
  return new Promise<Client>((resolve, reject) => {
    client.once('ready', () => resolve(client));
    // A link closed before the handshake ends (a dropped network, sshd shedding unauthenticated
    // connections over MaxStartups, a proxy restarting) may end with 'close' and no 'error', and
    // ssh2 then clears its readyTimeout: without this the connect would wait forever. Seen in the
    // cut-connection test: a reconnect whose handshake a cut landed in never came back. After
    // 'ready' the promise is settled and this reject does nothing.
    client.once('close', () =>
      reject(refusal ?? new CodedError('ssh_error', `${hop.alias} (${hop.hostname}:${hop.port}): the connection closed during the SSH handshake`)),
    );
    // `on`, not `once`: a refused handshake can be followed by a second error (the peer resets
    // the socket), and an 'error' event with no listener would throw out of this process.
    client.on('error', (e: Error & { level?: string }) => {
      if (refusal) return reject(refusal);
      if (e.level === 'client-authentication') {
        return reject(
          new CodedError('auth_failed', `${hop.user}@${hop.alias}: authentication failed (tried agent, keys, password)${failures.length ? `; ${failures.join('; ')}` : ''}`),
        );
      }
      reject(new CodedError('ssh_error', `${hop.alias} (${hop.hostname}:${hop.port}): ${e.message}`));
    });
    client.connect({
      sock: sock as unknown as import('node:stream').Readable,
      username: hop.user,
      // Host-key questions and passphrase dialogs wait on the user; the TCP connect has its own timeout.
      readyTimeout: 300_000,
      keepaliveInterval: hop.keepaliveIntervalMs,
      keepaliveCountMax: hop.keepaliveCountMax,
      authHandler: authSequence(hop, opts, isTarget, failures) as never,
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        void (async () => {
          const name = knownHostsName(hop.hostname, hop.port);
          const fp = fingerprintSha256(key);
          const verdict = await known.verify(hop.hostname, hop.port, key);
          if (verdict.kind === 'trusted') return verify(true);
          if (verdict.kind === 'revoked') {
            refusal = new CodedError('host_key_changed', `the host key of ${name} (${fp}) is marked @revoked in ${verdict.file}:${verdict.line}: refusing to connect`, {
              hop: name,
              fingerprint: fp,
            });
            return verify(false);
          }
          if (verdict.kind === 'changed') {
            refusal = new CodedError(
              'host_key_changed',
              `the host key of ${name} has CHANGED: known_hosts (${verdict.file}:${verdict.line}) has ${verdict.knownKeyType} ${verdict.knownFingerprint}, ` +
                `the host now offers ${keyTypeOf(key)} ${fp}. Someone may be intercepting the connection, or the host was reinstalled; ` +
                `if you trust the change, remove the old line (ssh-keygen -R ${JSON.stringify(name)}) and connect again.`,
              { hop: name, knownFingerprint: verdict.knownFingerprint, offeredFingerprint: fp, file: verdict.file, line: verdict.line },
            );
            return verify(false);
          }
          const accept = await opts.prompts.unknownHostKey({ host: opts.destination, hop: name, keyType: keyTypeOf(key), fingerprint: fp, otherTypes: verdict.otherTypes });
          if (!accept) {
            refusal = new CodedError('host_key_unknown', `the host key of ${name} (${keyTypeOf(key)} ${fp}) is not known and was not accepted`, { hop: name, fingerprint: fp });
            return verify(false);
          }
          await known.record(hop.hostname, hop.port, key);
          verify(true);
        })().catch((e: Error) => {
          refusal = new CodedError('ssh_error', `checking the host key of ${hop.alias}: ${e.message}`);
          verify(false);
        });
      },
    });
  });
}

/** Resolves the hop chain of a destination: ProxyJump hops (each resolved against the config) then the target. */
export function hopChain(opts: Pick<ConnectOptions, 'destination' | 'config' | 'resolved'>): ResolvedHost[] {
  const target = opts.resolved ?? resolveHost(opts.config, opts.destination);
  // Each hop is resolved against the same config, as ssh -J does; a hop's own ProxyJump is not
  // followed (ssh(1) would nest them; one level covers bastion setups).
  const hops = target.proxyJump.map((h) => {
    const r = resolveHost(opts.config, h);
    const d = parseDestination(h);
    return { ...r, user: d.user ?? r.user, port: d.port ?? r.port };
  });
  return [...hops, target];
}

/** Connects to a destination through its ProxyJump chain, verifying every hop. */
export async function connectSsh(opts: ConnectOptions): Promise<SshSession> {
  const chain = hopChain(opts);
  const target = chain[chain.length - 1]!;
  const clients: Client[] = [];
  try {
    let sock: Duplex = await tcp(chain[0]!.hostname, chain[0]!.port, chain[0]!.connectTimeoutMs);
    for (let i = 0; i < chain.length; i++) {
      const hop = chain[i]!;
      const known = new KnownHosts(opts.knownHostsFile ? [opts.knownHostsFile] : hop.userKnownHostsFiles, opts.knownHostsFile ? [] : undefined, hop.hashKnownHosts);
      const client = await connectHop(hop, sock, opts, i === chain.length - 1, known);
      clients.push(client);
      if (i < chain.length - 1) {
        const next = chain[i + 1]!;
        sock = await new Promise<Duplex>((resolve, reject) =>
          client.forwardOut('127.0.0.1', 0, next.hostname, next.port, (e, ch) =>
            e ? reject(new CodedError('ssh_error', `jump host ${hop.alias} cannot reach ${next.hostname}:${next.port}: ${e.message}`)) : resolve(ch),
          ),
        );
      }
    }
  } catch (e) {
    for (const c of clients.reverse()) c.end();
    throw e;
  }
  const client = clients.pop()!;
  return new SshSession(target, client, clients);
}
