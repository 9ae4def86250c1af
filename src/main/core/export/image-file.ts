/**
 * Writes a chart image the renderer drew (the compare chart, the timeline's visible range): the
 * renderer hands over SVG text or a PNG data URL, and only those, within a size limit, reach disk.
 * Drawing stays in the renderer (it has the canvas and the DOM); this side only validates and writes.
 */
import { rename, rm, stat, writeFile } from 'node:fs/promises';
import { extname, isAbsolute, join } from 'node:path';
import { CodedError } from '../../../shared/result';

export type ImageKind = 'compare' | 'timeline';
export const IMAGE_KINDS: readonly ImageKind[] = ['compare', 'timeline'];
/** A 4K PNG of a dense timeline is ~10 MB; a decoded image past this is not a chart. */
export const MAX_IMAGE_BYTES = 50 * 1024 * 1024;
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const PNG_DATA_URL = 'data:image/png;base64,';

/** The bytes and format of what the renderer handed over, or a clear refusal. */
export function decodeImage(data: string): { format: 'png' | 'svg'; bytes: Buffer } {
  if (typeof data !== 'string') throw new CodedError('invalid_argument', 'saveImage: the image must be SVG text or a PNG data URL');
  // Base64 is 4/3 of the bytes: refuse before decoding anything oversized.
  if (data.length > Math.ceil((MAX_IMAGE_BYTES * 4) / 3) + PNG_DATA_URL.length) throw new CodedError('invalid_argument', `saveImage: the image is larger than ${MAX_IMAGE_BYTES} bytes`);
  if (data.startsWith(PNG_DATA_URL)) {
    const b64 = data.slice(PNG_DATA_URL.length);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new CodedError('invalid_argument', 'saveImage: the PNG data URL is not valid base64');
    const bytes = Buffer.from(b64, 'base64');
    if (bytes.length < PNG_SIGNATURE.length || !bytes.subarray(0, 8).equals(PNG_SIGNATURE)) throw new CodedError('invalid_argument', 'saveImage: the data URL does not hold a PNG');
    return { format: 'png', bytes };
  }
  if (data.startsWith('data:')) throw new CodedError('invalid_argument', `saveImage: only image/png data URLs are accepted (got ${data.slice(0, 30)}...)`);
  const text = data.replace(/^\uFEFF/, '').trimStart();
  const head = text.slice(0, 512).toLowerCase();
  if (!(head.startsWith('<svg') || ((head.startsWith('<?xml') || head.startsWith('<!--')) && head.includes('<svg')))) {
    throw new CodedError('invalid_argument', 'saveImage: the image must be SVG text (starting with <svg or an XML declaration) or a PNG data URL');
  }
  // A chart has no scripts; an SVG that carries one would run when the file is opened in a browser.
  if (/<script[\s>]/i.test(text)) throw new CodedError('invalid_argument', 'saveImage: the SVG contains a <script> element');
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > MAX_IMAGE_BYTES) throw new CodedError('invalid_argument', `saveImage: the image is larger than ${MAX_IMAGE_BYTES} bytes`);
  return { format: 'svg', bytes };
}

function slug(s: string): string {
  return (String(s).replace(/^sample:/, '').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '') || 'run').slice(0, 80);
}

/**
 * Writes the image to `destPath` (absolute; its extension must match the image's format), or into
 * the folder `destPath` as `<run>-<kind>.<png|svg>`. Written to a temporary name, then renamed.
 */
export async function saveImage(runIdOrName: string, kind: ImageKind, data: string, destPath: string): Promise<{ path: string; bytes: number; format: 'png' | 'svg' }> {
  if (!IMAGE_KINDS.includes(kind)) throw new CodedError('invalid_argument', `saveImage: kind must be one of ${IMAGE_KINDS.join(', ')}`);
  if (typeof destPath !== 'string' || !isAbsolute(destPath)) throw new CodedError('invalid_argument', `saveImage needs an absolute destination path (got ${JSON.stringify(destPath)})`);
  const { format, bytes } = decodeImage(data);
  let path = destPath;
  const s = await stat(destPath).catch(() => null);
  if (s?.isDirectory()) path = join(destPath, `${slug(runIdOrName)}-${kind}.${format}`);
  else if (extname(path).toLowerCase() !== `.${format}`) throw new CodedError('invalid_argument', `saveImage: the image is ${format.toUpperCase()} but the file name ends in "${extname(path) || '(nothing)'}"`);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new CodedError('io_error', `saveImage: cannot write ${path}: ${(e as Error).message}`);
  }
  return { path, bytes: bytes.length, format };
}
