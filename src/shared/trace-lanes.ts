/**
 * Greedy lane assignment for intervals that may overlap on one logical track (copies on one copy
 * engine, requests of one user, block moves of one pool). Perfetto's JSON importer and the
 * timeline both need slices on one thread track to nest strictly (profilers.md §2, #4280), so an
 * interval that overlaps a lane's last interval goes to the next free lane.
 *
 * The rule, interval partitioning: an interval [start, end] goes to the lowest-numbered lane whose
 * last interval ended at or before `start`; a new lane opens when none has. Fed in order of
 * `start`, this uses the fewest lanes possible. Fed out of order it stays correct (a lane takes an
 * interval only after everything already on it has ended), it just may open extra lanes. State is
 * one number per lane, so memory is bounded by the peak overlap, never by run length.
 * Pure and DOM-free: the renderer's timeline uses it too.
 */
export class LaneAssigner {
  /** End time of each lane's last interval. */
  private readonly ends: number[] = [];

  /** Number of lanes opened so far. */
  get laneCount(): number {
    return this.ends.length;
  }

  /**
   * Places [start, end] (end ≥ start; a reversed interval is treated as zero-length at `start`).
   * @returns the lane index and whether that lane was opened by this call.
   */
  place(start: number, end: number): { lane: number; opened: boolean } {
    const stop = end >= start ? end : start;
    for (let i = 0; i < this.ends.length; i++) {
      if (this.ends[i]! <= start) {
        this.ends[i] = stop;
        return { lane: i, opened: false };
      }
    }
    this.ends.push(stop);
    return { lane: this.ends.length - 1, opened: true };
  }
}

/** Lanes for a whole list at once (sorted by start first): what a renderer drawing a range needs. */
export function assignLanes<T>(items: readonly T[], start: (x: T) => number, end: (x: T) => number): { lanes: number[]; laneCount: number } {
  const order = items.map((_, i) => i).sort((a, b) => start(items[a]!) - start(items[b]!) || end(items[b]!) - end(items[a]!));
  const assigner = new LaneAssigner();
  const lanes = new Array<number>(items.length);
  for (const i of order) lanes[i] = assigner.place(start(items[i]!), end(items[i]!)).lane;
  return { lanes, laneCount: assigner.laneCount };
}
