// An input image as diffusers' VaeImageProcessor.preprocess makes it from a PIL image: RGB, resized to the
// pipeline's size with PIL's Lanczos filter (Pillow's 8-bit fixed-point resampler, reproduced here: a
// horizontal then a vertical pass, each rounding to uint8), then x / 255 * 2 - 1 as [1, 3, H, W] float32.
import fs from 'node:fs';
import { PNG } from 'pngjs';
import { UserError } from './model-dir.ts';

/** HWC uint8 RGB pixels */
export interface RgbImage {
  width: number;
  height: number;
  pixels: Uint8Array;
}

/** the largest image taken (pixels), so a crafted header cannot ask for gigabytes */
const MAX_PIXELS = 64 * 1024 * 1024;

/** PNG bytes -> RGB (PIL's convert("RGB"): alpha dropped, grey replicated) */
function decodePng(b: Buffer, what: string): RgbImage {
  let png: { width: number; height: number; data: Uint8Array };
  try {
    png = PNG.sync.read(b);
  } catch (e) {
    throw new UserError(`${what}: a damaged PNG image (${(e as Error).message})`);
  }
  const n = png.width * png.height;
  if (n < 1 || n > MAX_PIXELS) throw new UserError(`${what}: ${png.width} x ${png.height} pixels; at most ${MAX_PIXELS} are taken`);
  const pixels = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    pixels[i * 3] = png.data[i * 4]!;
    pixels[i * 3 + 1] = png.data[i * 4 + 1]!;
    pixels[i * 3 + 2] = png.data[i * 4 + 2]!;
  }
  return { width: png.width, height: png.height, pixels };
}

function kindOf(b: Buffer, what: string): 'png' | 'jpeg' {
  if (b.length > 8 && b.readUInt32BE(0) === 0x89504e47) return 'png';
  if (b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  throw new UserError(`${what}: not a PNG or JPEG image (${b.length} bytes starting ${b.subarray(0, 4).toString('hex') || 'with nothing'})`);
}

/**
 * PNG or JPEG bytes -> RGB as PIL's open + convert("RGB") gives them: PNG through pngjs, JPEG through sharp
 * (libjpeg-turbo, as Pillow's wheels: the same pixels, fancy chroma upsampling included); `what` names the
 * input in errors
 */
export async function decodeImage(bytes: Uint8Array, what: string): Promise<RgbImage> {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (kindOf(b, what) === 'png') return decodePng(b, what);
  const { default: sharp } = await import('sharp');
  try {
    const { data, info } = await sharp(b, { limitInputPixels: MAX_PIXELS }).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, pixels: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    throw new UserError(`${what}: a damaged or unreadable JPEG image (${(e as Error).message})`);
  }
}

function readImageBytes(src: string, what: string): Buffer {
  try {
    return fs.readFileSync(src);
  } catch (e) {
    throw new UserError((e as NodeJS.ErrnoException).code === 'ENOENT' ? `${what}: no such file: ${src}` : `${what}: cannot read ${src} (${(e as Error).message})`);
  }
}

/** a PNG / JPEG file path or RGB pixels, decoded and checked */
export async function readRgbImage(src: string | RgbImage, what: string): Promise<RgbImage> {
  return typeof src === 'string' ? decodeImage(readImageBytes(src, what), `${what} ${src}`) : loadRgbImage(src, what);
}

/** the `image` / `mask` files of a generate request decoded (JPEG needs sharp's asynchronous decoder) */
export async function decodeRequestImages<T extends { image?: unknown; mask?: unknown }>(opts: T): Promise<T> {
  const out = { ...opts };
  if (typeof opts.image === 'string') out.image = await readRgbImage(opts.image, '--image');
  else if (Array.isArray(opts.image)) out.image = await Promise.all(opts.image.map((im, i) => (typeof im === 'string' ? readRgbImage(im, `--image ${i + 1}`) : im)));
  if (typeof opts.mask === 'string') out.mask = await readRgbImage(opts.mask, '--mask');
  return out;
}

/** RGB pixels checked, or a PNG file path read (a request's JPEG files are decoded before: decodeRequestImages) */
export function loadRgbImage(src: string | RgbImage, what: string): RgbImage {
  if (typeof src === 'string') {
    const b = readImageBytes(src, what);
    if (kindOf(b, `${what} ${src}`) === 'jpeg') throw new UserError(`${what} ${src}: a JPEG is decoded asynchronously; pass it through generate (or decodeRequestImages) first`);
    return decodePng(b, `${what} ${src}`);
  }
  const { width, height, pixels } = src ?? ({} as RgbImage);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new UserError(`${what}: width and height must be positive integers, got ${width} x ${height}`);
  if (!(pixels instanceof Uint8Array) || pixels.length !== width * height * 3) throw new UserError(`${what}: pixels must be a Uint8Array of ${width} x ${height} x 3 RGB values, got ${pixels?.length ?? 'none'}`);
  return { width, height, pixels };
}

// Pillow's Lanczos (a = 3) and its 8-bit coefficient precision
const SUPPORT = 3;
const PRECISION_BITS = 32 - 8 - 2;

function sinc(x: number): number {
  if (x === 0) return 1;
  const t = x * Math.PI;
  return Math.sin(t) / t;
}

function lanczos(x: number): number {
  return x >= -SUPPORT && x < SUPPORT ? sinc(x) * sinc(x / SUPPORT) : 0;
}

/** per output index: the first input index, the tap count, and the fixed-point taps (Pillow's precompute_coeffs) */
function coefficients(inSize: number, outSize: number): { bounds: Int32Array; taps: Int32Array; ksize: number } {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = SUPPORT * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const taps = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = lanczos((x + xmin - center + 0.5) * ss);
      ww += k[x]!;
    }
    for (let x = 0; x < ksize; x++) {
      const w = x < xmax && ww !== 0 ? k[x]! / ww : 0;
      // normalize_coeffs_8bpc: round half away from zero
      taps[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, taps, ksize };
}

function clip8(v: number): number {
  const x = Math.floor(v / (1 << PRECISION_BITS));
  return x < 0 ? 0 : x > 255 ? 255 : x;
}

/** one pass along one axis of an interleaved image of `C` channels */
function resamplePass(src: Uint8Array, C: number, inW: number, inH: number, outW: number, outH: number, horizontal: boolean): Uint8Array {
  const out = new Uint8Array(outW * outH * C);
  const { bounds, taps, ksize } = coefficients(horizontal ? inW : inH, horizontal ? outW : outH);
  for (let y = 0; y < outH; y++)
    for (let x = 0; x < outW; x++) {
      const o = horizontal ? x : y;
      const xmin = bounds[o * 2]!, n = bounds[o * 2 + 1]!;
      for (let c = 0; c < C; c++) {
        // the products fit a double exactly (< 2^53): the integer sum of Pillow's int32 accumulator
        let ss = 1 << (PRECISION_BITS - 1);
        for (let i = 0; i < n; i++) {
          const px = horizontal ? src[(y * inW + xmin + i) * C + c]! : src[((xmin + i) * inW + x) * C + c]!;
          ss += px * taps[o * ksize + i]!;
        }
        out[(y * outW + x) * C + c] = clip8(ss);
      }
    }
  return out;
}

/** PIL `image.resize((width, height), Image.LANCZOS)` of an interleaved image of `channels` (RGB: 3, L: 1) */
export function resizeLanczos(img: RgbImage, width: number, height: number, channels = 3): RgbImage {
  let { pixels } = img;
  let w = img.width;
  if (width !== img.width) {
    pixels = resamplePass(pixels, channels, img.width, img.height, width, img.height, true);
    w = width;
  }
  if (height !== img.height) pixels = resamplePass(pixels, channels, w, img.height, w, height, false);
  return { width, height, pixels };
}

/**
 * FluxFillPipeline's mask_processor: PIL convert("L") ((19595 R + 38470 G + 7471 B + 2^15) >> 16), resized to
 * height x width (Lanczos), / 255, binarized (< 0.5: keep, else repaint) -> [H * W] of 0 and 1
 */
export function maskInput(img: RgbImage, height: number, width: number): Float32Array {
  const n = img.width * img.height;
  const grey = new Uint8Array(n);
  for (let i = 0; i < n; i++) grey[i] = (img.pixels[i * 3]! * 19595 + img.pixels[i * 3 + 1]! * 38470 + img.pixels[i * 3 + 2]! * 7471 + 0x8000) >>> 16;
  const r = img.width === width && img.height === height ? grey : resizeLanczos({ width: img.width, height: img.height, pixels: grey }, width, height, 1).pixels;
  const out = new Float32Array(width * height);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(r[i]! / 255) < 0.5 ? 0 : 1;
  return out;
}

/** VaeImageProcessor.preprocess: resized to height x width, [1, 3, H, W] float32 in [-1, 1] */
export function vaeImageInput(img: RgbImage, height: number, width: number): Float32Array {
  const r = img.width === width && img.height === height ? img : resizeLanczos(img, width, height);
  const out = new Float32Array(3 * height * width);
  const f = Math.fround;
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < height * width; i++) out[c * height * width + i] = f(f(2 * f(r.pixels[i * 3 + c]! / 255)) - 1);
  return out;
}
