/**
 * known_hosts names as OpenSSH files them (the comments in src/main/core/ssh/known-hosts.ts cite
 * openssh-portable): host names lowercased (ASCII), addresses canonical, `[host]:port` off port
 * 22, hashed entries over that exact name, patterns matched case-insensitively. The real-sshd
 * test of a changed key behind a capitalised HostName is in test/integration/ssh-hardening.test.ts.
 */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalHost, hostFieldMatches, knownHostsName } from '../../src/main/core/ssh/known-hosts';

const hashed = (name: string, salt = Buffer.alloc(20, 7)) => `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;

describe('known_hosts names', () => {
  it('lowercases names (ASCII only), keeps IPv4, compresses IPv6, and brackets a port other than 22', () => {
    expect(knownHostsName('GPU-Node1.Example.COM', 22)).toBe('gpu-node1.example.com');
    expect(knownHostsName('LocalHost', 2222)).toBe('[localhost]:2222');
    expect(knownHostsName('10.0.0.1', 2222)).toBe('[10.0.0.1]:2222');
    expect(canonicalHost('0:0:0:0:0:0:0:1')).toBe('::1');
    expect(canonicalHost('FE80:0:0::ABCD')).toBe('fe80::abcd');
    expect(canonicalHost('fe80::1%eth0')).toBe('fe80::1%eth0');
    expect(canonicalHost('Ünïcode.Example')).toBe('Ünïcode.example');
  });

  it('a hashed entry OpenSSH wrote (lowercase name) matches a capitalised HostName once canonical', () => {
    const field = hashed('[gpu.example]:2222');
    expect(hostFieldMatches(field, knownHostsName('GPU.Example', 2222))).toBe(true);
    // The name as written is a different HMAC: what made a changed key look unknown.
    expect(hostFieldMatches(field, '[GPU.Example]:2222')).toBe(false);
  });

  it('patterns and plain names match whatever their case, negation still wins', () => {
    expect(hostFieldMatches('[GPU.example]:2222', knownHostsName('gpu.EXAMPLE', 2222))).toBe(true);
    expect(hostFieldMatches('*.Example,!bad.example', knownHostsName('node7.example', 22))).toBe(true);
    expect(hostFieldMatches('*.Example,!BAD.example', knownHostsName('Bad.Example', 22))).toBe(false);
    expect(hostFieldMatches('[node?.example]:2222', knownHostsName('NODE7.example', 2222))).toBe(true);
    // A pattern for port 22 does not name another port (the name is [host]:port there).
    expect(hostFieldMatches('*.example', knownHostsName('node7.example', 2222))).toBe(false);
  });
});
