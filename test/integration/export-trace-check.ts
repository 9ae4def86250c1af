/**
 * Structural checks of an exported trace, as Perfetto's JSON importer needs them
 * (shared/reference/profilers.md §2). Returns every problem found, so a test prints them all.
 * test/integration/export-check-trace.py checks the same rules independently, in Python.
 */
export interface TraceEvent {
  ph: string;
  name?: string;
  cat?: string;
  pid?: number;
  tid?: number;
  ts?: number;
  dur?: number;
  s?: string;
  id?: string;
  bind_id?: number | string;
  flow_in?: boolean;
  flow_out?: boolean;
  args?: Record<string, unknown>;
}

export interface TraceDoc {
  traceEvents: TraceEvent[];
  metadata?: { kvscope?: Record<string, unknown> };
}

export interface TraceCheck {
  problems: string[];
  slices: TraceEvent[];
  counters: TraceEvent[];
  instants: TraceEvent[];
  flowsOut: Map<number | string, TraceEvent>;
  flowsIn: Map<number | string, TraceEvent[]>;
}

/** ts/dur are µs on a 2⁻¹¹ µs grid that rounds back to integer ns (docs/export.md): compare as ns. */
const ns = (us: number): number => Math.round(us * 1000);
/** On the grid: a multiple of 2⁻¹¹ µs, exact in a double (so ts + dur is exact in floating point). */
const onGrid = (us: number): boolean => Number.isInteger(us * 2048);

export function checkTrace(doc: TraceDoc): TraceCheck {
  const problems: string[] = [];
  const processNames = new Set<number>();
  const threadNames = new Set<string>();
  const usedPids = new Set<number>();
  const usedThreads = new Set<string>();
  const slices: TraceEvent[] = [];
  const counters: TraceEvent[] = [];
  const instants: TraceEvent[] = [];
  const flowsOut = new Map<number | string, TraceEvent>();
  const flowsIn = new Map<number | string, TraceEvent[]>();
  const byThread = new Map<string, Array<{ s: number; e: number; i: number }>>();
  const counterKeys = new Map<string, string>();
  doc.traceEvents.forEach((e, i) => {
    if (e.ph === 'M') {
      if (e.name === 'process_name') processNames.add(e.pid!);
      if (e.name === 'thread_name') threadNames.add(`${e.pid}/${e.tid}`);
      return;
    }
    if (typeof e.ts !== 'number' || !Number.isFinite(e.ts) || e.ts < 0) problems.push(`event ${i} (${e.ph} ${e.name}): ts ${e.ts} is not a number ≥ 0`);
    if (typeof e.pid !== 'number') problems.push(`event ${i}: no pid`);
    usedPids.add(e.pid!);
    if (e.ph === 'X') {
      slices.push(e);
      if (typeof e.dur !== 'number' || e.dur < 0) problems.push(`event ${i}: dur ${e.dur}`);
      if (!onGrid(e.ts!) || !onGrid(e.dur!)) problems.push(`event ${i}: ts ${e.ts} or dur ${e.dur} is off the 2⁻¹¹ µs grid`);
      const key = `${e.pid}/${e.tid}`;
      usedThreads.add(key);
      const list = byThread.get(key) ?? [];
      list.push({ s: ns(e.ts!), e: ns(e.ts! + e.dur!), i });
      byThread.set(key, list);
      if (e.bind_id !== undefined) {
        if (e.flow_out && !e.flow_in) {
          if (flowsOut.has(e.bind_id)) problems.push(`bind_id ${e.bind_id}: two flow_out slices`);
          flowsOut.set(e.bind_id, e);
        } else if (e.flow_in && !e.flow_out) {
          flowsIn.set(e.bind_id, [...(flowsIn.get(e.bind_id) ?? []), e]);
        } else problems.push(`event ${i}: bind_id without exactly one direction`);
      }
    } else if (e.ph === 'C') {
      counters.push(e);
      const vals = Object.values(e.args ?? {});
      // chrome://tracing keeps one key set per counter name: one value per event, one name per quantity.
      if (vals.length !== 1) problems.push(`event ${i}: counter ${e.name} has ${vals.length} values, not one`);
      const key = `${e.pid}/${e.name}`;
      const keys = Object.keys(e.args ?? {}).join(',');
      const seen = counterKeys.get(key);
      if (seen === undefined) counterKeys.set(key, keys);
      else if (seen !== keys) problems.push(`event ${i}: counter ${e.name} writes ${keys}, earlier ${seen} (chrome://tracing keeps one set per name)`);
      for (const v of vals) if (typeof v !== 'number' || !Number.isFinite(v)) problems.push(`event ${i}: counter ${e.name} value ${String(v)} is not a number`);
    } else if (e.ph === 'i') {
      problems.push(`event ${i}: instant with ph "i" (DevTools reads only "I")`);
    } else if (e.ph === 'I') {
      instants.push(e);
      if ((e.s ?? 't') === 't') usedThreads.add(`${e.pid}/${e.tid}`);
    } else problems.push(`event ${i}: unexpected phase ${e.ph}`);
  });
  for (const pid of usedPids) if (!processNames.has(pid)) problems.push(`pid ${pid} is used but not named`);
  for (const t of usedThreads) if (!threadNames.has(t)) problems.push(`thread ${t} is used but not named`);
  // Strict nesting: sorted by start (longer first on ties), each slice lies inside the open one or after it.
  for (const [key, list] of byThread) {
    list.sort((a, b) => a.s - b.s || b.e - a.e || a.i - b.i);
    const stack: Array<{ s: number; e: number; i: number }> = [];
    for (const x of list) {
      while (stack.length && stack[stack.length - 1]!.e <= x.s && !(x.e === x.s && stack[stack.length - 1]!.s === x.s)) stack.pop();
      const top = stack[stack.length - 1];
      if (top && x.e > top.e) {
        problems.push(`thread ${key}: slice ${x.i} [${x.s}, ${x.e}] overlaps slice ${top.i} [${top.s}, ${top.e}] without nesting`);
        continue;
      }
      stack.push(x);
    }
  }
  for (const [id, out] of flowsOut) {
    const ins = flowsIn.get(id);
    if (!ins?.length) problems.push(`flow ${id}: no flow_in end`);
    else for (const f of ins) if (ns(f.ts!) < ns(out.ts!)) problems.push(`flow ${id}: ends (${f.ts}) before it starts (${out.ts})`);
  }
  for (const id of flowsIn.keys()) if (!flowsOut.has(id)) problems.push(`flow ${id}: flow_in with no flow_out`);
  return { problems, slices, counters, instants, flowsOut, flowsIn };
}
