/**
 * The decoder reads lines wholly inside a chunk by decoding a window of them at once (one string,
 * sliced per line) and lines that span chunks one at a time. Both must give the same events and
 * the same bad-line reports (offset, line, seq, message) as decoding every line on its own, for
 * any chunking: these tests feed mixed input (multi-byte text, malformed UTF-8, BOMs, CRLF, blank,
 * over-long and broken lines) as one chunk, one byte at a time, and in random chunk sizes.
 */
import { describe, expect, it } from 'vitest';
import { EventLineDecoder, type BadLine } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';
import { syntheticRun, toJsonl } from '../helpers/synthetic-run';

const enc = new TextEncoder();

function decode(bytes: Uint8Array, sizes: (i: number) => number, maxLineBytes?: number) {
  const events: Array<{ e: KvEvent; offset: number }> = [];
  const bad: BadLine[] = [];
  const d = new EventLineDecoder({ onEvent: (e, offset) => events.push({ e, offset }), onBadLine: (b) => bad.push(b) }, maxLineBytes ? { maxLineBytes } : {});
  for (let i = 0, k = 0; i < bytes.length; k++) {
    const n = Math.max(1, sizes(k));
    d.push(bytes.subarray(i, i + n));
    i += n;
  }
  d.end();
  return { events, bad, committed: d.committedOffset, lines: d.lines, counts: { ...d.counts } };
}

/** A deterministic pseudo-random generator (tests must not depend on luck). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function mixedLog(): Uint8Array {
  const run = syntheticRun({ users: 3, rounds: 4 });
  const lines = toJsonl(run).split('\n').filter((l) => l.length > 0);
  const parts: Uint8Array[] = [];
  let seq = run.length;
  lines.forEach((l, i) => {
    parts.push(enc.encode(l + (i % 5 === 0 ? '\r\n' : '\n')));
    if (i % 7 === 0) parts.push(enc.encode(JSON.stringify({ seq: seq++, t: 1, type: 'log', level: 'info', msg: `µs → 字 😀 ${i}` }) + '\n'));
    if (i % 11 === 0) parts.push(new Uint8Array([0xef, 0xbb, 0xbf, ...enc.encode(JSON.stringify({ seq: seq++, t: 2, type: 'log', level: 'warn', msg: 'after a BOM' }) + '\n')]));
    if (i % 13 === 0) parts.push(enc.encode('\n\r\n'));
    // Malformed UTF-8 inside a string value, and a truncated sequence just before the newline.
    if (i % 17 === 0) parts.push(concat([enc.encode(`{"seq":${seq++},"t":3,"type":"log","level":"info","msg":"bad `), new Uint8Array([0xff, 0xc3, 0x28, 0xe2, 0x82]), enc.encode('"}\n')]));
    if (i % 19 === 0) parts.push(concat([enc.encode(`{"seq":${seq++},"t":3`), new Uint8Array([0xe2, 0x82]), enc.encode('\n')]));
    if (i % 23 === 0) parts.push(enc.encode(JSON.stringify({ seq: seq++, t: 4, type: 'log', level: 'info', msg: 'y'.repeat(700) }) + '\n'));
    if (i % 29 === 0) parts.push(enc.encode(`{"seq":${seq++},"t":5,"type":"xfer","dir":"sideways"}\n`));
    if (i % 31 === 0) parts.push(new Uint8Array([0xef, 0xbb, 0xbf, 0x0a]));
  });
  parts.push(enc.encode(`{"seq":${seq},"t":9,"type":"log","level":"info","msg":"cut off →`));
  return concat(parts);
}

describe('EventLineDecoder windows', () => {
  const bytes = mixedLog();

  it('gives the same events and reports for any chunking as line-at-a-time decoding', () => {
    for (const maxLineBytes of [undefined, 512]) {
      // One byte per push: every line is assembled from pieces and decoded on its own.
      const ref = decode(bytes, () => 1, maxLineBytes);
      expect(ref.events.length).toBeGreaterThan(40);
      expect(ref.bad.map((b) => b.reason)).toEqual(expect.arrayContaining(['not_json', 'schema', 'truncated', ...(maxLineBytes ? ['too_long'] : [])]));
      expect(ref.events.some(({ e }) => e.type === 'log' && e.msg === 'after a BOM')).toBe(true);
      expect(ref.events.some(({ e }) => e.type === 'log' && e.msg.startsWith('µs → 字 😀'))).toBe(true);
      expect(ref.events.some(({ e }) => e.type === 'log' && e.msg === 'bad \ufffd\ufffd(\ufffd')).toBe(true);
      const whole = decode(bytes, () => bytes.length, maxLineBytes);
      expect(whole).toEqual(ref);
      const rnd = lcg(7);
      for (let k = 0; k < 20; k++) {
        const top = [3, 50, 700, 5000][k % 4]!;
        expect(decode(bytes, () => Math.floor(rnd() * top), maxLineBytes)).toEqual(ref);
      }
    }
  });

  it('reads a chunk larger than one window (several MiB) the same as small chunks', () => {
    const run = syntheticRun({ users: 4, rounds: 8, gpuBlocks: 24 });
    const reps: string[] = [];
    let size = 0;
    for (let r = 0; size < 9 << 20; r++) {
      const text = run.map((e) => JSON.stringify({ ...e, seq: e.seq + r * run.length, msg: r % 3 === 0 ? 'δ' : undefined })).join('\n') + '\n';
      reps.push(text);
      size += text.length;
    }
    const big = enc.encode(reps.join(''));
    const whole = decode(big, () => big.length);
    const small = decode(big, () => 64 << 10);
    expect(whole.bad).toEqual([]);
    expect(whole.events.length).toBe(reps.length * run.length);
    expect(whole).toEqual(small);
  });
});

describe('EventLineDecoder and reused chunk buffers', () => {
  it('keeps its own copy of a line that spans chunks, even from a Node Buffer the caller then overwrites', () => {
    const run = syntheticRun();
    const bytes = Buffer.from(toJsonl(run));
    const events: KvEvent[] = [];
    const bad: BadLine[] = [];
    const d = new EventLineDecoder({ onEvent: (e) => events.push(e), onBadLine: (b) => bad.push(b) });
    // One reused buffer, as a reader with a fixed read buffer does; chunk ends fall inside lines.
    const buf = Buffer.alloc(37);
    for (let i = 0; i < bytes.length; i += buf.length) {
      const n = bytes.copy(buf, 0, i, i + buf.length);
      d.push(buf.subarray(0, n));
      buf.fill(0x7b);
    }
    d.end();
    expect(bad).toEqual([]);
    expect(events).toEqual(run);
  });
});
