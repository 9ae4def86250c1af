/**
 * Opening a run's event log on disk: a run folder, `events.jsonl`, or `events.jsonl.gz`, streamed
 * (never read whole) through the shared decoder.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { EventLineDecoder, type DecoderSink } from '../../shared/events-reader';
import { CodedError } from '../../shared/result';
import { isKvscopeFile, readKvscopeFile } from './export/kvscope-file';

/** Resolves a user-given path (run folder or log file) to the log file inside it. */
export async function resolveEventLog(path: string): Promise<string> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new CodedError('not_found', `no such run or file: ${path}`);
  }
  if (!s.isDirectory()) return path;
  for (const name of ['events.jsonl', 'events.jsonl.gz']) {
    try {
      await stat(join(path, name));
      return join(path, name);
    } catch {
      // try the next name
    }
  }
  throw new CodedError('not_found', `${path} is a folder with no events.jsonl or events.jsonl.gz`);
}

/**
 * A byte stream of the (decompressed) log. `onRead` hears the running count of the file's own
 * bytes read (compressed bytes for a .gz), for a progress bar against the file's size.
 */
export function openLogBytes(file: string, start = 0, onRead?: (fileBytes: number) => void): AsyncIterable<Buffer> {
  // A portable run file (.kvscope, docs/kvscope-file.md) opens wherever a log does: its events section.
  if (isKvscopeFile(file)) {
    if (start !== 0) throw new CodedError('unsupported', `${file}: a .kvscope file is read from its start only`);
    return readKvscopeFile(file);
  }
  const raw = createReadStream(file, { start, highWaterMark: 1 << 20 });
  let read = 0;
  if (file.endsWith('.gz')) {
    const gunzip = createGunzip();
    raw.on('error', (e) => gunzip.destroy(e));
    // pipe() reads with 'data' events itself, so one more listener only counts.
    if (onRead) raw.on('data', (chunk) => onRead((read += chunk.length)));
    return raw.pipe(gunzip);
  }
  if (!onRead) return raw;
  return (async function* counted() {
    for await (const chunk of raw as AsyncIterable<Buffer>) {
      onRead((read += chunk.length));
      yield chunk;
    }
  })();
}

/** Streams every event of a log file into `sink`; returns the decoder with its counters. */
export async function readEventFile(file: string, sink: DecoderSink, onRead?: (fileBytes: number) => void): Promise<EventLineDecoder> {
  const decoder = new EventLineDecoder(sink);
  try {
    for await (const chunk of openLogBytes(file, 0, onRead)) decoder.push(chunk);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'Z_BUF_ERROR' || code === 'Z_DATA_ERROR') {
      // A cut-off .gz: keep every event that decompressed and report the damage as a bad line.
      decoder.end();
      sink.onBadLine?.({
        reason: 'truncated',
        offset: decoder.counts.bytes,
        line: decoder.lines + 1,
        seq: null,
        message: `compressed log is damaged or cut off after ${decoder.counts.bytes} bytes (${(e as Error).message})`,
      });
      return decoder;
    }
    throw e;
  }
  decoder.end();
  return decoder;
}
