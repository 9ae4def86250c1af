/**
 * The bridge methods (hosts, probe, prompts, runs, sweeps) on top of HostService,
 * RunManager and the sweep runner. Questions for the user (an unknown host key, a key passphrase, a
 * password) go out as `{kind:'prompt'}` pushes and come back through answerHostKey /
 * providePassphrase; an unanswered question times out and the connection attempt fails. Answers
 * are held in memory only until the waiting connection takes them.
 */
import { randomBytes } from 'node:crypto';
import type { CoreHandlers, HostPrompt, PushMessage } from '../../shared/api';
import { CodedError, toResult } from '../../shared/result';
import { HostService, type HostServiceOptions } from './hosts';
import { markOrphanedRuns, RunManager } from './runs';
import type { RunStore } from './run-store';
import type { ConnectPrompts } from './ssh/connect';
import { SweepRunner } from './sweep';
import { withSlurm } from './slurm';

type HostMethods = 'listHosts' | 'saveHost' | 'removeHost' | 'saveCluster' | 'probeHost' | 'answerHostKey' | 'providePassphrase' | 'startRun' | 'cancelRun' | 'resumeRun' | 'startSweep';

export interface HostHandlerOptions {
  store: RunStore;
  push: (m: PushMessage) => void;
  dataDir: string;
  agentSourceDir: string;
  /** How long a prompt waits for the user (default 5 minutes). */
  promptTimeoutMs?: number;
  /** passphrases/passwords kept for the session (and remembered through the keychain when asked). */
  secrets?: PromptSecrets;
  host?: Partial<Omit<HostServiceOptions, 'prompts' | 'dataDir' | 'agentSourceDir'>>;
}

/** Where answered secrets are kept (core/secrets.ts SecretStore satisfies it). */
export interface PromptSecrets {
  get(key: string): Promise<string | null>;
  set(key: string, secret: string, options?: { remember?: boolean }): Promise<unknown>;
  forget(key: string): Promise<void>;
}

/** Pending questions, answered by id. */
export class PromptBroker {
  private readonly pending = new Map<string, { type: HostPrompt['type']; resolve: (v: boolean | string | null) => void }>();
  private readonly rememberAnswer = new Map<string, boolean>();

  constructor(
    private readonly push: (m: PushMessage) => void,
    private readonly timeoutMs = 300_000,
    private readonly secrets?: PromptSecrets,
  ) {}

  /**
   * A passphrase or password: the one given earlier this session (or remembered) on a first
   * attempt; a later attempt means it was wrong, so it is forgotten and the user is asked.
   */
  private async secretFor(key: string, attempt: number, prompt: HostPrompt): Promise<string | null> {
    if (this.secrets) {
      if (attempt <= 1) {
        const known = await this.secrets.get(key).catch(() => null);
        if (known !== null) return known;
      } else await this.secrets.forget(key).catch(() => undefined);
    }
    const answer = await this.ask<string | null>(prompt, null);
    const remember = this.rememberAnswer.get(prompt.id) ?? false;
    this.rememberAnswer.delete(prompt.id);
    if (answer !== null && this.secrets) await this.secrets.set(key, answer, { remember }).catch(() => undefined);
    return answer;
  }

  private ask<T extends boolean | string | null>(prompt: HostPrompt, onTimeout: T): Promise<T> {
    return new Promise<T>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(prompt.id);
        resolve(onTimeout);
      }, this.timeoutMs);
      this.pending.set(prompt.id, {
        type: prompt.type,
        resolve: (v) => {
          clearTimeout(timer);
          this.pending.delete(prompt.id);
          resolve(v as T);
        },
      });
      this.push({ kind: 'prompt', prompt });
    });
  }

  answer(id: string, type: 'host-key' | 'secret', value: boolean | string | null, remember = false): void {
    const p = this.pending.get(String(id));
    if (!p) throw new CodedError('not_found', `no open question ${JSON.stringify(id)} (it was answered or timed out)`);
    if ((type === 'host-key') !== (p.type === 'host-key')) throw new CodedError('invalid_argument', `question ${id} is a ${p.type} question`);
    if (remember) this.rememberAnswer.set(String(id), true);
    p.resolve(value);
  }

  prompts(): ConnectPrompts {
    const id = () => randomBytes(8).toString('hex');
    return {
      unknownHostKey: (q) =>
        this.ask<boolean>(
          {
            id: id(),
            type: 'host-key',
            host: q.host,
            hop: q.hop,
            keyType: q.keyType,
            fingerprint: q.fingerprint,
            message: `The authenticity of host ${q.hop} can't be established. ${q.keyType} key fingerprint is ${q.fingerprint}.${q.otherTypes.length ? ` (Keys of other types are known for it: ${q.otherTypes.join(', ')}.)` : ''} Trust it and remember it in known_hosts?`,
          },
          false,
        ),
      passphrase: (q) =>
        this.secretFor(`passphrase:${q.keyFile}`, q.attempt, { id: id(), type: 'passphrase', host: q.host, keyFile: q.keyFile, message: `${q.attempt > 1 ? 'Wrong passphrase. ' : ''}Passphrase for ${q.keyFile}:` }),
      password: (q) =>
        this.secretFor(`password:${q.user}@${q.host}`, q.attempt, { id: id(), type: 'password', host: q.host, user: q.user, message: `${q.attempt > 1 ? 'Permission denied. ' : ''}Password for ${q.user}@${q.host}:` }),
    };
  }
}

export function createHostHandlers(o: HostHandlerOptions): { handlers: Pick<CoreHandlers, HostMethods>; hosts: HostService; runs: RunManager; ready: Promise<unknown> } {
  const broker = new PromptBroker(o.push, o.promptTimeoutMs, o.secrets);
  const hosts = new HostService({ ...o.host, dataDir: o.dataDir, agentSourceDir: o.agentSourceDir, prompts: broker.prompts() });
  // Cluster hosts (Slurm login nodes) run as batch jobs through the scheduler (core/slurm).
  const runOptions = withSlurm({ store: o.store, hosts, push: o.push });
  const runs = new RunManager(runOptions);
  const slurm = runOptions.scheduler;
  const sweeps = new SweepRunner(runs, o.push);
  // Runs left "running" by a crashed app become "incomplete" (and resumable).
  const ready = markOrphanedRuns(o.store).catch(() => []);
  const handlers: Pick<CoreHandlers, HostMethods> = {
    listHosts: () => toResult(async () => slurm.o.clusters.annotate(await hosts.listHosts())),
    saveHost: (input) => toResult(() => hosts.saveHost(input)),
    removeHost: (alias) => toResult(() => hosts.removeHost(String(alias))),
    saveCluster: (alias, options) => toResult(() => slurm.o.clusters.saveFor(hosts, String(alias), options ?? null)),
    // Every call below that reaches a shell takes only a host the user listed (docs/desktop.md,
    // "What the window can run"): the window never names a destination of its own.
    probeHost: (alias, options) =>
      toResult(async () => {
        const host = await hosts.checkListed(alias);
        const base = await hosts.probe(host, typeof options?.python === 'string' ? options.python : undefined);
        return (await slurm.handles({ host, workload: {} })) ? slurm.o.clusters.probe(hosts, host, base) : base;
      }),
    answerHostKey: (promptId, accept) => toResult(() => broker.answer(String(promptId), 'host-key', accept === true)),
    providePassphrase: (promptId, secret, options) =>
      toResult(() => broker.answer(String(promptId), 'secret', typeof secret === 'string' ? secret : null, options?.remember === true)),
    startRun: (request) =>
      toResult(async () => {
        await ready;
        if (typeof request?.host === 'string' && request.host) await hosts.checkListed(request.host);
        return runs.start(request);
      }),
    cancelRun: (runId) =>
      toResult(async () => {
        await hosts.checkListed((await runs.followable(String(runId), 'cancel')).host);
        return runs.cancel(String(runId));
      }),
    resumeRun: (runId) =>
      toResult(async () => {
        await ready;
        await hosts.checkListed((await runs.followable(String(runId), 'resume')).host);
        return runs.resume(String(runId));
      }),
    startSweep: (request) =>
      toResult(async () => {
        for (const h of Array.isArray(request?.hosts) ? request.hosts : []) await hosts.checkListed(h);
        return sweeps.start(request);
      }),
  };
  return { handlers, hosts, runs, ready };
}
