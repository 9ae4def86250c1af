/**
 * Runs opened in the window: loaded once through the API from the run's index (its replay model's
 * columns, used where they arrive; the timeline model is built on first use), and kept up to date from pushed `run-events` batches. Pushes are
 * buffered here, outside React, and applied in one batch per animation frame; React only hears a
 * version number, at most a few times a second (docs/window.md, "Conventions": events from main arrive in batches and
 * are buffered outside React).
 */
import type { KvScopeApi, LoadedRun, PushMessage, RunListing } from '../shared/api';
import type { KvEvent } from '../shared/protocol';
import { ReplayModel } from '../shared/replay';
import { RunAnalyzer } from '../shared/run-analysis';
import type { LoadRunStreaming } from './bridge/ws-bridge';
import { buildTimelineModel, type TimelineModel } from '../shared/timeline-model';
import { decodeRunIndexAsync, runIndexHeader } from '../shared/run-index/run-index';
import { inflateRaw } from '../shared/run-index/inflate-raw';

export interface RunData {
  id: string;
  /**
   * The loaded run without its event objects: they are compiled into `replay` (typed columns) and
   * dropped, so a run of a million copies does not keep a million objects alive for the GC to walk.
   */
  loaded: Omit<LoadedRun, 'events'> & { eventCount: number };
  replay: ReplayModel;
  status: RunListing['status'];
  /** Bumped on every applied batch. */
  version: number;
  timeline(): TimelineModel;
}

type Listener = (d: RunData) => void;

/**
 * A run that grows while it is open: the analysis main made at load time covers only the lines it
 * had then, so the Summary, the header and the legend would stay at that moment ("No requests in
 * this run" for a run opened as it started). Its analysis goes on here, fed each pushed batch, from
 * the analyzer the run's index carries when the core follows the run (docs/run-index.md): the one
 * the run was opened from, or, for a run that starts growing later (opened before it was followed,
 * a requeued job's new attempt, `?open=log`), one asked of the core then. Never from the log.
 */
interface GrowingRun {
  analyzer: RunAnalyzer | null;
  /** seq of the last line the analyzer has. */
  lastSeq: number;
  /** Batches pushed while the seed loads. */
  backlog: KvEvent[];
}

const FINISHED: ReadonlySet<RunListing['status']> = new Set(['ok', 'error', 'cancelled']);

export class RunDataCache {
  private readonly runs = new Map<string, Promise<RunData>>();
  private readonly ready = new Map<string, RunData>();
  private readonly pending = new Map<string, KvEvent[]>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly growing = new Map<string, GrowingRun>();
  /** How many times each run's listing was asked for again (refreshListing). */
  private readonly listingAsks = new Map<string, number>();
  /** Runs being opened, with the core's last indexing progress (null: none heard). */
  private readonly opening = new Map<string, number | null>();
  private readonly openingListeners = new Set<(id: string) => void>();
  private flushScheduled = false;
  private unsubscribe: (() => void) | null = null;

  /** `from`: open runs from their index (the app) or from their log (the reference path, `?open=log`). */
  constructor(
    private readonly api: KvScopeApi,
    private readonly from: 'index' | 'log' = 'index',
  ) {}

  private ensureSubscribed(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.api.onPush((m: PushMessage) => {
      if (m.kind === 'run-events') {
        const buf = this.pending.get(m.runId) ?? [];
        for (const e of m.events) buf.push(e);
        this.pending.set(m.runId, buf);
        this.scheduleFlush();
      } else if (m.kind === 'progress' && m.stage === 'index' && this.opening.has(m.runId)) {
        this.opening.set(m.runId, m.fraction);
        for (const l of this.openingListeners) l(m.runId);
      } else if (m.kind === 'run-status') {
        const d = this.ready.get(m.runId);
        if (d) {
          d.status = m.status;
          // A requeued Slurm job runs the benchmark again from its start: its log begins anew.
          if (m.restarted) {
            d.replay = new ReplayModel();
            d.loaded.eventCount = 0;
            this.pending.delete(m.runId);
            timelines.delete(d);
            // Its analysis too: the next batch seeds it from the new attempt's index.
            this.growing.delete(m.runId);
          }
          d.version++;
          this.notify(d);
          // The listing's status and results are main's (meta.json and the log): ask again at the end.
          if (FINISHED.has(m.status) && this.growing.has(d.id)) this.refreshListing(d);
        }
      }
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    requestAnimationFrame(() => {
      this.flushScheduled = false;
      for (const [id, batch] of this.pending) {
        const d = this.ready.get(id);
        if (!d) {
          // Loading: kept, and applied once the load lands (lines it already has are skipped).
          // Not opened at all: dropped; opening it later reads them from disk.
          if (!this.runs.has(id)) this.pending.delete(id);
          continue;
        }
        this.pending.delete(id);
        const before = d.replay.lastSeqSeen;
        // The replay skips lines it has (seq ≤ its last), so a resumed tail never double-applies.
        d.replay.append(batch);
        if (d.replay.lastSeqSeen === before) continue;
        const fresh = batch.filter((e) => e.seq > before);
        d.loaded.eventCount += fresh.length;
        timelines.delete(d);
        this.analyseGrowth(d, fresh);
        d.version++;
        this.notify(d);
      }
    });
  }

  /** Keeps `d.loaded.analysis` (and the listing, when run.start or run.end arrives) current as lines arrive. */
  private analyseGrowth(d: RunData, fresh: KvEvent[]): void {
    let g = this.growing.get(d.id);
    if (!g) {
      g = { analyzer: null, lastSeq: -1, backlog: [...fresh] };
      this.growing.set(d.id, g);
      void this.seedGrowth(d, g);
      return;
    }
    if (!g.analyzer) {
      for (const e of fresh) g.backlog.push(e);
      return;
    }
    if (this.feed(d, g, fresh)) this.refreshListing(d);
  }

  /** @returns whether a line the listing is made from (run.start, run.end) arrived. */
  private feed(d: RunData, g: GrowingRun, events: readonly KvEvent[]): boolean {
    const a = g.analyzer!;
    let listingLines = false;
    for (const e of events) {
      if (e.seq <= g.lastSeq) continue;
      g.lastSeq = e.seq;
      a.push(e);
      if (e.type === 'run.start' || e.type === 'run.end') listingLines = true;
      if (e.type === 'run.end') a.finish();
    }
    d.loaded.analysis = a.result();
    return listingLines;
  }

  /** The analyzer of the run's index as the core has it now (its header only: no column is read). */
  private async seedGrowth(d: RunData, g: GrowingRun): Promise<void> {
    const r = await this.api.loadRunIndex(d.id);
    // Forgotten, or a requeued job started over while this loaded: a later batch seeds anew.
    if (this.growing.get(d.id) !== g) return;
    if (!r.ok || this.ready.get(d.id) !== d) {
      // Could not read it again: the next batch tries anew.
      this.growing.delete(d.id);
      return;
    }
    const header = runIndexHeader(r.value.index);
    d.loaded.listing = r.value.listing;
    const backlog = g.backlog;
    g.backlog = [];
    if (!header.analyzer) {
      // Not followed by the core any more: the index is its log's, whole. It holds every line
      // pushed (each is on disk before it is pushed), so its analysis is the run's; a later batch,
      // should one come, seeds anew.
      this.growing.delete(d.id);
      if (backlog.every((e) => e.seq <= header.lastSeq)) d.loaded.analysis = header.analysis;
    } else {
      g.analyzer = RunAnalyzer.fromState(header.analyzer);
      g.lastSeq = header.lastSeq;
      if (this.feed(d, g, backlog)) this.refreshListing(d);
    }
    d.version++;
    this.notify(d);
  }

  /**
   * Asks for the run's listing again. Only the answer to the latest ask is taken: answers can come
   * back out of order (a list read as run.end arrived, while meta.json still said running, landing
   * after the one read at the run's end would put the run back to running).
   */
  private refreshListing(d: RunData): void {
    const ask = (this.listingAsks.get(d.id) ?? 0) + 1;
    this.listingAsks.set(d.id, ask);
    void this.api.listRuns().then((r) => {
      if (this.listingAsks.get(d.id) !== ask) return;
      const l = r.ok ? r.value.find((x) => x.id === d.id) : undefined;
      if (!l || this.ready.get(d.id) !== d) return;
      d.loaded.listing = l;
      d.version++;
      this.notify(d);
    });
  }

  private notify(d: RunData): void {
    for (const l of this.listeners.get(d.id) ?? []) l(d);
  }

  /** Loads (once) and returns the run; rejects with the API's message. */
  open(id: string): Promise<RunData> {
    this.ensureSubscribed();
    let p = this.runs.get(id);
    if (!p) {
      p = (this.from === 'log' ? this.loadFromLog(id) : this.loadFromIndex(id)).then(
        (d) => {
          this.opening.delete(id);
          this.ready.set(id, d);
          if (this.pending.has(id)) this.scheduleFlush();
          return d;
        },
        (e: Error) => {
          this.opening.delete(id);
          this.runs.delete(id);
          throw e;
        },
      );
      this.opening.set(id, null);
      this.runs.set(id, p);
    }
    return p;
  }

  /** The run's index (docs/run-index.md): its columns are used where they arrived, nothing is compiled. */
  private async loadFromIndex(id: string): Promise<RunData> {
    const r = await this.api.loadRunIndex(id);
    if (!r.ok) throw new Error(r.error.message);
    // The benchmarks (bench/renderer-*) time the views from here: the run is in the window.
    performance.mark(`kvscope:run-loaded:${id}`);
    const { content } = await decodeRunIndexAsync(r.value.index, inflateRaw);
    performance.mark(`kvscope:replay-compiled:${id}`);
    const { replay, analyzer, ...rest } = content;
    // A run the core follows: its analysis goes on from here as lines are pushed.
    if (analyzer) this.growing.set(id, { analyzer: RunAnalyzer.fromState(analyzer), lastSeq: replay.lastSeqSeen, backlog: [] });
    return runData(id, { listing: r.value.listing, ...rest }, replay);
  }

  /**
   * The run from its log, every event compiled here (`?open=log` in the page address): what
   * opening was before indexes, kept as the reference the index is tested and benchmarked against.
   */
  private async loadFromLog(id: string): Promise<RunData> {
    const streaming = (this.api as unknown as { loadRunStreaming?: LoadRunStreaming }).loadRunStreaming;
    // Through the browser bridge the events arrive in chunks, each compiled into the replay and
    // dropped; otherwise (Electron IPC) they come whole and are compiled, then dropped.
    const replay = new ReplayModel();
    let eventCount = 0;
    const r = await (streaming
      ? streaming(id, (chunk) => {
          replay.append(chunk);
          eventCount += chunk.length;
        })
      : this.api.loadRun(id));
    if (!r.ok) throw new Error(r.error.message);
    const { events, ...rest } = r.value;
    performance.mark(`kvscope:run-loaded:${id}`);
    replay.append(events);
    eventCount += events.length;
    performance.mark(`kvscope:replay-compiled:${id}`);
    return runData(id, { ...rest, eventCount }, replay);
  }

  /**
   * How far the core is through indexing a run being opened (0..1), or null when it has said
   * nothing (the index was there); undefined once the run is open or not being opened.
   */
  openingProgress(id: string): number | null | undefined {
    return this.opening.has(id) ? this.opening.get(id)! : undefined;
  }

  /** Hears openingProgress changes; returns the remover. */
  listenOpening(l: (id: string) => void): () => void {
    this.openingListeners.add(l);
    return () => this.openingListeners.delete(l);
  }

  /** Forgets a run (deleted or renamed) so the next open reloads it. */
  forget(id: string): void {
    this.runs.delete(id);
    this.ready.delete(id);
    this.growing.delete(id);
  }

  listen(id: string, l: Listener): () => void {
    const set = this.listeners.get(id) ?? new Set();
    set.add(l);
    this.listeners.set(id, set);
    return () => set.delete(l);
  }
}

const timelines = new WeakMap<RunData, TimelineModel>();

function runData(id: string, loaded: RunData['loaded'], replay: ReplayModel): RunData {
  const d: RunData = {
    id,
    loaded,
    replay,
    status: loaded.listing.status,
    version: 0,
    timeline: () => {
      let t = timelines.get(d);
      if (!t) {
        performance.mark(`kvscope:timeline-build-start:${id}`);
        t = buildTimelineModel([], d.replay);
        performance.mark(`kvscope:timeline-built:${id}`);
        timelines.set(d, t);
      }
      return t;
    },
  };
  return d;
}
