/**
 * A running run's progress line from its events as they arrive: the stage, how far through the
 * work it is (the context round counts as one round of rounds + 1, each request done a share of
 * its round), and an ETA from the pace so far. The context round alone can take most of a short
 * run; it had no progress or ETA. Pure (wall times in ms are passed in), unit-tested on real runs.
 */
import type { KvEvent } from '../../shared/protocol';

export interface ProgressLine {
  stage: string;
  /** 0..1 over the context round and the timed rounds; null before run.start says how many. */
  fraction: number | null;
  etaS: number | null;
  message: string;
}

/** What each agent phase is doing, in words. */
const STAGE_TEXT: Record<string, string> = {
  setup: 'setting up',
  load_model: 'building the model',
  context: 'context round',
  rounds: 'rounds',
  teardown: 'finishing',
};

export class RunProgress {
  private rounds: number | null = null;
  private users: number | null = null;
  private stage = 'start';
  /** Rounds finished, the context round (round 0) included. */
  private finished = 0;
  /** Requests done in the round under way. */
  private doneInRound = new Set<number>();
  private round = 0;
  /** Wall time the context round began (the pace is measured from there). */
  private workFrom: number | null = null;
  /** run.end's status, once it came. */
  private ended: string | null = null;

  /** Takes one event; true when it moves the progress enough to report at once (a phase, a round, a request done). */
  note(e: KvEvent, wallMs: number): boolean {
    if (e.type === 'run.start') {
      const c = e.config as { rounds?: unknown; users?: unknown };
      this.rounds = typeof c.rounds === 'number' ? c.rounds : null;
      this.users = typeof c.users === 'number' ? c.users : null;
      return false;
    }
    if (e.type === 'phase' && e.state === 'begin') {
      this.stage = e.name;
      if (e.name === 'context') this.workFrom ??= wallMs;
      return true;
    }
    if (e.type === 'run.end') {
      this.stage = 'end';
      this.ended = e.status;
      return true;
    }
    if (e.type === 'round') {
      this.finished = Math.max(this.finished, e.round + 1);
      this.round = e.round + 1;
      this.doneInRound.clear();
      return true;
    }
    if (e.type === 'req' && e.phase === 'done') {
      if (e.round !== this.round) {
        this.round = e.round;
        this.doneInRound.clear();
      }
      this.doneInRound.add(e.user);
      this.workFrom ??= wallMs;
      return true;
    }
    return false;
  }

  /** The progress line now. */
  line(wallMs: number): ProgressLine {
    const stage = this.stage;
    const total = this.rounds !== null ? this.rounds + 1 : null;
    if (total === null) return { stage, fraction: null, etaS: null, message: STAGE_TEXT[stage] ?? stage };
    const partial = this.users && this.finished < total ? Math.min(1, this.doneInRound.size / this.users) : 0;
    const fraction = Math.min(1, (this.finished + partial) / total);
    const elapsed = this.workFrom !== null ? wallMs - this.workFrom : 0;
    const etaS = fraction > 0 && fraction < 1 && elapsed > 0 ? Math.round(((elapsed / fraction) * (1 - fraction)) / 1000) : null;
    const inRound = this.users ? ` (${this.doneInRound.size}/${this.users} users done)` : '';
    let message: string;
    if (stage === 'context') message = `context round: ${this.doneInRound.size}${this.users ? `/${this.users}` : ''} users' contexts prefilled`;
    else if (this.ended !== null) message = this.ended === 'ok' ? 'done' : this.ended;
    else if (stage === 'rounds') message = this.finished > this.rounds! ? `rounds: all ${this.rounds} done` : `round ${Math.max(1, this.round)}/${this.rounds}${inRound}`;
    else message = STAGE_TEXT[stage] ?? stage;
    return { stage, fraction, etaS, message };
  }
}
