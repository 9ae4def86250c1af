/**
 * Where commands run: over an SSH session, or on this machine for the Local host. Remote-run,
 * probe and clean speak only this interface, so the Local host goes through exactly the same
 * launcher, tail and cancel scripts as a GPU host (and survives an app crash the same way).
 */
import { spawn } from 'node:child_process';
import { OutputCollector, type ExecOptions, type ExecResult, type SshSession } from './connect';

export interface StreamHandle {
  /** Resolves when the command has exited and its output is drained. */
  done: Promise<{ code: number | null; signal: string | null; stderr: string }>;
  /** Stops reading (closes the channel / kills the local helper). */
  stop(): void;
}

export interface HostExec {
  /** "local" or the SSH alias, for messages. */
  readonly label: string;
  readonly isLocal: boolean;
  /** Runs a command to its end; output past `options.maxOutputBytes` fails the call (`too_large`). */
  exec(command: string, stdin?: string | Buffer, options?: ExecOptions): Promise<ExecResult>;
  /** Runs a command whose stdout is a byte stream handed to `onData` as it arrives. */
  stream(command: string, stdin: string | Buffer | undefined, onData: (chunk: Buffer) => void): Promise<StreamHandle>;
  /** Resolves (with a reason) when the transport is gone. Never for Local. */
  readonly gone: Promise<string>;
  close(): void;
}

export class SshExec implements HostExec {
  readonly isLocal = false;
  constructor(readonly session: SshSession) {}
  get label(): string {
    return this.session.target.alias;
  }
  get gone(): Promise<string> {
    return this.session.closedPromise;
  }
  exec(command: string, stdin?: string | Buffer, options?: ExecOptions): Promise<ExecResult> {
    return this.session.exec(command, stdin, options);
  }
  async stream(command: string, stdin: string | Buffer | undefined, onData: (chunk: Buffer) => void): Promise<StreamHandle> {
    const ch = await this.session.execChannel(command);
    let stderr = '';
    ch.stderr.on('data', (b: Buffer) => {
      if (stderr.length < 64_000) stderr += b.toString('utf8');
    });
    ch.on('data', onData);
    const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) => {
      let code: number | null = null;
      let signal: string | null = null;
      ch.on('exit', (c: number | null, s?: string) => {
        code = c;
        signal = s ?? null;
      });
      ch.on('close', () => resolve({ code, signal, stderr }));
      // A dropped connection closes the channel without an exit status: code stays null.
      void this.session.closedPromise.then(() => resolve({ code, signal, stderr }));
    });
    if (stdin !== undefined) ch.end(stdin);
    else ch.end();
    return { done, stop: () => ch.close() };
  }
  close(): void {
    this.session.close();
  }
}

export class LocalExec implements HostExec {
  readonly label = 'local';
  readonly isLocal = true;
  readonly gone = new Promise<string>(() => undefined);
  exec(command: string, stdin?: string | Buffer, options: ExecOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const p = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'] });
      const collect = new OutputCollector(this.label, command, options.maxOutputBytes);
      const onData = (into: Buffer[]) => (b: Buffer) => {
        const over = collect.add(into, b);
        if (over) {
          p.kill('SIGKILL');
          reject(over);
        }
      };
      p.stdout.on('data', onData(collect.out));
      p.stderr.on('data', onData(collect.err));
      p.on('error', reject);
      p.on('close', (code, signal) => resolve(collect.result(code, signal)));
      p.stdin.on('error', () => undefined);
      p.stdin.end(stdin ?? '');
    });
  }
  async stream(command: string, stdin: string | Buffer | undefined, onData: (chunk: Buffer) => void): Promise<StreamHandle> {
    const p = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    p.stdout.on('data', onData);
    p.stderr.on('data', (b: Buffer) => {
      if (stderr.length < 64_000) stderr += b.toString('utf8');
    });
    p.stdin.on('error', () => undefined);
    p.stdin.end(stdin ?? '');
    const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) => {
      p.on('error', (e) => resolve({ code: null, signal: null, stderr: e.message }));
      p.on('close', (code, signal) => resolve({ code, signal, stderr }));
    });
    return { done, stop: () => p.kill('SIGTERM') };
  }
  close(): void {
    /* nothing to close */
  }
}
