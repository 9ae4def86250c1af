/**
 * Start-up copies: the copies a run makes before its workload, above all the agent's plain
 * pinned-copy check (`KvCache.measure_plain_copy`: a user's worth of blocks GPU pool → host pool
 * and back, three times each way, CUPTI-traced like any copy). They carry no KV block, so every KV
 * figure (bytes moved, bandwidth against the link, flows, bytes in flight) leaves them out and the
 * views show them apart, labelled.
 *
 * How the log marks them (docs/protocol.md "Start-up copies"): the agent measures the check inside
 * the `setup` phase, before any block line, so a copy is a start-up copy when it starts before
 * `setup` ends — or while `setup` is still open (its xfer line can be written after `setup` ends,
 * CUPTI flushes late, but its `start` is on the run clock). A log without a `setup` phase (an
 * engine runner's) has none.
 */
import type { KvEvent } from './protocol';

export class StartupCopyRule {
  private began = false;
  private end: number | null = null;

  /** Every line, in seq order. */
  observe(e: KvEvent): void {
    if (e.type !== 'phase' || e.name !== 'setup') return;
    if (e.state === 'begin') this.began = true;
    else this.end = e.t;
  }

  /** What it has observed, as plain data (a run index keeps it), and back. */
  get state(): { began: boolean; end: number | null } {
    return { began: this.began, end: this.end };
  }

  restore(s: { began: boolean; end: number | null }): void {
    this.began = s.began;
    this.end = s.end;
  }

  /** Whether a copy (an xfer line read after the lines before it were observed) is a start-up copy. */
  isStartup(copy: { start: number }): boolean {
    if (this.end !== null) return copy.start < this.end;
    return this.began;
  }
}

/** The label the views and exports give them. */
export const STARTUP_COPIES_LABEL = 'start-up copy check (not KV)';
