/**
 * Perfetto's native trace format: a `Trace` protobuf of `TracePacket`s carrying `TrackEvent`s
 * (slices, instants, counters, flows) on tracks named by `TrackDescriptor`s, with integer-ns
 * timestamps. Perfetto documents its JSON importer as legacy and best effort; this is the format
 * its own SDK writes. The content is the JSON trace's (PerfettoTraceBuilder decides it); only the
 * encoding differs. docs/export.md "Perfetto protobuf".
 *
 * Field numbers, from google/perfetto at ec5d16b (protos/perfetto/trace/):
 * - trace.proto:                       Trace.packet = 1
 * - trace_packet.proto:                timestamp = 8, trusted_packet_sequence_id = 10,
 *                                      track_event = 11, sequence_flags = 13 (SEQ_INCREMENTAL_STATE_CLEARED = 1),
 *                                      track_descriptor = 60
 * - track_event/track_descriptor.proto: uuid = 1, name = 2, process = 3, thread = 4, parent_uuid = 5,
 *                                      counter = 8, sibling_order_rank = 12,
 *                                      process_ordering = 19 (PROCESS_ORDERING_EXPLICIT = 1),
 *                                      thread_ordering = 20 (THREAD_ORDERING_EXPLICIT = 1)
 * - track_event/process_descriptor.proto: pid = 1, process_name = 6
 * - track_event/thread_descriptor.proto:  pid = 1, tid = 2, thread_name = 5
 * - track_event/counter_descriptor.proto: unit = 3 (UNIT_COUNT = 2, UNIT_SIZE_BYTES = 3), unit_name = 6
 * - track_event/track_event.proto:     debug_annotations = 4, type = 9 (SLICE_BEGIN = 1,
 *                                      SLICE_END = 2, INSTANT = 3, COUNTER = 4), track_uuid = 11,
 *                                      categories = 22, name = 23, double_counter_value = 44,
 *                                      flow_ids = 47 (fixed64), terminating_flow_ids = 48 (fixed64)
 * - track_event/debug_annotation.proto: bool_value = 2, int_value = 4, double_value = 5,
 *                                      string_value = 6, name = 10, dict_entries = 11, array_values = 12
 * test/fixtures/perfetto/ holds those .proto files; test/unit/export-perfetto-proto.test.ts decodes
 * this writer's output with them.
 *
 * Ordering: trace processor sorts packets by timestamp and keeps file order among equal ones, and
 * a slice end closes the innermost open slice of its track. The builder opens a parent before its
 * children and closes it after them, and a lane's slices are written in the order they were
 * placed, so at equal timestamps an end comes before the next begin and children close first.
 */
import type { Writable } from 'node:stream';
import { BatchedWriter, PerfettoTraceBuilder, streamIntoBuilder, type CounterSpec, type PerfettoReport, type SliceFlow, type TraceSink, type TraceStreamOptions } from './perfetto';
import { ProtobufWriter } from './protobuf-writer';

const F = {
  trace: { packet: 1 },
  packet: { timestamp: 8, sequenceId: 10, trackEvent: 11, sequenceFlags: 13, trackDescriptor: 60 },
  descriptor: { uuid: 1, name: 2, process: 3, thread: 4, parentUuid: 5, counter: 8, siblingOrderRank: 12, processOrdering: 19, threadOrdering: 20 },
  process: { pid: 1, name: 6 },
  thread: { pid: 1, tid: 2, name: 5 },
  counter: { unit: 3, unitName: 6 },
  event: { debugAnnotations: 4, type: 9, trackUuid: 11, categories: 22, name: 23, doubleCounterValue: 44, flowIds: 47, terminatingFlowIds: 48 },
  annotation: { bool: 2, int: 4, double: 5, string: 6, name: 10, dictEntries: 11, arrayValues: 12 },
} as const;

const TYPE = { sliceBegin: 1, sliceEnd: 2, instant: 3, counter: 4 } as const;
const SEQ_INCREMENTAL_STATE_CLEARED = 1;
const SEQUENCE_ID = 1;
const UNIT_COUNT = 2;
const UNIT_SIZE_BYTES = 3;
const UNIT_NAME: Record<CounterSpec['unit'], string | null> = { blocks: null, bytes: null, percent: '%', bytes_per_s: 'bytes/s', watts: 'W', mhz: 'MHz' };

interface ProcessTrack {
  uuid: number;
  name: string;
  rank: number;
  /** The name last written in a descriptor (null: none written yet). */
  written: string | null;
}

/** Writes TracePackets, one `Trace.packet` field each, to `emit`. */
export class ProtoTraceSink implements TraceSink {
  private readonly w = new ProtobufWriter();
  private nextUuid = 1;
  private readonly processes = new Map<number, ProcessTrack>();
  private readonly threads = new Map<number, number>();
  private readonly counters = new Map<string, number>();

  constructor(private readonly emit: (packet: Uint8Array) => void) {
    // The root track (uuid 0) orders processes and threads by their ranks (the JSON sort indices).
    this.packet(null, () => {
      this.w.uint(F.packet.sequenceFlags, SEQ_INCREMENTAL_STATE_CLEARED);
      this.w.begin(F.packet.trackDescriptor).uint(F.descriptor.uuid, 0).uint(F.descriptor.processOrdering, 1).uint(F.descriptor.threadOrdering, 1).end();
    });
  }

  /**
   * One `Trace.packet`: its timestamp, sequence id, then `body` writes the rest. Every message's
   * fields go in ascending field number, as protobuf's own serializers write them (the tests
   * re-encode a decoded trace and expect the same bytes).
   */
  private packet(t: number | null, body: () => void): void {
    this.w.reset();
    this.w.begin(F.trace.packet);
    if (t !== null) this.w.uint(F.packet.timestamp, t);
    this.w.uint(F.packet.sequenceId, SEQUENCE_ID);
    body();
    this.w.end();
    this.emit(this.w.bytes());
  }

  /** The process's track, its descriptor written (again, if its name changed) before first use. */
  private processUuid(pid: number): number {
    let p = this.processes.get(pid);
    if (!p) this.processes.set(pid, (p = { uuid: this.nextUuid++, name: `pid ${pid}`, rank: pid, written: null }));
    if (p.written !== p.name) {
      const track = p;
      this.packet(null, () => {
        this.w.begin(F.packet.trackDescriptor).uint(F.descriptor.uuid, track.uuid);
        this.w.begin(F.descriptor.process).uint(F.process.pid, pid).string(F.process.name, track.name).end();
        this.w.int(F.descriptor.siblingOrderRank, track.rank).end();
      });
      p.written = p.name;
    }
    return p.uuid;
  }

  processName(pid: number, name: string, sortIndex: number): void {
    const p = this.processes.get(pid);
    if (p) {
      p.name = name;
      p.rank = sortIndex;
    } else this.processes.set(pid, { uuid: this.nextUuid++, name, rank: sortIndex, written: null });
  }

  threadName(pid: number, tid: number, name: string, sortIndex: number): void {
    this.processUuid(pid);
    const uuid = this.nextUuid++;
    this.threads.set(tid, uuid);
    this.packet(null, () => {
      this.w.begin(F.packet.trackDescriptor).uint(F.descriptor.uuid, uuid);
      this.w.begin(F.descriptor.thread).uint(F.thread.pid, pid).uint(F.thread.tid, tid).string(F.thread.name, name).end();
      this.w.int(F.descriptor.siblingOrderRank, sortIndex).end();
    });
  }

  private threadUuid(tid: number): number {
    const uuid = this.threads.get(tid);
    if (uuid === undefined) throw new Error(`thread ${tid} used before it was named`);
    return uuid;
  }

  private counterUuid(pid: number, spec: CounterSpec): number {
    const key = `${pid}/${spec.name}`;
    let uuid = this.counters.get(key);
    if (uuid === undefined) {
      const parent = this.processUuid(pid);
      const id = (uuid = this.nextUuid++);
      this.counters.set(key, id);
      this.packet(null, () => {
        this.w.begin(F.packet.trackDescriptor).uint(F.descriptor.uuid, id).string(F.descriptor.name, spec.name).uint(F.descriptor.parentUuid, parent);
        this.w.begin(F.descriptor.counter);
        if (spec.unit === 'blocks') this.w.uint(F.counter.unit, UNIT_COUNT);
        else if (spec.unit === 'bytes') this.w.uint(F.counter.unit, UNIT_SIZE_BYTES);
        const unitName = UNIT_NAME[spec.unit];
        if (unitName) this.w.string(F.counter.unitName, unitName);
        this.w.end().end();
      });
    }
    return uuid;
  }

  /** A TrackEvent packet at `t`, its fields in field-number order. */
  private event(t: number, type: number, track: number, e: { args?: string; cat?: string; name?: string; value?: number; flow?: SliceFlow | null } = {}): void {
    this.packet(t, () => {
      this.w.begin(F.packet.trackEvent);
      if (e.args !== undefined) this.annotations(e.args);
      this.w.uint(F.event.type, type).uint(F.event.trackUuid, track);
      if (e.cat !== undefined) this.w.string(F.event.categories, e.cat);
      if (e.name !== undefined) this.w.string(F.event.name, e.name);
      if (e.value !== undefined) this.w.double(F.event.doubleCounterValue, e.value);
      const flow = e.flow;
      if (flow?.out) for (const id of flow.ids) this.w.fixed64(F.event.flowIds, id);
      else if (flow) this.w.fixed64(F.event.terminatingFlowIds, flow.id);
      this.w.end();
    });
  }

  openSlice(_pid: number, tid: number, name: string, cat: string, start: number, _end: number, args: string, flow: SliceFlow | null): void {
    this.event(start, TYPE.sliceBegin, this.threadUuid(tid), { args, cat, name, flow });
  }

  closeSlice(_pid: number, tid: number, end: number): void {
    this.event(end, TYPE.sliceEnd, this.threadUuid(tid));
  }

  instant(pid: number, tid: number | null, name: string, cat: string, t: number, args: string): void {
    this.event(t, TYPE.instant, tid === null ? this.processUuid(pid) : this.threadUuid(tid), { args, cat, name });
  }

  counter(pid: number, spec: CounterSpec, t: number, value: number): void {
    this.event(t, TYPE.counter, this.counterUuid(pid, spec), { value });
  }

  /** The args object (JSON text) as debug annotations; nulls and empty lists are left out (no value to write). */
  private annotations(args: string): void {
    const obj = JSON.parse(args) as Record<string, unknown>;
    for (const [k, v] of Object.entries(obj)) {
      if (isEmpty(v)) continue;
      this.w.begin(F.event.debugAnnotations);
      this.value(k, v);
      this.w.end();
    }
  }

  /** A DebugAnnotation's fields: a scalar value (fields 2-6), its name (10), then nested entries (11, 12). */
  private value(name: string | null, v: unknown): void {
    if (typeof v === 'boolean') this.w.bool(F.annotation.bool, v);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v)) this.w.int(F.annotation.int, v);
      else this.w.double(F.annotation.double, v);
    } else if (typeof v === 'string') this.w.string(F.annotation.string, v);
    if (name !== null) this.w.string(F.annotation.name, name);
    if (Array.isArray(v)) {
      for (const x of v) {
        if (isEmpty(x)) continue;
        this.w.begin(F.annotation.arrayValues);
        this.value(null, x);
        this.w.end();
      }
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        if (isEmpty(x)) continue;
        this.w.begin(F.annotation.dictEntries);
        this.value(k, x);
        this.w.end();
      }
    }
  }
}

function isEmpty(v: unknown): boolean {
  if (v === null || v === undefined) return true;
  if (Array.isArray(v)) return v.every(isEmpty);
  if (typeof v === 'object') return Object.values(v).every(isEmpty);
  return false;
}

/** Streams a log into a Perfetto protobuf trace on `out`. */
export async function writePerfettoProtoTrace(source: AsyncIterable<Uint8Array>, out: Writable, options: TraceStreamOptions = {}): Promise<PerfettoReport> {
  const writer = new BatchedWriter(out);
  const builder = new PerfettoTraceBuilder(
    new ProtoTraceSink((p) => writer.bytes(p)),
    options,
  );
  const report = await streamIntoBuilder(source, builder, writer, options);
  await writer.end();
  return report;
}
