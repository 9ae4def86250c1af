/**
 * What the Pools view says in words about its picture: the event under way at the replay time
 * ("user 2 R3 admitted → user 0's 509 blocks offloaded to the host pool"), what a hovered cell holds
 * and how it got there, where the run's action starts (after setup), and the next or previous move.
 * Pure: reads the replay model and a cursor, no DOM.
 */
import { formatCount, formatNs } from '../../shared/format';
import { poolWord, type BlockOp, type PoolName } from '../../shared/protocol';
import { OP_BY_CODE, type ReplayCursor, type ReplayModel, upperBound } from '../../shared/replay';
import { cellOrigin, type PoolsLayout } from './pools-render';

/** One blocks line of the log (its moves share a seq): what moved, whose, and where. */
export interface MoveLine {
  t: number;
  op: BlockOp;
  user: number;
  round: number;
  blocks: number;
  /** Pool it left (evict: the pool it was dropped from; hit: where it sits) and pool it went to, or null. */
  from: PoolName | null;
  to: PoolName | null;
}

/** The blocks line that move `i` belongs to. */
export function moveLine(m: ReplayModel, i: number): MoveLine {
  const seq = m.seq.data[i]!;
  let a = i;
  let b = i;
  while (a > 0 && m.seq.data[a - 1] === seq) a--;
  while (b + 1 < m.moveCount && m.seq.data[b + 1] === seq) b++;
  return {
    t: m.t.data[i]!,
    op: OP_BY_CODE[m.op.data[i]!]!,
    user: m.user.data[i]!,
    round: m.round.data[i]!,
    blocks: b - a + 1,
    from: m.gridPools[m.srcPool.data[i]!] ?? null,
    to: m.gridPools[m.dstPool.data[i]!] ?? null,
  };
}

const where = (pool: PoolName | null, otherwise: string): string => (pool ? `the ${poolWord(pool)} pool` : otherwise);

/** "user 0's 509 blocks offloaded to the host pool" (R2 when the line names a round). */
export function describeLine(l: MoveLine): string {
  const whose = l.user >= 0 ? `user ${l.user}${l.round >= 0 ? ` R${l.round}` : ''}: ` : '';
  const n = `${formatCount(l.blocks)} block${l.blocks === 1 ? '' : 's'}`;
  switch (l.op) {
    case 'store':
      return `${whose}${n} stored in ${where(l.to, 'the GPU pool')}`;
    case 'offload':
      return `${whose}${n} offloaded to the host pool`;
    case 'onboard':
      return `${whose}${n} onboarded to the GPU pool`;
    case 'evict':
      return `${whose}${n} evicted from ${where(l.from, 'the GPU pool')}`;
    case 'hit':
      return `${whose}${n} reused in ${where(l.from, 'the GPU pool')} (prefix hit)`;
    case 'move':
      // Between the host pool and a tier below it (a disk spill or promotion), or any two tiers.
      return `${whose}${n} moved from ${where(l.from, 'a pool not declared')} to ${where(l.to, 'a pool not declared')}`;
  }
}

/** A request admitted (scheduled) within this long before a move is taken to have caused it. */
const CAUSE_NS = 2e9;

/**
 * The event at the replay time: the last blocks line at or before it, led by the admission that
 * made room for it ("user 2 R3 admitted → user 0 R2: 509 blocks offloaded to the host pool"), or
 * what the run was doing before its first move.
 */
export function captionAt(m: ReplayModel, cursor: ReplayCursor, now: number): string {
  const i = cursor.applied - 1;
  let admitted: { user: number; round: number; t: number } | null = null;
  for (const r of m.requests.values()) {
    if (r.scheduled !== null && r.scheduled <= now && (!admitted || r.scheduled > admitted.t)) admitted = { user: r.user, round: r.round, t: r.scheduled };
  }
  if (i < 0) {
    const first = firstActionT(m);
    return first !== null && now < first ? `setting up (loading the model, sizing the pools): the first request comes at ${formatNs(first - (m.startT ?? first))}` : 'no block has moved yet';
  }
  const line = moveLine(m, i);
  const cause = admitted && admitted.t <= line.t && line.t - admitted.t <= CAUSE_NS && !(admitted.user === line.user && admitted.round === line.round && line.op === 'store') ? `user ${admitted.user} R${admitted.round} admitted → ` : '';
  return `${cause}${describeLine(line)}`;
}

/** The cell under (x, y) in the pools canvas, or null. */
export function cellAt(layout: PoolsLayout, x: number, y: number): { pool: number; slot: number } | null {
  for (const [pool, p] of layout.panels.entries()) {
    if (x < p.x || y < p.y || x >= p.x + p.cols * p.pitch || y >= p.y + p.h) continue;
    const slot = Math.floor((y - p.y) / p.pitch) * p.cols + Math.floor((x - p.x) / p.pitch);
    if (slot < p.shown) {
      const [cx, cy] = cellOrigin(p, slot);
      // In the gutter between cells: nothing.
      if (x - cx >= p.size || y - cy >= p.size) return null;
      return { pool, slot };
    }
  }
  return null;
}

/** The last move of block `b` in effect at the cursor (scanning back from it), or -1. */
export function lastMoveOf(m: ReplayModel, b: number, applied: number): number {
  for (let i = applied - 1; i >= 0; i--) if (m.block.data[i] === b) return i;
  return -1;
}

/** What a hovered cell holds: "user 2's block · last: R3 onboarded to the GPU pool at 12.35 s". */
export function describeCell(m: ReplayModel, cursor: ReplayCursor, pool: number, slot: number): string {
  const b = cursor.cells[pool]?.[slot] ?? -1;
  const grid = `${poolWord(m.gridPools[pool] ?? 'gpu')} pool`;
  if (b < 0) return `${grid} slot ${formatCount(slot)}: free`;
  const user = m.blockUser.data[b]!;
  const i = lastMoveOf(m, b, cursor.applied);
  const start = m.startT ?? 0;
  const last = i >= 0 ? moveLine(m, i) : null;
  const verb = last ? { store: 'stored', offload: 'offloaded to the host pool', onboard: 'onboarded to the GPU pool', evict: 'evicted', hit: 'reused (prefix hit)', move: `moved from ${where(last.from, 'a pool not declared')} to ${where(last.to, 'a pool not declared')}` }[last.op] : null;
  return `${grid} slot ${formatCount(slot)}: ${user >= 0 ? `user ${user}'s` : 'a'} block${last ? ` · last move: ${last.round >= 0 ? `R${last.round} ` : ''}${verb} at ${formatNs(last.t - start)}` : ''}`;
}

/** Where the action starts: the first request queued or block moved (setup before it shows empty grids). */
export function firstActionT(m: ReplayModel): number | null {
  let t = m.moveCount > 0 ? m.t.data[0]! : Infinity;
  for (const r of m.requests.values()) if (r.queued !== null && r.queued < t) t = r.queued;
  return Number.isFinite(t) ? t : null;
}

/** The time of the next blocks line after `now`, or null at the last. */
export function nextMoveT(m: ReplayModel, now: number): number | null {
  const j = upperBound(m.t.data, m.moveCount, now);
  return j < m.moveCount ? m.t.data[j]! : null;
}

/** The time of the last blocks line before `now` (the one before the line at `now`), or null at the first. */
export function prevMoveT(m: ReplayModel, now: number): number | null {
  let j = upperBound(m.t.data, m.moveCount, now) - 1;
  while (j >= 0 && m.t.data[j]! >= now) j--;
  return j >= 0 ? m.t.data[j]! : null;
}
