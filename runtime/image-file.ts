// Image output files: the extension decides the format (PNG through pngjs; JPEG and WebP through sharp, the
// encoder the JPEG input already uses), checked with the destination's writability before any compute.
import fs from 'node:fs';
import path from 'node:path';
import { encodePng } from './image.ts';
import { UserError } from './model-dir.ts';
import { checkWritableDir } from './video.ts';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;
export type ImageFormat = 'png' | 'jpeg' | 'webp';

/** the format `out` asks for, its directory checked writable (the OS reason named); an unknown extension is an error */
export function checkImageOutput(out: string): ImageFormat {
  if (!out) throw new UserError('the image output path is empty');
  const ext = path.extname(out).toLowerCase();
  const format = ({ '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp' } as const)[ext as (typeof IMAGE_EXTENSIONS)[number]];
  if (!format) throw new UserError(`${out}: unsupported image output extension "${path.extname(out)}"; use one of ${IMAGE_EXTENSIONS.join(', ')}`);
  const abs = path.resolve(out);
  if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) throw new UserError(`cannot write the image to ${out}: it is a directory (EISDIR)`);
  checkWritableDir(out, path.dirname(abs), 'the image');
  return format;
}

/** HWC uint8 RGB -> the file's format (JPEG quality 95, WebP lossless) */
export async function writeImage(file: string, pixels: Uint8Array, width: number, height: number): Promise<void> {
  const format = checkImageOutput(file);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  if (format === 'png') return fs.writeFileSync(file, encodePng(pixels, width, height));
  const { default: sharp } = await import('sharp');
  const img = sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width, height, channels: 3 } });
  await (format === 'jpeg' ? img.jpeg({ quality: 95 }) : img.webp({ lossless: true })).toFile(file);
}
