/** saveImage: only SVG text or PNG data URLs reach disk, within a size limit, at the path asked for. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodeImage, MAX_IMAGE_BYTES, saveImage } from '../../src/main/core/export/image-file';
import { createCore } from '../../src/main/core/app-core';

/** A real 1×1 PNG (signature, IHDR, IDAT, IEND with CRCs), built here rather than pasted. */
function tinyPng(): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.from([0, 255, 0, 0]))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('saveImage', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvscope-image-'));
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>';

  it('writes SVG text and a PNG data URL byte for byte', async () => {
    const s = await saveImage('run-1', 'compare', svg, join(dir, 'chart.svg'));
    expect(readFileSync(s.path, 'utf8')).toBe(svg);
    const png = tinyPng();
    const p = await saveImage('run-1', 'timeline', `data:image/png;base64,${png.toString('base64')}`, join(dir, 'range.png'));
    expect(p).toMatchObject({ format: 'png', bytes: png.length });
    expect(readFileSync(p.path).equals(png)).toBe(true);
  });

  it('names the file after the run and chart when given a folder', async () => {
    const s = await saveImage('sample:h100 run', 'timeline', svg, dir);
    expect(s.path).toBe(join(dir, 'h100-run-timeline.svg'));
  });

  it('refuses anything else: other data URLs, non-PNG bytes, scripts, wrong extensions, relative paths, oversize', async () => {
    expect(() => decodeImage('data:image/jpeg;base64,AAAA')).toThrow(/only image\/png/);
    expect(() => decodeImage(`data:image/png;base64,${Buffer.from('GIF89a').toString('base64')}`)).toThrow(/does not hold a PNG/);
    expect(() => decodeImage('<html><svg/></html>')).toThrow(/must be SVG text/);
    expect(() => decodeImage('<svg><script>alert(1)</script></svg>')).toThrow(/script/);
    await expect(saveImage('r', 'compare', svg, join(dir, 'chart.png'))).rejects.toThrow(/file name ends in ".png"/);
    await expect(saveImage('r', 'compare', svg, 'relative.svg')).rejects.toThrow(/absolute/);
    await expect(saveImage('r', 'nope' as 'compare', svg, join(dir, 'x.svg'))).rejects.toThrow(/kind must be/);
    expect(() => decodeImage('<svg>' + ' '.repeat(MAX_IMAGE_BYTES) + '</svg>')).toThrow(/larger than/);
  });

  it('is on the bridge as a Result', async () => {
    const core = await createCore({ runsDir: mkdtempSync(join(tmpdir(), 'kvscope-core-img-')), samplesDir: null, shell: 'browser' });
    const good = await core.handlers.saveImage('r', 'compare', svg, join(dir, 'bridge.svg'));
    expect(good.ok).toBe(true);
    const bad = await core.handlers.saveImage('r', 'compare', 'not an image', join(dir, 'bridge2.svg'));
    expect(bad).toMatchObject({ ok: false, error: { code: 'invalid_argument' } });
  });
});
