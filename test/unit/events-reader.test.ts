import { describe, expect, it } from 'vitest';
import { EventLineDecoder, decodeAll, type BadLine } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';
import { syntheticRun, toJsonl } from '../helpers/synthetic-run';

const enc = new TextEncoder();

function decodeInChunks(bytes: Uint8Array, size: number) {
  const events: KvEvent[] = [];
  const bad: BadLine[] = [];
  const d = new EventLineDecoder({ onEvent: (e) => events.push(e), onBadLine: (b) => bad.push(b) });
  for (let i = 0; i < bytes.length; i += size) d.push(bytes.subarray(i, i + size));
  d.end();
  return { events, bad, d };
}

describe('EventLineDecoder', () => {
  const run = syntheticRun();
  const bytes = enc.encode(toJsonl(run));

  it('reads the same events whatever the chunk boundaries', () => {
    for (const size of [1, 2, 3, 7, 64, 1000, bytes.length]) {
      const { events, bad } = decodeInChunks(bytes, size);
      expect(bad).toEqual([]);
      expect(events.map((e) => e.seq)).toEqual(run.map((e) => e.seq));
    }
  });

  it('holds a partial last line until the stream ends, then reports it as truncated', () => {
    const cut = bytes.subarray(0, bytes.length - 20);
    const events: KvEvent[] = [];
    const bad: BadLine[] = [];
    const d = new EventLineDecoder({ onEvent: (e) => events.push(e), onBadLine: (b) => bad.push(b) });
    d.push(cut);
    expect(events.length).toBe(run.length - 1);
    expect(bad).toEqual([]);
    // committedOffset is where a live tail resumes: just past the last whole line.
    const lastNl = cut.lastIndexOf(0x0a);
    expect(d.committedOffset).toBe(lastNl + 1);
    d.end();
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatchObject({ reason: 'truncated', seq: run.length - 1, offset: lastNl + 1 });
  });

  it('reports garbage, unknown types and bad fields with seq or offset, and keeps reading', () => {
    const lines = toJsonl(run).split('\n');
    lines.splice(3, 0, 'this is not json {');
    lines.splice(6, 0, JSON.stringify({ seq: 999, t: 1, type: 'weird' }));
    lines.splice(9, 0, JSON.stringify({ seq: 998, t: 1, type: 'xfer', dir: 'sideways', bytes: 1, start: 0, end: 1, source: 'cupti' }));
    const text = lines.join('\n');
    const { events, bad } = decodeAll(enc.encode(text));
    expect(events).toHaveLength(run.length);
    expect(bad.map((b) => b.reason)).toEqual(['not_json', 'unknown_type', 'schema']);
    expect(bad[0]!.seq).toBeNull();
    expect(bad[0]!.offset).toBe(text.indexOf('this is not json'));
    expect(bad[0]!.line).toBe(4);
    expect(bad[1]!.seq).toBe(999);
    expect(bad[2]).toMatchObject({ seq: 998, reason: 'schema' });
    expect(bad[2]!.message).toContain('/dir');
  });

  it('skips a line over the size limit without buffering it, and reads the next one', () => {
    const big = JSON.stringify({ seq: 5, t: 1, type: 'log', level: 'info', msg: 'x'.repeat(3000) });
    const text = `${JSON.stringify(run[0])}\n${big}\n${JSON.stringify(run[1])}\n`;
    const events: KvEvent[] = [];
    const bad: BadLine[] = [];
    const d = new EventLineDecoder({ onEvent: (e) => events.push(e), onBadLine: (b) => bad.push(b) }, { maxLineBytes: 1024 });
    const b = enc.encode(text);
    for (let i = 0; i < b.length; i += 100) d.push(b.subarray(i, i + 100));
    d.end();
    expect(events.map((e) => e.seq)).toEqual([0, 1]);
    expect(bad).toEqual([expect.objectContaining({ reason: 'too_long', offset: text.indexOf(big), line: 2 })]);
  });

  it('tolerates CRLF line ends and blank lines', () => {
    const text = toJsonl(run.slice(0, 3)).replace(/\n/g, '\r\n') + '\r\n';
    const { events, bad } = decodeAll(enc.encode(text));
    expect(events).toHaveLength(3);
    expect(bad).toEqual([]);
  });

  it('decodes multi-byte UTF-8 split across chunks', () => {
    const line = JSON.stringify({ seq: 0, t: 0, type: 'log', level: 'info', msg: 'µs → 字' }) + '\n';
    const { events } = decodeInChunks(enc.encode(line), 1);
    expect((events[0] as { msg: string }).msg).toBe('µs → 字');
  });

  it('refuses a line nested deeper than any event before parsing it; the rest of the run loads', () => {
    // 40 KB, 20,000 levels: extra keys are allowed, so the schema alone would pass it on.
    const deep = `{"seq":1,"t":1,"type":"log","level":"info","msg":"x","extra":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    const lines = [
      JSON.stringify({ seq: 0, t: 0, type: 'log', level: 'info', msg: 'before' }),
      deep,
      JSON.stringify({ seq: 2, t: 2, type: 'log', level: 'info', msg: 'after' }),
    ];
    const { events, bad } = decodeInChunks(enc.encode(lines.join('\n') + '\n'), 4096);
    expect(events.map((e) => e.seq)).toEqual([0, 2]);
    expect(bad).toEqual([{ reason: 'too_deep', offset: lines[0]!.length + 1, line: 2, seq: 1, message: 'nested more than 64 levels deep (no event is)' }]);
    // What reaches a window is then always something JSON.stringify can write.
    expect(() => JSON.stringify(events)).not.toThrow();
  });
});
