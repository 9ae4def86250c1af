/**
 * Where each request's TTFT went: the one computation the request panel, the Summary's per-round
 * chart, the CSV export and the Perfetto export all read, so the four show the same numbers.
 *
 * From `ttft_parts` where the engine recorded them on `first_token` (docs/protocol.md, "Where a
 * request's TTFT went": critical-path wall clock, summing to the TTFT). A log without them (every
 * version 1 log the app has, engines that do not write them) is split only where the log says so:
 * the wait for admission (queued → scheduled) and the rest (admitted → first token) as one part,
 * with the token counts of the `done` line and the blocks its onboard lines moved; the time each
 * tier took is "not recorded", never estimated.
 */
import type { RequestPhaseTimes, TtftParts } from './protocol';

/** What a request's breakdown is made from: its phase times and the fields of its first_token and done lines. */
export interface BreakdownInput extends RequestPhaseTimes {
  ttft_parts: TtftParts | null;
  reused_gpu_tokens: number | null;
  reused_host_tokens: number | null;
  reused_disk_tokens: number | null;
  computed_tokens: number | null;
  /** Blocks the log moved host → GPU for this request. */
  blocks_onboarded: number;
}

/** A tier's share: blocks and bytes brought up from it, prompt tokens they hold, and the ns they held the first token back (null: not recorded). */
export interface TierShare {
  blocks: number | null;
  bytes: number | null;
  tokens: number | null;
  ns: number | null;
}

export interface TtftBreakdown {
  user: number;
  round: number;
  /** recorded: the engine's `ttft_parts`; derived: phase times and token counts only (no time per tier); none: no first token yet. */
  source: 'recorded' | 'derived' | 'none';
  /** first_token − queued (the queued TTFT); null without both. */
  ttft_ns: number | null;
  /** Waiting for admission. */
  queued_ns: number | null;
  /** Blocks (and prompt tokens) found on the GPU: no time of their own. */
  gpu_hit: { blocks: number | null; tokens: number | null };
  host_reload: TierShare;
  disk_promote: TierShare;
  recompute: { tokens: number | null; ns: number | null };
  /** The rest: the first token's own step, scheduling (recorded only). */
  other_ns: number | null;
  /** Derived only: admitted → first token, which a log without ttft_parts does not split. */
  unsplit_ns: number | null;
  /**
   * Host → GPU bytes per second of the reload, where its ns is a copy time: not when blocks were
   * promoted from disk in the same request (then host_reload.ns is the tail after the last disk
   * read, docs/protocol.md, and no rate).
   */
  host_reload_bytes_per_s: number | null;
}

const diff = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : b - a);

/** A request's breakdown; `blockBytes` is the GPU pool's block size (bytes of the derived host reload), null where unknown. */
export function ttftBreakdown(r: BreakdownInput, blockBytes: number | null): TtftBreakdown {
  const ttft = diff(r.queued, r.first_token);
  const base = { user: r.user, round: r.round, ttft_ns: ttft };
  const p = r.ttft_parts;
  if (p) {
    const host = p.host_reload ?? { blocks: 0, bytes: 0, ns: 0 };
    const disk = p.disk_promote ?? { blocks: 0, bytes: 0, ns: 0 };
    const pipelined = disk.blocks > 0;
    return {
      ...base,
      source: 'recorded',
      queued_ns: p.queued_ns,
      gpu_hit: { blocks: p.gpu_hit_blocks ?? 0, tokens: r.reused_gpu_tokens },
      host_reload: { blocks: host.blocks, bytes: host.bytes, tokens: r.reused_host_tokens, ns: host.ns },
      disk_promote: { blocks: disk.blocks, bytes: disk.bytes, tokens: r.reused_disk_tokens, ns: disk.ns },
      recompute: { tokens: p.recompute?.tokens ?? 0, ns: p.recompute?.ns ?? 0 },
      other_ns: p.other_ns,
      unsplit_ns: null,
      host_reload_bytes_per_s: !pipelined && host.ns > 0 && host.bytes > 0 ? (host.bytes / host.ns) * 1e9 : null,
    };
  }
  const none = ttft === null;
  return {
    ...base,
    source: none ? 'none' : 'derived',
    queued_ns: none ? null : diff(r.queued, r.scheduled),
    gpu_hit: { blocks: null, tokens: r.reused_gpu_tokens },
    host_reload: { blocks: r.blocks_onboarded, bytes: blockBytes === null ? null : r.blocks_onboarded * blockBytes, tokens: r.reused_host_tokens, ns: null },
    disk_promote: { blocks: null, bytes: null, tokens: r.reused_disk_tokens, ns: null },
    recompute: { tokens: r.computed_tokens, ns: null },
    other_ns: null,
    unsplit_ns: none ? null : diff(r.scheduled, r.first_token),
    host_reload_bytes_per_s: null,
  };
}

/** The parts that take time, in critical-path order, as the chart stacks them and the exports name them. */
export const TTFT_TIME_PARTS = ['queued', 'disk_promote', 'host_reload', 'recompute', 'other', 'unsplit'] as const;
export type TtftTimePart = (typeof TTFT_TIME_PARTS)[number];

export const TTFT_PART_LABEL: Record<TtftTimePart, string> = {
  queued: 'queued',
  disk_promote: 'promoted from disk',
  host_reload: 'reloaded from host',
  recompute: 'recomputed',
  other: 'first token (its step, scheduling)',
  unsplit: 'admitted → first token (not split: no ttft_parts in the log)',
};

/** The ns of one time part (null where it is not recorded). */
export function partNs(b: TtftBreakdown, part: TtftTimePart): number | null {
  switch (part) {
    case 'queued':
      return b.queued_ns;
    case 'disk_promote':
      return b.disk_promote.ns;
    case 'host_reload':
      return b.host_reload.ns;
    case 'recompute':
      return b.recompute.ns;
    case 'other':
      return b.other_ns;
    case 'unsplit':
      return b.unsplit_ns;
  }
}

/** One round's mean of each time part over its requests with a TTFT (the means add up to the round's mean queued TTFT). */
export interface RoundBreakdown {
  round: number;
  requests: number;
  /** recorded when every request's parts were; derived when none were; mixed otherwise (shown per request, not stacked). */
  source: 'recorded' | 'derived' | 'mixed';
  ttft_ns_mean: number;
  mean: Record<TtftTimePart, number | null>;
}

/** Per round, the mean of each part over the requests that have a first token. */
export function roundBreakdowns(all: readonly TtftBreakdown[]): RoundBreakdown[] {
  const byRound = new Map<number, TtftBreakdown[]>();
  for (const b of all) {
    if (b.source === 'none' || b.ttft_ns === null) continue;
    const list = byRound.get(b.round) ?? [];
    list.push(b);
    byRound.set(b.round, list);
  }
  return [...byRound.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([round, list]) => {
      const sources = new Set(list.map((b) => b.source));
      const source = sources.size > 1 ? 'mixed' : (list[0]!.source as 'recorded' | 'derived');
      const mean = {} as Record<TtftTimePart, number | null>;
      for (const part of TTFT_TIME_PARTS) {
        const v = list.map((b) => partNs(b, part));
        mean[part] = source === 'mixed' || v.some((x) => x === null) ? null : v.reduce<number>((a, x) => a + (x ?? 0), 0) / list.length;
      }
      return { round, requests: list.length, source, ttft_ns_mean: list.reduce((a, b) => a + b.ttft_ns!, 0) / list.length, mean };
    });
}

/** The breakdown's columns, in order: the CSV's last `requests` columns and the keys of the Perfetto request slice's `ttft_breakdown` arg. */
export const BREAKDOWN_FIELDS = [
  'ttft_parts_source',
  'ttft_queued_ns',
  'gpu_hit_blocks',
  'host_reload_blocks',
  'host_reload_bytes',
  'host_reload_ns',
  'host_reload_gb_per_s',
  'disk_promote_blocks',
  'disk_promote_bytes',
  'disk_promote_ns',
  'recompute_tokens',
  'recompute_ns',
  'ttft_other_ns',
  'ttft_unsplit_ns',
] as const;

/** A breakdown as those columns' values (null: not recorded). */
export function breakdownFields(b: TtftBreakdown): Record<(typeof BREAKDOWN_FIELDS)[number], string | number | null> {
  return {
    ttft_parts_source: b.source,
    ttft_queued_ns: b.queued_ns,
    gpu_hit_blocks: b.gpu_hit.blocks,
    host_reload_blocks: b.host_reload.blocks,
    host_reload_bytes: b.host_reload.bytes,
    host_reload_ns: b.host_reload.ns,
    host_reload_gb_per_s: b.host_reload_bytes_per_s === null ? null : b.host_reload_bytes_per_s / 1e9,
    disk_promote_blocks: b.disk_promote.blocks,
    disk_promote_bytes: b.disk_promote.bytes,
    disk_promote_ns: b.disk_promote.ns,
    recompute_tokens: b.recompute.tokens,
    recompute_ns: b.recompute.ns,
    ttft_other_ns: b.other_ns,
    ttft_unsplit_ns: b.unsplit_ns,
  };
}
