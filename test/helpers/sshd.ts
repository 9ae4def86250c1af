/**
 * Real OpenSSH servers on loopback for the SSH integration tests: generated host and user keys in a
 * temp folder, `sshd -D -e -f <config>` on a free 127.0.0.1 port, an ssh-agent when a test wants
 * one, and a TCP proxy the test can cut to simulate a dropped link. Nothing here mocks SSH.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export const SSHD = '/usr/sbin/sshd';
export const SFTP_SERVER = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/lib/ssh/sftp-server'].find((p) => existsSync(p)) ?? 'internal-sftp';

/** Why the SSH tests cannot run here, or null when they can. */
export function sshdSkipReason(): string | null {
  if (!existsSync(SSHD)) return `OpenSSH server not installed (${SSHD} is absent)`;
  for (const b of ['ssh-keygen', 'ssh-agent', 'ssh-add']) {
    try {
      execFileSync('sh', ['-c', `command -v ${b}`]);
    } catch {
      return `${b} not installed`;
    }
  }
  return null;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export function keygen(file: string, type = 'ed25519', passphrase = ''): { priv: string; pub: string } {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', passphrase, '-C', 'kvscope-test', '-f', file]);
  return { priv: file, pub: readFileSync(file + '.pub', 'utf8').trim() };
}

export interface TestSshd {
  port: number;
  dir: string;
  hostKeyPub: string;
  /** The server's key line as known_hosts wants it: "ssh-ed25519 AAAA...". */
  hostKeyLine: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Starts sshd accepting `authorizedKeys` for the current user. */
export async function startSshd(opts: { authorizedKeys: string[]; hostKeyType?: string; name?: string; extraConfig?: string[] }): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), `kvscope-sshd-${opts.name ?? 'a'}-`));
  // sshd running as root insists on its privilege-separation folder.
  if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = keygen(join(dir, 'host_key'), opts.hostKeyType ?? 'ed25519');
  writeFileSync(join(dir, 'authorized_keys'), opts.authorizedKeys.join('\n') + '\n', { mode: 0o600 });
  const port = await freePort();
  const config = [
    `ListenAddress 127.0.0.1`,
    `Port ${port}`,
    `HostKey ${hostKey.priv}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    // The temp folder lives in /tmp (mode 1777), which StrictModes would reject.
    `StrictModes no`,
    `PubkeyAuthentication yes`,
    `PasswordAuthentication no`,
    `KbdInteractiveAuthentication no`,
    `UsePAM no`,
    `PermitRootLogin yes`,
    `AllowTcpForwarding yes`,
    `MaxStartups 100`,
    `MaxSessions 50`,
    `Subsystem sftp ${SFTP_SERVER}`,
    `LogLevel ERROR`,
    // e.g. `SetEnv SLURM_CONF=…`: what a login node's own configuration would provide.
    ...(opts.extraConfig ?? []),
  ].join('\n');
  writeFileSync(join(dir, 'sshd_config'), config + '\n');
  const proc = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  // Ready when the port accepts a connection.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`sshd exited (${proc.exitCode}): ${stderr}`);
    const okConn = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (okConn) break;
    if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pubParts = hostKey.pub.split(' ');
  return {
    port,
    dir,
    hostKeyPub: hostKey.pub,
    hostKeyLine: `${pubParts[0]} ${pubParts[1]}`,
    proc,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestAgent {
  sock: string;
  pid: number;
  stop(): void;
}

/** Starts an ssh-agent holding `keyFiles` (unencrypted). */
export function startAgent(keyFiles: string[]): TestAgent {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-agent-'));
  const sock = join(dir, 'agent.sock');
  const out = execFileSync('ssh-agent', ['-s', '-a', sock], { encoding: 'utf8' });
  const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(out)![1]);
  for (const k of keyFiles) execFileSync('ssh-add', ['-q', k], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
  return {
    sock,
    pid,
    stop() {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP relay in front of an sshd: `cut()` drops every live connection, like a network failure. */
export interface CuttableProxy {
  port: number;
  connections: number;
  /** Where new connections go from now on (another sshd behind the same address: a changed host key). */
  target: number;
  cut(): number;
  /** Stops relaying on the live connections without closing them (a silent network black hole). */
  freeze(): number;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number): Promise<CuttableProxy> {
  const live = new Set<Socket>();
  const pairs: Array<[Socket, Socket]> = [];
  const frozen = new Set<Socket>();
  let connections = 0;
  let target = targetPort;
  const server: Server = createServer((client) => {
    connections++;
    const upstream = connect(target, '127.0.0.1');
    live.add(client);
    live.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.push([client, upstream]);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    get connections() {
      return connections;
    },
    get target() {
      return target;
    },
    set target(port: number) {
      target = port;
    },
    freeze() {
      let n = 0;
      for (const [c, u] of pairs.splice(0)) {
        if (c.destroyed || u.destroyed) continue;
        c.unpipe(u);
        u.unpipe(c);
        c.pause();
        u.pause();
        // Keep them open but out of `live`, so a later cut() does not end the black hole early.
        live.delete(c);
        live.delete(u);
        frozen.add(c).add(u);
        n++;
      }
      return n;
    },
    cut() {
      const n = live.size;
      for (const s of live) s.destroy();
      live.clear();
      return n;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of [...live, ...frozen]) s.destroy();
        server.close(() => r());
      }),
  };
}

export const currentUser = (): string => userInfo().username;

/** Writes a client ssh config + known_hosts for tests; returns their paths. */
export function writeClientConfig(dir: string, text: string): string {
  const file = join(dir, 'ssh_config');
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

/** A temp folder, a user key in it, and an sshd on loopback that accepts that key. */
export async function sshdWithKey(name: string): Promise<{ dir: string; key: { priv: string; pub: string }; sshd: TestSshd }> {
  const dir = mkdtempSync(join(tmpdir(), `kvscope-${name}-`));
  const key = keygen(join(dir, 'id'));
  return { dir, key, sshd: await startSshd({ authorizedKeys: [key.pub], name }) };
}

/** The ssh_config stanza naming that sshd as `alias` (the key only, no agent). */
export function hostStanza(alias: string, sshd: TestSshd, keyFile: string): string {
  return `Host ${alias}\n  HostName 127.0.0.1\n  Port ${sshd.port}\n  User ${currentUser()}\n  IdentityFile ${keyFile}\n  IdentityAgent none\n`;
}

