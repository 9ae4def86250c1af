/**
 * The hosts a user can run on: every concrete alias of ~/.ssh/config, the hosts added in the app
 * (`hosts.json` in the data folder), and Local (the agent as a child process, no SSH). Connects
 * to them (asking the user through `ConnectPrompts`), probes and deploys.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HostEntry, HostInput, HostProbe } from '../../shared/api';
import { CodedError } from '../../shared/result';
import { bundleAgent, deployAgent, resolveRoot, type AgentBundle, type DeployProgress } from './deploy';
import { probeWith } from './probe';
import { checkPythonPath } from './python-path';
import { configAliases, loadSshConfig, resolveHost, serverAliveToKeepaliveMs, type ResolvedHost, type SshConfigSource } from './ssh/config';
import { connectSsh, type ConnectPrompts } from './ssh/connect';
import { LocalExec, SshExec, type HostExec } from './ssh/host-exec';

export const LOCAL_HOST = 'local';
const ALIAS_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

export interface HostServiceOptions {
  /** The data folder (hosts.json, and the Local host's run folders). */
  dataDir: string;
  /** The agent's source folder (resources/agent). */
  agentSourceDir: string;
  prompts: ConnectPrompts;
  sshConfigFile?: string;
  knownHostsFile?: string;
  identityFile?: string;
  /** Remote root for agent and runs (default ~/.cache/kvscope). */
  remoteRoot?: string;
  /** Default interpreter (per host, per run overrides win). */
  python?: string;
}

export interface PreparedHost {
  exec: HostExec;
  /** Folder holding kvscope_agent/ on the host. */
  agentDir: string;
  /** Root under which runs/<id>/ go. */
  root: string;
}

export class HostService {
  private bundle: Promise<AgentBundle> | null = null;

  /**
   * Passphrases and passwords the user gave in this session, by key file / user@host, so a
   * reconnect in the middle of a run does not ask again. Memory only: never written anywhere.
   */
  private readonly secrets = new Map<string, string>();
  private readonly prompts: ConnectPrompts;

  constructor(readonly opts: HostServiceOptions) {
    const ask = opts.prompts;
    const remembered = async (key: string, attempt: number, askUser: () => Promise<string | null>) => {
      const known = this.secrets.get(key);
      if (attempt === 1 && known !== undefined) return known;
      const v = await askUser();
      if (v === null) this.secrets.delete(key);
      else this.secrets.set(key, v);
      return v;
    };
    this.prompts = {
      unknownHostKey: (q) => ask.unknownHostKey(q),
      passphrase: (q) => remembered(`key:${q.keyFile}`, q.attempt, () => ask.passphrase(q)),
      password: (q) => remembered(`pw:${q.user}@${q.host}`, q.attempt, () => ask.password(q)),
    };
  }

  private get hostsFile(): string {
    return join(this.opts.dataDir, 'hosts.json');
  }

  config(): SshConfigSource {
    return loadSshConfig(this.opts.sshConfigFile);
  }

  async appHosts(): Promise<HostInput[]> {
    try {
      const v = JSON.parse(await readFile(this.hostsFile, 'utf8')) as unknown;
      return Array.isArray(v) ? (v as HostInput[]).filter((h) => typeof h?.alias === 'string' && typeof h?.hostname === 'string') : [];
    } catch {
      return [];
    }
  }

  private resolvedApp(h: HostInput, src: SshConfigSource): ResolvedHost {
    const base = resolveHost(src, h.hostname);
    return {
      ...base,
      alias: h.alias,
      hostname: base.hostname,
      port: h.port ?? base.port,
      user: h.user ?? base.user,
      identityFiles: h.identityFile ? [h.identityFile] : base.identityFiles,
      proxyJump: h.proxyJump ? h.proxyJump.split(',').map((s) => s.trim()).filter(Boolean) : base.proxyJump,
      keepaliveIntervalMs: base.keepaliveIntervalMs ?? serverAliveToKeepaliveMs(undefined),
    };
  }

  async listHosts(): Promise<HostEntry[]> {
    const src = this.config();
    const python = this.opts.python ?? 'python3';
    const out: HostEntry[] = [{ alias: LOCAL_HOST, source: 'local', hostname: null, user: null, port: null, proxyJump: [], identityFiles: [], python, warnings: [] }];
    for (const alias of configAliases(src)) {
      const r = resolveHost(src, alias);
      out.push({ alias, source: 'ssh-config', hostname: r.hostname, user: r.user, port: r.port, proxyJump: r.proxyJump, identityFiles: r.identityFiles, python, warnings: [...src.warnings] });
    }
    for (const h of await this.appHosts()) {
      const r = this.resolvedApp(h, src);
      out.push({ alias: h.alias, source: 'app', hostname: r.hostname, user: r.user, port: r.port, proxyJump: r.proxyJump, identityFiles: r.identityFiles, python: h.python ?? python, warnings: [] });
    }
    return out;
  }

  async saveHost(input: HostInput): Promise<HostEntry> {
    if (!input || typeof input.alias !== 'string' || !ALIAS_RE.test(input.alias) || input.alias === LOCAL_HOST) {
      throw new CodedError('invalid_argument', `a host name must be letters, digits, . _ @ - (and not "local"): ${JSON.stringify(input?.alias)}`, { field: 'alias' });
    }
    if (typeof input.hostname !== 'string' || !/^[A-Za-z0-9._:[\]-]{1,253}$/.test(input.hostname)) {
      throw new CodedError('invalid_argument', `not a host name or address: ${JSON.stringify(input.hostname)}`, { field: 'hostname' });
    }
    if (input.port !== undefined && (!Number.isInteger(input.port) || input.port < 1 || input.port > 65535)) throw new CodedError('invalid_argument', 'port must be 1..65535', { field: 'port' });
    const clean: HostInput = { alias: input.alias, hostname: input.hostname };
    if (input.user) clean.user = String(input.user);
    if (input.port) clean.port = input.port;
    if (input.identityFile) clean.identityFile = String(input.identityFile);
    if (input.proxyJump) clean.proxyJump = String(input.proxyJump);
    if (input.python) clean.python = checkPythonPath(String(input.python));
    const hosts = (await this.appHosts()).filter((h) => h.alias !== clean.alias);
    hosts.push(clean);
    await mkdir(this.opts.dataDir, { recursive: true });
    const tmp = `${this.hostsFile}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(hosts, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, this.hostsFile);
    return (await this.listHosts()).find((h) => h.alias === clean.alias)!;
  }

  async removeHost(alias: string): Promise<void> {
    const hosts = await this.appHosts();
    if (!hosts.some((h) => h.alias === alias)) throw new CodedError('not_found', `no host named ${JSON.stringify(alias)} was added in the app`);
    await writeFile(this.hostsFile, JSON.stringify(hosts.filter((h) => h.alias !== alias), null, 2) + '\n', { mode: 0o600 });
  }

  /** The interpreter for a host: the run's choice, the app host's, then the default; always a Python (python-path.ts). */
  async pythonFor(alias: string, override?: string): Promise<string> {
    if (override) return checkPythonPath(override);
    const app = (await this.appHosts()).find((h) => h.alias === alias);
    return checkPythonPath(app?.python ?? this.opts.python ?? 'python3');
  }

  /**
   * Refuses a host that is not in the user's list (an alias of ~/.ssh/config, a host added in the
   * app, or local). The window may only reach hosts the user named; the CLI, where the user types
   * the destination, may also give user@host:port.
   */
  async checkListed(alias: unknown): Promise<string> {
    const name = String(alias ?? '');
    if (!(await this.listHosts()).some((h) => h.alias === name)) {
      throw new CodedError('not_found', `no host ${JSON.stringify(name)} in your hosts (~/.ssh/config, the hosts added in KV Scope, or local): add it in Hosts first`, { field: 'host' });
    }
    return name;
  }

  async connect(alias: string): Promise<HostExec> {
    if (alias === LOCAL_HOST) return new LocalExec();
    const src = this.config();
    const app = (await this.appHosts()).find((h) => h.alias === alias);
    const session = await connectSsh({
      destination: alias,
      config: src,
      resolved: app ? this.resolvedApp(app, src) : undefined,
      knownHostsFile: this.opts.knownHostsFile,
      identityFile: this.opts.identityFile,
      prompts: this.prompts,
    });
    return new SshExec(session);
  }

  /** Where the Local host's run folders live (outside the runs library). */
  localRoot(): string {
    return join(this.opts.dataDir, 'local-agent');
  }

  async probe(alias: string, python?: string): Promise<HostProbe> {
    const exec = await this.connect(alias);
    try {
      const root = exec.isLocal ? this.localRoot() : this.opts.remoteRoot ?? '~/.cache/kvscope';
      return await probeWith(exec, { alias, python: await this.pythonFor(alias, python), agentSourceDir: this.opts.agentSourceDir, root });
    } finally {
      exec.close();
    }
  }

  agentBundle(): Promise<AgentBundle> {
    this.bundle ??= bundleAgent(this.opts.agentSourceDir);
    return this.bundle;
  }

  /** Connects and makes sure this agent version is on the host. */
  async prepare(alias: string, onDeploy?: (p: DeployProgress) => void): Promise<PreparedHost> {
    const exec = await this.connect(alias);
    try {
      if (exec instanceof SshExec) {
        const d = await deployAgent(exec.session, await this.agentBundle(), { root: this.opts.remoteRoot, onProgress: onDeploy });
        return { exec, agentDir: d.agentDir, root: d.root };
      }
      if (!existsSync(join(this.opts.agentSourceDir, 'kvscope_agent'))) throw new CodedError('not_found', `no agent at ${this.opts.agentSourceDir}`);
      return { exec, agentDir: this.opts.agentSourceDir, root: this.localRoot() };
    } catch (e) {
      exec.close();
      throw e;
    }
  }

  /** The absolute root (agent folders, runs/) on a connected host. */
  async rootOn(exec: HostExec): Promise<string> {
    if (exec.isLocal) return this.localRoot();
    const r = await exec.exec('printf %s "$HOME"');
    const home = r.stdout.toString();
    if (r.code !== 0 || !home.startsWith('/')) throw new CodedError('ssh_error', `cannot find the home folder on ${exec.label}`);
    return resolveRoot(home, this.opts.remoteRoot);
  }
}
