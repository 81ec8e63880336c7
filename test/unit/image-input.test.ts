// runtime/image-input.ts vs Pillow (test/fixtures/pil-references.json, made by test/parity/make-pil-references.py):
// LANCZOS resizes of RGB and grey images up and down at odd sizes, convert("L"), and a 4:2:0 JPEG decoded (sharp's
// libjpeg-turbo, as Pillow's: fancy chroma upsampling included), all exactly.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeImage, maskInput, resizeLanczos } from '../../runtime/image-input.ts';

const REF = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../fixtures/pil-references.json'), 'utf8')) as {
  resize: { mode: 'RGB' | 'L'; size: [number, number]; to: [number, number]; in: number[]; out: number[] }[];
  grey: { size: [number, number]; in: number[]; out: number[] };
  jpeg: { size: [number, number]; b64: string; decoded: number[] };
};

describe('image input vs Pillow', () => {
  for (const r of REF.resize) {
    it(`LANCZOS ${r.mode} ${r.size.join('x')} -> ${r.to.join('x')}: exact`, () => {
      const got = resizeLanczos({ width: r.size[0], height: r.size[1], pixels: Uint8Array.from(r.in) }, r.to[0], r.to[1], r.mode === 'RGB' ? 3 : 1);
      expect(Array.from(got.pixels)).toEqual(r.out);
    });
  }

  it('convert("L") of RGB, then binarized at 0.5: exact', () => {
    const [w, h] = REF.grey.size;
    const m = maskInput({ width: w, height: h, pixels: Uint8Array.from(REF.grey.in) }, h, w);
    expect(Array.from(m)).toEqual(REF.grey.out.map((v) => (v / 255 < 0.5 ? 0 : 1)));
  });

  it('a JPEG decodes as Pillow decodes it (both libjpeg-turbo); other bytes are a clear error', async () => {
    const img = await decodeImage(Buffer.from(REF.jpeg.b64, 'base64'), 'image');
    expect([img.width, img.height]).toEqual(REF.jpeg.size);
    let worst = 0;
    let sum = 0;
    for (let i = 0; i < img.pixels.length; i++) {
      const d = Math.abs(img.pixels[i]! - REF.jpeg.decoded[i]!);
      worst = Math.max(worst, d);
      sum += d;
    }
    const mean = sum / img.pixels.length;
    console.log(`JPEG decode vs Pillow: max abs ${worst} levels, mean ${mean.toFixed(3)}`);
    expect(worst).toBe(0);
    await expect(decodeImage(Buffer.from('GIF89a...'), 'image_urls[0]')).rejects.toThrow(/image_urls\[0\]: not a PNG or JPEG image/);
    await expect(decodeImage(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0]), 'x')).rejects.toThrow(/x: a damaged PNG image/);
    await expect(decodeImage(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]), 'y')).rejects.toThrow(/y: a damaged or unreadable JPEG image/);
  });
});
