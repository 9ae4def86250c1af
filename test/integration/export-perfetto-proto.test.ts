/**
 * `--format perfetto-proto`: Perfetto's native trace, decoded by a real protobuf decoder
 * (protobufjs) with Perfetto's own schema (test/fixtures/perfetto/perfetto_trace.proto.gz, see its
 * README), on every real run this checkout has. Checked as trace processor reads it: every field is
 * one the schema knows with the wire type it declares (decoding and re-encoding gives the same
 * bytes), tracks are described before use, each track's begins and ends pair up in timestamp order
 * (ties in file order), flows start once and end once and run forward; and the content is the
 * JSON trace's, slice for slice, counter for counter, in integer ns.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { exportLog } from '../../src/main/core/export/run-export';
import { ProtobufWriter } from '../../src/main/core/export/protobuf-writer';
import { realRunPaths } from '../helpers/real-runs';
import type { TraceDoc } from './export-trace-check';

const root = protobuf.parse(gunzipSync(readFileSync(join(process.cwd(), 'test', 'fixtures', 'perfetto', 'perfetto_trace.proto.gz'))).toString('utf8'), { keepCase: true }).root;
const Trace = root.lookupType('perfetto.protos.Trace');

interface Annotation {
  name?: string;
  bool_value?: boolean;
  int_value?: number;
  double_value?: number;
  string_value?: string;
  dict_entries?: Annotation[];
  array_values?: Annotation[];
}
interface Packet {
  timestamp?: number;
  trusted_packet_sequence_id?: number;
  sequence_flags?: number;
  track_descriptor?: {
    uuid?: number;
    parent_uuid?: number;
    name?: string;
    process?: { pid?: number; process_name?: string };
    thread?: { pid?: number; tid?: number; thread_name?: string };
    counter?: { unit?: number; unit_name?: string };
    sibling_order_rank?: number;
    process_ordering?: number;
    thread_ordering?: number;
  };
  track_event?: {
    type?: number;
    track_uuid?: number;
    name?: string;
    categories?: string[];
    double_counter_value?: number;
    flow_ids?: number[];
    terminating_flow_ids?: number[];
    debug_annotations?: Annotation[];
  };
}

/** An annotation back to a plain value (as Perfetto's UI shows args). */
function plain(a: Annotation): unknown {
  if (a.dict_entries?.length) return Object.fromEntries(a.dict_entries.map((d) => [d.name, plain(d)]));
  if (a.array_values?.length) return a.array_values.map(plain);
  return a.bool_value ?? a.int_value ?? a.double_value ?? a.string_value;
}

/** JSON args the way the proto carries them: without nulls and empty lists. */
function pruned(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(pruned).filter((x) => x !== undefined);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const p = pruned(x);
      if (p !== undefined && !(Array.isArray(p) && p.length === 0) && !(p && typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 0)) out[k] = p;
    }
    return out;
  }
  return v === null ? undefined : v;
}

const runs = realRunPaths();
const dir = mkdtempSync(join(tmpdir(), 'kvscope-proto-'));
const meta = { id: 'x', name: 'x', host: 'test', status: 'ok' as const, createdAt: '' };

describe('ProtobufWriter', () => {
  it('writes what a real decoder reads: varints past 32 bits, negative int64, fixed64, doubles, nested lengths past one byte', () => {
    const w = new ProtobufWriter();
    // A DebugAnnotation: int_value (int64, negative), its name, a dict entry longer than 127 bytes.
    w.int(4, -5).string(10, 'k').begin(11).string(6, 'x'.repeat(300)).string(10, 'inner').end();
    const DebugAnnotation = root.lookupType('perfetto.protos.DebugAnnotation');
    const a = DebugAnnotation.toObject(DebugAnnotation.decode(w.bytes()), { longs: Number }) as Annotation;
    expect(a.int_value).toBe(-5);
    expect(a.name).toBe('k');
    expect(a.dict_entries![0]!.string_value).toBe('x'.repeat(300));
    const TrackEvent = root.lookupType('perfetto.protos.TrackEvent');
    const CounterDescriptor = root.lookupType('perfetto.protos.CounterDescriptor');
    w.reset();
    w.uint(4, 2 ** 40 + 7);
    expect((CounterDescriptor.toObject(CounterDescriptor.decode(w.bytes()), { longs: Number }) as { unit_multiplier: number }).unit_multiplier).toBe(2 ** 40 + 7);
    w.reset();
    w.fixed64(47, 2 ** 52 + 3).fixed64(47, 9).double(44, 0.1);
    const e = TrackEvent.toObject(TrackEvent.decode(w.bytes()), { longs: Number }) as { flow_ids: number[]; double_counter_value: number };
    expect(e.flow_ids).toEqual([2 ** 52 + 3, 9]);
    expect(e.double_counter_value).toBe(0.1);
  });
});

describe('Perfetto protobuf export of real runs', () => {
  it('has runs to check', () => {
    expect(runs.length).toBeGreaterThanOrEqual(6);
  });

  for (const run of runs) {
    it(`decodes with Perfetto's schema and holds the JSON trace's content (${run.name})`, async () => {
      const pb = join(dir, `${run.name.replace(/[^A-Za-z0-9]+/g, '-')}.pftrace`);
      const js = `${pb}.json`;
      const r = await exportLog({ logFile: run.path, meta, format: 'perfetto-proto', dest: pb });
      await exportLog({ logFile: run.path, meta, format: 'perfetto', dest: js });
      const bytes = readFileSync(pb);
      const msg = Trace.decode(bytes);
      // Every field is in Perfetto's schema with its declared wire type: nothing was skipped.
      expect(Buffer.compare(Buffer.from(Trace.encode(msg).finish()), bytes)).toBe(0);
      const packets = (Trace.toObject(msg, { longs: Number }) as { packet: Packet[] }).packet;
      expect(packets[0]!.sequence_flags).toBe(1);
      expect(packets[0]!.track_descriptor).toMatchObject({ uuid: 0, process_ordering: 1, thread_ordering: 1 });
      for (const p of packets) expect(p.trusted_packet_sequence_id).toBe(1);
      expect(r.perfetto!.traceEvents).toBeGreaterThan(0);

      // Tracks described before use; counters only on counter tracks.
      const tracks = new Map<number, NonNullable<Packet['track_descriptor']>>();
      const pids = new Set<number>();
      const slices: string[] = [];
      const counters: string[] = [];
      const instants: string[] = [];
      const open = new Map<number, Array<{ ts: number; name: string; cat: string; args: unknown; flowOut: number[]; flowIn: number[] }>>();
      const flowSource = new Map<number, { end: number }>();
      const flowEnds = new Map<number, { start: number }>();
      const trackName = (uuid: number) => {
        const d = tracks.get(uuid)!;
        return d.thread?.thread_name ?? d.name ?? d.process?.process_name ?? '';
      };
      // Trace processor's order: by timestamp, file order among equal ones (a stable sort).
      const order = packets.map((p, i) => ({ p, i })).filter((x) => x.p.track_event);
      const problems: string[] = [];
      for (const { p, i } of packets.map((p, i) => ({ p, i }))) {
        const d = p.track_descriptor;
        if (d) {
          if (d.process) pids.add(d.process.pid!);
          if (d.thread && !pids.has(d.thread.pid!)) problems.push(`packet ${i}: thread of pid ${d.thread.pid} before its process`);
          tracks.set(d.uuid!, d);
        }
        const e = p.track_event;
        if (e && !tracks.has(e.track_uuid!)) problems.push(`packet ${i}: track ${e.track_uuid} used before it is described`);
      }
      order.sort((a, b) => a.p.timestamp! - b.p.timestamp! || a.i - b.i);
      for (const { p } of order) {
        const e = p.track_event!;
        const t = p.timestamp!;
        const track = tracks.get(e.track_uuid!)!;
        const args = Object.fromEntries((e.debug_annotations ?? []).map((a) => [a.name, plain(a)]));
        if (e.type === 4) {
          if (!track.counter) problems.push(`counter on a non-counter track ${track.name}`);
          counters.push(`${track.name} ${t} ${e.double_counter_value}`);
          continue;
        }
        if (track.counter) problems.push(`event type ${e.type} on counter track ${track.name}`);
        if (e.type === 3) instants.push(`${trackName(e.track_uuid!)} ${e.name} ${t}`);
        else if (e.type === 1) {
          const stack = open.get(e.track_uuid!) ?? [];
          open.set(e.track_uuid!, stack);
          stack.push({ ts: t, name: e.name!, cat: e.categories![0]!, args, flowOut: e.flow_ids ?? [], flowIn: e.terminating_flow_ids ?? [] });
        } else if (e.type === 2) {
          const s = open.get(e.track_uuid!)?.pop();
          if (!s) {
            problems.push(`end with no open slice on ${trackName(e.track_uuid!)} at ${t}`);
            continue;
          }
          slices.push(`${trackName(e.track_uuid!)} | ${s.cat} | ${s.name} | ${s.ts} | ${t} | ${JSON.stringify(s.args)}`);
          for (const id of s.flowOut) {
            if (flowSource.has(id)) problems.push(`flow ${id} starts twice`);
            flowSource.set(id, { end: t });
          }
          for (const id of s.flowIn) {
            if (flowEnds.has(id)) problems.push(`flow ${id} ends twice`);
            flowEnds.set(id, { start: s.ts });
          }
        }
      }
      for (const [uuid, stack] of open) if (stack.length) problems.push(`${stack.length} slices left open on ${trackName(uuid)}`);
      for (const [id, src] of flowSource) {
        const end = flowEnds.get(id);
        if (!end) problems.push(`flow ${id} never ends`);
        // Drawn from the end of its source slice to the start of its destination: forward in time.
        else if (end.start < src.end) problems.push(`flow ${id} points back: from ${src.end} to ${end.start}`);
      }
      for (const id of flowEnds.keys()) if (!flowSource.has(id)) problems.push(`flow ${id} ends but never starts`);
      expect(problems.slice(0, 20)).toEqual([]);
      expect(flowSource.size).toBe(r.perfetto!.flows.in);

      // The JSON trace's content, in integer ns.
      const doc = JSON.parse(readFileSync(js, 'utf8')) as TraceDoc;
      const ns = (us: number) => Math.round(us * 1000);
      const threadNames = new Map(doc.traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name').map((e) => [`${e.pid}/${e.tid}`, String(e.args!.name)]));
      const jsonSlices = doc.traceEvents
        .filter((e) => e.ph === 'X')
        .map((e) => `${threadNames.get(`${e.pid}/${e.tid}`)} | ${e.cat} | ${e.name} | ${ns(e.ts!)} | ${ns(e.ts! + e.dur!)} | ${JSON.stringify(pruned(e.args))}`);
      expect(slices.length).toBe(jsonSlices.length);
      expect([...slices].sort()).toEqual(jsonSlices.sort());
      const jsonCounters = doc.traceEvents.filter((e) => e.ph === 'C').map((e) => `${e.name} ${ns(e.ts!)} ${Object.values(e.args!)[0]}`);
      expect([...counters].sort()).toEqual(jsonCounters.sort());
      const jsonInstants = doc.traceEvents.filter((e) => e.ph === 'I' && e.s !== 'g').map((e) => `${threadNames.get(`${e.pid}/${e.tid}`)} ${e.name} ${ns(e.ts!)}`);
      expect(instants.filter((s) => !s.includes('kvscope export report')).sort()).toEqual(jsonInstants.sort());
    }, 300_000);
  }
});
