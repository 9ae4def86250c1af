/**
 * Connecting to real OpenSSH servers on loopback: ssh_config aliases (with Include), agent auth,
 * encrypted keys through the passphrase callback, plain/hashed/[host]:port/@revoked known_hosts,
 * unknown and changed host keys, and a ProxyJump chain with every hop verified.
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSshConfig, resolveHost, serverAliveToKeepaliveMs } from '../../src/main/core/ssh/config';
import { authSequence, connectSsh, type ConnectPrompts, type HostKeyQuestion } from '../../src/main/core/ssh/connect';
import { fingerprintSha256, hostFieldMatches } from '../../src/main/core/ssh/known-hosts';
import { currentUser, keygen, sshdSkipReason, startAgent, startProxy, startSshd, type TestAgent, type TestSshd } from '../helpers/sshd';

const skip = sshdSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`SSH integration tests skipped: ${skip}`);

const noPrompts = (over: Partial<ConnectPrompts> = {}): ConnectPrompts & { asked: HostKeyQuestion[] } => {
  const asked: HostKeyQuestion[] = [];
  return {
    asked,
    unknownHostKey: async (q) => {
      asked.push(q);
      return false;
    },
    passphrase: async () => null,
    password: async () => null,
    ...over,
  };
};

function hashedName(name: string): string {
  // Let OpenSSH itself hash the entry, so our HMAC matches the real format.
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-kh-'));
  const f = join(dir, 'kh');
  writeFileSync(f, `${name} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0yRcM7d/yJ9y3zx1WmRzJ3OmaSlU2TcS3F1yxeN0bE\n`);
  execFileSync('ssh-keygen', ['-H', '-f', f], { stdio: 'ignore' });
  return readFileSync(f, 'utf8').split(' ')[0]!;
}

d('ssh connections against real sshd', () => {
  let dir: string;
  let userKey: { priv: string; pub: string };
  let encKey: { priv: string; pub: string };
  let agentKey: { priv: string; pub: string };
  let a: TestSshd;
  let jump: TestSshd;
  let agent: TestAgent;
  const user = currentUser();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kvscope-sshc-'));
    userKey = keygen(join(dir, 'id_plain'));
    encKey = keygen(join(dir, 'id_enc'), 'ed25519', 'correct horse');
    agentKey = keygen(join(dir, 'id_agent'));
    [a, jump] = await Promise.all([
      startSshd({ authorizedKeys: [userKey.pub, encKey.pub, agentKey.pub], name: 'a' }),
      startSshd({ authorizedKeys: [userKey.pub, agentKey.pub], name: 'jump' }),
    ]);
    agent = startAgent([agentKey.priv]);
  });
  afterAll(async () => {
    agent?.stop();
    await Promise.all([a?.stop(), jump?.stop()]);
  });

  function config(text: string) {
    const f = join(dir, `cfg-${Math.random().toString(36).slice(2)}`);
    writeFileSync(f, text, { mode: 0o600 });
    return loadSshConfig(f);
  }
  function knownHosts(lines: string[]) {
    const f = join(dir, `kh-${Math.random().toString(36).slice(2)}`);
    writeFileSync(f, lines.join('\n') + '\n');
    return f;
  }

  it('resolves an alias with Include, HostName, Port, User, IdentityFile and ServerAliveInterval', () => {
    mkdirSync(join(dir, 'conf.d'), { recursive: true });
    writeFileSync(join(dir, 'conf.d', 'gpu.conf'), `Host gpu-box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n  ServerAliveInterval 7\n`);
    const src = config(`Include ${join(dir, 'conf.d')}/*.conf\nHost *\n  IdentitiesOnly yes\n  Port 2222\n`);
    const r = resolveHost(src, 'gpu-box');
    expect(r).toMatchObject({ hostname: '127.0.0.1', port: a.port, user, identityFiles: [userKey.priv], identitiesOnly: true, keepaliveIntervalMs: 7000 });
    expect(serverAliveToKeepaliveMs('0')).toBe(0);
    // An unlisted host falls through to Host * (first match wins).
    expect(resolveHost(src, 'other').port).toBe(2222);
  });

  it('ignores a config writable by others, with a warning, as ssh(1) does', () => {
    const f = join(dir, 'unsafe-config');
    writeFileSync(f, `Host evil\n  HostName 10.9.9.9\n`);
    chmodSync(f, 0o666);
    const src = loadSshConfig(f);
    expect(src.warnings.join('\n')).toMatch(/writable by group or others/);
    expect(resolveHost(src, 'evil').hostname).toBe('evil');
  });

  it('authenticates with the ssh-agent and runs a command, trusting a hashed known_hosts entry', async () => {
    const src = config(`Host box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityAgent ${agent.sock}\n  IdentityFile ${join(dir, 'nonexistent')}\n`);
    const kh = knownHosts([`${hashedName(`[127.0.0.1]:${a.port}`)} ${a.hostKeyLine}`]);
    const p = noPrompts();
    const s = await connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: p });
    const r = await s.exec('echo hello-$((6*7))');
    s.close();
    expect(r.stdout.toString()).toBe('hello-42\n');
    expect(p.asked).toEqual([]);
  });

  it('the agent really is what authenticated: without it, and with no usable key, auth fails', async () => {
    const src = config(`Host box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityAgent none\n  IdentityFile ${join(dir, 'nonexistent')}\n`);
    const kh = knownHosts([`[127.0.0.1]:${a.port} ${a.hostKeyLine}`]);
    await expect(connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: noPrompts() })).rejects.toMatchObject({ code: 'auth_failed' });
  });

  it('asks for an encrypted key passphrase through the callback and never needs it twice', async () => {
    const src = config(`Host enc\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityAgent none\n  IdentityFile ${encKey.priv}\n`);
    const kh = knownHosts([`[127.0.0.1]:${a.port} ${a.hostKeyLine}`]);
    const asked: string[] = [];
    const prompts = noPrompts({
      passphrase: async (q) => {
        asked.push(`${q.keyFile}#${q.attempt}`);
        return q.attempt === 1 ? 'wrong guess' : 'correct horse';
      },
    });
    const s = await connectSsh({ destination: 'enc', config: src, knownHostsFile: kh, prompts });
    expect((await s.exec('true')).code).toBe(0);
    s.close();
    expect(asked).toEqual([`${encKey.priv}#1`, `${encKey.priv}#2`]);
  });

  it('an unknown host key goes to the callback with its SHA256 fingerprint; accepting records it, refusing does not connect', async () => {
    const src = config(`Host box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n  IdentityAgent none\n`);
    const kh = knownHosts([]);
    const refuse = noPrompts();
    await expect(connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: refuse })).rejects.toMatchObject({ code: 'host_key_unknown' });
    const expectedFp = execFileSync('ssh-keygen', ['-lf', `${a.dir}/host_key.pub`], { encoding: 'utf8' }).split(' ')[1];
    expect(refuse.asked).toEqual([{ host: 'box', hop: `[127.0.0.1]:${a.port}`, keyType: 'ssh-ed25519', fingerprint: expectedFp, otherTypes: [] }]);
    expect(readFileSync(kh, 'utf8').trim()).toBe('');

    const accept = noPrompts({ unknownHostKey: async () => true });
    (await connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: accept })).close();
    expect(readFileSync(kh, 'utf8')).toContain(`[127.0.0.1]:${a.port} ${a.hostKeyLine}`);
    // OpenSSH itself now accepts the recorded line (ssh-keygen -F finds it).
    expect(execFileSync('ssh-keygen', ['-F', `[127.0.0.1]:${a.port}`, '-f', kh], { encoding: 'utf8' })).toContain('ssh-ed25519');
    const again = noPrompts();
    (await connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: again })).close();
    expect(again.asked).toEqual([]);
  });

  it('HashKnownHosts yes: an accepted key is recorded hashed, and OpenSSH finds it', async () => {
    const src = config(`Host box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n  IdentityAgent none\n  HashKnownHosts yes\n  UserKnownHostsFile ${join(dir, 'kh-hashed')}\n`);
    (await connectSsh({ destination: 'box', config: src, prompts: noPrompts({ unknownHostKey: async () => true }) })).close();
    const text = readFileSync(join(dir, 'kh-hashed'), 'utf8');
    expect(text.startsWith('|1|')).toBe(true);
    expect(text).not.toContain('127.0.0.1');
    expect(execFileSync('ssh-keygen', ['-F', `[127.0.0.1]:${a.port}`, '-f', join(dir, 'kh-hashed')], { encoding: 'utf8' })).toContain('ssh-ed25519');
    const again = noPrompts();
    (await connectSsh({ destination: 'box', config: src, prompts: again })).close();
    expect(again.asked).toEqual([]);
  });

  it('a host key recorded by OpenSSH itself (hashed or plain, lowercase) is found behind a capitalised HostName: a changed key is CHANGED, never "unknown"', async () => {
    // OpenSSH's own client records the key of `LocalHost` through a relay; then the relay is
    // pointed at another sshd (another host key) at the same address: a man in the middle.
    const relay = await startProxy(a.port);
    try {
      for (const hashKnownHosts of ['yes', 'no']) {
        const kh = join(dir, `kh-openssh-${hashKnownHosts}`);
        relay.target = a.port;
        // Asynchronously: the relay runs in this process.
        await promisify(execFile)('ssh', ['-F', '/dev/null', '-o', `UserKnownHostsFile=${kh}`, '-o', `HashKnownHosts=${hashKnownHosts}`, '-o', 'StrictHostKeyChecking=accept-new', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-i', userKey.priv, '-p', String(relay.port), '-l', user, 'LocalHost', 'true']);
        const recorded = readFileSync(kh, 'utf8');
        expect(recorded).toContain(a.hostKeyLine);
        if (hashKnownHosts === 'yes') expect(recorded.startsWith('|1|')).toBe(true);
        else expect(recorded.startsWith(`[localhost]:${relay.port} `)).toBe(true);
        // The same host as written in a config, capitals and all: trusted while the key is the same.
        const src = config(`Host lab\n  HostName LocalHost\n  Port ${relay.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n  IdentityAgent none\n`);
        const trusted = noPrompts();
        (await connectSsh({ destination: 'lab', config: src, knownHostsFile: kh, prompts: trusted })).close();
        expect(trusted.asked).toEqual([]);
        relay.target = jump.port;
        const asked = noPrompts({ unknownHostKey: async () => true });
        const e = await connectSsh({ destination: 'lab', config: src, knownHostsFile: kh, prompts: asked }).catch((x: unknown) => x);
        expect(e).toMatchObject({ code: 'host_key_changed', message: expect.stringContaining(`the host key of [localhost]:${relay.port} has CHANGED`) });
        expect(asked.asked).toEqual([]);
        expect(readFileSync(kh, 'utf8')).toBe(recorded);
      }
    } finally {
      await relay.close();
    }
  });

  it('an accepted key is recorded under the lowercase name, hashed, where OpenSSH looks it up', async () => {
    const kh = join(dir, 'kh-caps-hashed');
    const src = config(`Host caps\n  HostName LocalHost\n  Port ${a.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n  IdentityAgent none\n  HashKnownHosts yes\n  UserKnownHostsFile ${kh}\n`);
    (await connectSsh({ destination: 'caps', config: src, prompts: noPrompts({ unknownHostKey: async () => true }) })).close();
    expect(execFileSync('ssh-keygen', ['-F', `[localhost]:${a.port}`, '-f', kh], { encoding: 'utf8' })).toContain('ssh-ed25519');
    // And OpenSSH's own client trusts it without asking (BatchMode fails on any question).
    execFileSync('ssh', ['-F', '/dev/null', '-o', `UserKnownHostsFile=${kh}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-i', userKey.priv, '-p', String(a.port), '-l', user, 'localhost', 'true'], { stdio: 'ignore' });
  });

  it('a changed host key is refused with both fingerprints, and the callback is never asked', async () => {
    const other = keygen(join(dir, `other-host-${Date.now()}`));
    const otherLine = other.pub.split(' ').slice(0, 2).join(' ');
    const src = config(`Host box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n`);
    const kh = knownHosts([`[127.0.0.1]:${a.port} ${otherLine}`]);
    const p = noPrompts({ unknownHostKey: async () => true });
    const e = await connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: p }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'host_key_changed' });
    const msg = (e as Error).message;
    expect(msg).toMatch(/CHANGED/);
    expect(msg).toContain(fingerprintSha256(Buffer.from(otherLine.split(' ')[1]!, 'base64')));
    expect(msg).toContain(fingerprintSha256(Buffer.from(a.hostKeyLine.split(' ')[1]!, 'base64')));
    expect(p.asked).toEqual([]);
  });

  it('a @revoked key is refused even when also listed as trusted', async () => {
    const src = config(`Host box\n  HostName 127.0.0.1\n  Port ${a.port}\n  User ${user}\n  IdentityFile ${userKey.priv}\n`);
    const kh = knownHosts([`[127.0.0.1]:${a.port} ${a.hostKeyLine}`, `@revoked * ${a.hostKeyLine}`]);
    await expect(connectSsh({ destination: 'box', config: src, knownHostsFile: kh, prompts: noPrompts() })).rejects.toThrow(/@revoked/);
  });

  it('ProxyJump: reaches the target through a second sshd and verifies both hops', async () => {
    const src = config(
      [
        `Host bastion`,
        `  HostName 127.0.0.1`,
        `  Port ${jump.port}`,
        `  User ${user}`,
        `  IdentityFile ${userKey.priv}`,
        `Host inner`,
        // The target is addressed as the jump host sees it.
        `  HostName localhost`,
        `  Port ${a.port}`,
        `  User ${user}`,
        `  IdentityFile ${userKey.priv}`,
        `  ProxyJump bastion`,
      ].join('\n'),
    );
    const kh = knownHosts([`[127.0.0.1]:${jump.port} ${jump.hostKeyLine}`]);
    const p = noPrompts();
    // The inner hop's key is unknown: asked about by its own name, and refused → no connection.
    await expect(connectSsh({ destination: 'inner', config: src, knownHostsFile: kh, prompts: p })).rejects.toMatchObject({ code: 'host_key_unknown' });
    expect(p.asked.map((q) => q.hop)).toEqual([`[localhost]:${a.port}`]);
    // With both hops known, the command runs on the target (its sshd pid file proves which host).
    writeFileSync(kh, `[127.0.0.1]:${jump.port} ${jump.hostKeyLine}\n[localhost]:${a.port} ${a.hostKeyLine}\n`);
    const s = await connectSsh({ destination: 'inner', config: src, knownHostsFile: kh, prompts: noPrompts() });
    const r = await s.exec(`echo $SSH_CONNECTION`);
    s.close();
    expect(r.stdout.toString().trim().split(' ')[3]).toBe(String(a.port));
    // A changed key on the jump host stops the chain before the target is tried.
    const other = keygen(join(dir, `other-jump-${Date.now()}`)).pub.split(' ').slice(0, 2).join(' ');
    writeFileSync(kh, `[127.0.0.1]:${jump.port} ${other}\n[localhost]:${a.port} ${a.hostKeyLine}\n`);
    await expect(connectSsh({ destination: 'inner', config: src, knownHostsFile: kh, prompts: noPrompts() })).rejects.toMatchObject({
      code: 'host_key_changed',
      detail: { hop: `[127.0.0.1]:${jump.port}` },
    });
  });

  it('tries methods in ssh(1) order: agent, key files (unreadable ones skipped), password last', async () => {
    // No test sshd accepts passwords (that needs a real account password), so the order is checked
    // on the handler itself, driven the way ssh2 drives it after each failed method.
    const hop = resolveHost(config(`Host o\n  HostName 127.0.0.1\n  User ${user}\n  IdentityAgent ${agent.sock}\n  IdentityFile ${join(dir, 'missing')}\n  IdentityFile ${userKey.priv}\n  IdentityFile ${encKey.priv}\n`), 'o');
    const calls: string[] = [];
    const prompts = noPrompts({
      passphrase: async () => {
        calls.push('ask-passphrase');
        return 'correct horse';
      },
      password: async (q) => {
        calls.push(`ask-password#${q.attempt}`);
        return q.attempt < 3 ? 'pw' : null;
      },
    });
    const handler = authSequence(hop, { destination: 'o', config: loadSshConfig(join(dir, 'none')), prompts }, true, []);
    const tried: string[] = [];
    for (let i = 0; i < 8; i++) {
      const m = await new Promise<false | { type: string; key?: Buffer; passphrase?: string }>((r) => handler(i === 0 ? null : ['publickey', 'password'], false, r as never));
      if (m === false) break;
      tried.push(m.type === 'publickey' ? `publickey:${m.passphrase ? 'decrypted' : 'plain'}` : m.type);
    }
    expect(tried).toEqual(['agent', 'publickey:plain', 'publickey:decrypted', 'password', 'password']);
    expect(calls).toEqual(['ask-passphrase', 'ask-password#1', 'ask-password#2', 'ask-password#3']);
  });

  it('ProxyJump written inline as user@host:port (not an alias) works too', async () => {
    const src = config(`Host inner2\n  HostName localhost\n  Port ${a.port}\n  User ${user}\n  ProxyJump ${user}@127.0.0.1:${jump.port}\nHost *\n  IdentityAgent ${agent.sock}\n  IdentityFile ${join(dir, 'missing')}\n`);
    const kh = knownHosts([`[127.0.0.1]:${jump.port} ${jump.hostKeyLine}`, `[localhost]:${a.port} ${a.hostKeyLine}`]);
    const s = await connectSsh({ destination: 'inner2', config: src, knownHostsFile: kh, prompts: noPrompts() });
    const r = await s.exec('echo $SSH_CONNECTION');
    s.close();
    expect(r.stdout.toString().trim().split(' ')[3]).toBe(String(a.port));
  });

  it('hashed entries match only their own name', () => {
    const h = hashedName('gpu1.example');
    expect(hostFieldMatches(h, 'gpu1.example')).toBe(true);
    expect(hostFieldMatches(h, 'gpu2.example')).toBe(false);
    expect(hostFieldMatches('*.example,!bad.example', 'bad.example')).toBe(false);
    expect(hostFieldMatches('*.example,!bad.example', 'ok.example')).toBe(true);
  });
});

// No sshd needed: a TCP server that drops the link during the SSH handshake, as a flaky network,
// a proxy being cut or an sshd over MaxStartups does. ssh2 may then end with 'close' and no
// 'error', and it clears its readyTimeout on close: the connect used to wait forever (the
// cut-connection run test hung in a reconnect whose handshake a cut landed in).
describe('a link dropped during the SSH handshake', () => {
  let server: Server;
  let port: number;
  let mode: 'at-once' | 'after-banner' = 'at-once';
  const sockets: Socket[] = [];
  beforeAll(async () => {
    server = createServer((sock) => {
      sockets.push(sock);
      sock.on('error', () => undefined);
      if (mode === 'at-once') sock.end();
      else {
        sock.write('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n');
        setTimeout(() => sock.end(), 100);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  for (const m of ['at-once', 'after-banner'] as const) {
    it(`ends the connect with a clear error, not a hang (closed ${m})`, async () => {
      mode = m;
      const dir = mkdtempSync(join(tmpdir(), 'kvscope-drop-'));
      const cfg = join(dir, 'config');
      writeFileSync(cfg, `Host dropper\n  HostName 127.0.0.1\n  Port ${port}\n  User nobody\n  IdentityAgent none\n`, { mode: 0o600 });
      const attempt = connectSsh({ destination: 'dropper', config: loadSshConfig(cfg), knownHostsFile: join(dir, 'kh'), prompts: noPrompts() });
      const outcome = await Promise.race([
        attempt.then(
          () => 'connected',
          (e: Error & { code?: string }) => `${e.code}: ${e.message}`,
        ),
        new Promise<string>((r) => setTimeout(() => r('still waiting after 10 s'), 10_000)),
      ]);
      expect(outcome).toMatch(/^ssh_error: dropper \(127\.0\.0\.1:\d+\): /);
    });
  }
});
