/**
 * Deploy: the agent package uploaded over SFTP into a content-addressed folder,
 * `<root>/agent-<hash>/kvscope_agent/` (root defaults to ~/.cache/kvscope), so a second run
 * uploads nothing and a changed agent never mixes with an old one. The upload goes to a private
 * temp folder that is renamed into place only once complete (with a `.complete` marker written
 * last), so two deploys to one host at once are safe: whoever renames second finds the folder
 * there, removes its own copy and uses the winner's, which holds the same bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, posix, relative, sep } from 'node:path';
import type { SFTPWrapper } from 'ssh2';
import { CodedError } from '../../shared/result';
import type { SshSession } from './ssh/connect';
import { shellCommand } from './shell-quote';

export interface AgentBundle {
  /** Folder holding the `kvscope_agent` package (resources/agent). */
  sourceDir: string;
  files: Array<{ rel: string; abs: string; size: number }>;
  totalBytes: number;
  /** First 16 hex digits of SHA-256 over every file's path and bytes. */
  hash: string;
}

const SKIP = /(^|\/)(__pycache__|tests?|\.pytest_cache)(\/|$)|\.pyc$|\.so$|\.o$/;

/** Lists and hashes the agent package under `sourceDir` (only kvscope_agent/, no caches or tests). */
export async function bundleAgent(sourceDir: string): Promise<AgentBundle> {
  const files: AgentBundle['files'] = [];
  async function walk(dir: string): Promise<void> {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const abs = join(dir, e.name);
      const rel = relative(sourceDir, abs).split(sep).join('/');
      if (SKIP.test(rel)) continue;
      if (e.isDirectory()) await walk(abs);
      else if (e.isFile()) files.push({ rel, abs, size: (await stat(abs)).size });
    }
  }
  await walk(join(sourceDir, 'kvscope_agent'));
  if (!files.some((f) => f.rel === 'kvscope_agent/__main__.py')) throw new CodedError('not_found', `no agent package at ${sourceDir}/kvscope_agent`);
  const h = createHash('sha256');
  for (const f of files) {
    h.update(f.rel + '\0');
    h.update(await readFile(f.abs));
    h.update('\0');
  }
  return { sourceDir, files, totalBytes: files.reduce((s, f) => s + f.size, 0), hash: h.digest('hex').slice(0, 16) };
}

export interface DeployProgress {
  uploadedBytes: number;
  totalBytes: number;
  reused: boolean;
}

export interface Deployed {
  /** Absolute folder on the host that goes on PYTHONPATH. */
  agentDir: string;
  /** Absolute root (agent folders and runs/ live here). */
  root: string;
  home: string;
  reused: boolean;
}

const p = <T>(fn: (cb: (e: Error | null | undefined, v?: T) => void) => void): Promise<T> =>
  new Promise((resolve, reject) => fn((e, v) => (e ? reject(e) : resolve(v as T))));

async function exists(sftp: SFTPWrapper, path: string): Promise<boolean> {
  try {
    await p((cb) => sftp.stat(path, cb));
    return true;
  } catch {
    return false;
  }
}

async function mkdirp(sftp: SFTPWrapper, path: string): Promise<void> {
  const parts = path.split('/').filter(Boolean);
  let cur = '';
  for (const part of parts) {
    cur += '/' + part;
    if (await exists(sftp, cur)) continue;
    try {
      await p((cb) => sftp.mkdir(cur, { mode: 0o700 }, cb));
    } catch (e) {
      // Another deploy may have made it in between.
      if (!(await exists(sftp, cur))) throw new CodedError('io_error', `cannot create ${cur} on the host: ${(e as Error).message}`);
    }
  }
}

/** Resolves the remote root: an absolute path as given, else relative to the SFTP home. */
export function resolveRoot(home: string, root: string | undefined): string {
  const r = root ?? '.cache/kvscope';
  return r.startsWith('/') ? posix.normalize(r) : posix.join(home, r.replace(/^~\//, ''));
}

/** Uploads the agent if the host lacks this exact version. */
export async function deployAgent(session: SshSession, bundle: AgentBundle, opts: { root?: string; onProgress?: (p: DeployProgress) => void } = {}): Promise<Deployed> {
  const sftp = await session.sftp();
  try {
    const home = await p<string>((cb) => sftp.realpath('.', cb));
    const root = resolveRoot(home, opts.root);
    const final = posix.join(root, `agent-${bundle.hash}`);
    const marker = posix.join(final, '.complete');
    if (await exists(sftp, marker)) {
      opts.onProgress?.({ uploadedBytes: bundle.totalBytes, totalBytes: bundle.totalBytes, reused: true });
      return { agentDir: final, root, home, reused: true };
    }
    await mkdirp(sftp, root);
    const tmp = posix.join(root, `.agent-${bundle.hash}.tmp-${randomBytes(6).toString('hex')}`);
    await p((cb) => sftp.mkdir(tmp, { mode: 0o700 }, cb));
    let uploaded = 0;
    const made = new Set<string>([tmp]);
    for (const f of bundle.files) {
      const dest = posix.join(tmp, f.rel);
      const dir = posix.dirname(dest);
      if (!made.has(dir)) {
        await mkdirp(sftp, dir);
        made.add(dir);
      }
      const data = await readFile(f.abs);
      await p((cb) => sftp.writeFile(dest, data, { mode: 0o644 }, cb));
      uploaded += f.size;
      opts.onProgress?.({ uploadedBytes: uploaded, totalBytes: bundle.totalBytes, reused: false });
    }
    await p((cb) => sftp.writeFile(posix.join(tmp, '.complete'), `${bundle.hash}\n`, cb));
    try {
      await p((cb) => sftp.rename(tmp, final, cb));
      return { agentDir: final, root, home, reused: false };
    } catch (e) {
      // Lost the race to a concurrent deploy of the same hash: theirs is identical, use it.
      await session.exec(shellCommand(['rm', '-rf', '--', tmp]));
      if (await exists(sftp, marker)) return { agentDir: final, root, home, reused: true };
      throw new CodedError('io_error', `cannot move the agent into ${final}: ${(e as Error).message}`);
    }
  } finally {
    sftp.end();
  }
}
