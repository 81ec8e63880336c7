// Decoded image -> uint8 pixels and PNG (models/tiny-flux/README.md §6): diffusers' VaeImageProcessor
// postprocess, float32 throughout: clamp(x * 0.5 + 0.5, 0, 1), then numpy (x * 255).round() (half to even).

import fs from 'node:fs';
import { PNG } from 'pngjs';

const f = Math.fround;

/** numpy round-half-to-even of a non-negative or negative number */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // half-up
  if (r - x === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/** `(img * 0.5 + 0.5).clamp(0, 1)` in float32, NCHW kept */
export function denormalize(decoded: Float32Array): Float32Array {
  const out = new Float32Array(decoded.length);
  for (let i = 0; i < decoded.length; i++) {
    const v = f(f(decoded[i]! * 0.5) + 0.5);
    out[i] = v < 0 ? 0 : v > 1 ? 1 : v; // NaN stays NaN, as torch.clamp
  }
  return out;
}

/**
 * Decoder output (raw, NCHW float32) of batch item `b` -> uint8 HWC RGB pixels, exactly like diffusers'
 * `numpy_to_pil(pt_to_numpy(denormalize(x)))`.
 */
export function toUint8HWC(decoded: Float32Array, C: number, H: number, W: number, b = 0): Uint8Array {
  const n = C * H * W;
  return quantizeHWC(denormalize(decoded.subarray(b * n, (b + 1) * n)), C, H, W);
}

/** [0,1] NCHW float32 image of batch item `b` -> uint8 HWC: numpy `(x * 255).round().astype(uint8)` */
export function quantizeHWC(img: Float32Array, C: number, H: number, W: number, b = 0): Uint8Array {
  const out = new Uint8Array(H * W * C);
  const base = b * C * H * W;
  for (let c = 0; c < C; c++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const r = roundHalfEven(f(img[base + (c * H + y) * W + x]! * 255));
        out[(y * W + x) * C + c] = Number.isNaN(r) ? 0 : r < 0 ? 0 : r > 255 ? 255 : r;
      }
  return out;
}

/** HWC uint8 RGB (or RGBA) -> PNG bytes */
export function encodePng(pixels: Uint8Array, width: number, height: number, channels = 3): Buffer {
  const png = new PNG({ width, height, colorType: channels === 4 ? 6 : 2, inputColorType: channels === 4 ? 6 : 2, inputHasAlpha: channels === 4 });
  // pngjs keeps RGBA internally
  for (let i = 0; i < width * height; i++) {
    png.data[i * 4] = pixels[i * channels]!;
    png.data[i * 4 + 1] = pixels[i * channels + 1]!;
    png.data[i * 4 + 2] = pixels[i * channels + 2]!;
    png.data[i * 4 + 3] = channels === 4 ? pixels[i * channels + 3]! : 255;
  }
  return PNG.sync.write(png, { colorType: channels === 4 ? 6 : 2 });
}

export function writePng(file: string, pixels: Uint8Array, width: number, height: number, channels = 3): void {
  fs.writeFileSync(file, encodePng(pixels, width, height, channels));
}

/** PNG file -> HWC uint8 RGB */
export function readPng(file: string): { width: number; height: number; pixels: Uint8Array } {
  const png = PNG.sync.read(fs.readFileSync(file));
  const pixels = new Uint8Array(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) {
    pixels[i * 3] = png.data[i * 4]!;
    pixels[i * 3 + 1] = png.data[i * 4 + 1]!;
    pixels[i * 3 + 2] = png.data[i * 4 + 2]!;
  }
  return { width: png.width, height: png.height, pixels };
}
