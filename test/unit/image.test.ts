import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { quantizeHWC, roundHalfEven, toUint8HWC, writePng, readPng } from '../../runtime/image.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference');

describe('image conversion', () => {
  it('round half to even like numpy', () => {
    expect([0.5, 1.5, 2.5, 3.5, 254.5, 2.4999, 2.5001].map(roundHalfEven)).toEqual([0, 2, 2, 4, 254, 2, 3]);
  });

  for (const k of [0, 1, 2]) {
    it(`reference image -> image_uint8 exactly, and the PNG round-trips (prompt${k})`, () => {
      const f = openSafetensorsSync(path.join(FIX, `prompt${k}.safetensors`));
      const u8 = quantizeHWC(f.tensor('image').data, 3, 32, 32);
      expect(Array.from(u8)).toEqual(f.ints('image_uint8'));
      const ref = readPng(path.join(FIX, `prompt${k}.png`));
      expect(Array.from(ref.pixels)).toEqual(Array.from(u8));
      const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-')), 'x.png');
      writePng(tmp, u8, 32, 32);
      expect(Array.from(readPng(tmp).pixels)).toEqual(Array.from(u8));
    });
  }

  it('raw decoder output is denormalized and clamped', () => {
    const dec = Float32Array.from([-3, -1, 0, 1, 3, NaN]);
    expect(Array.from(toUint8HWC(dec, 1, 1, 6))).toEqual([0, 0, 128, 255, 255, 0]);
  });
});
