// The images a serving request hands the pipeline (Cache-DiT's image_urls, the OpenAI edits endpoint): a
// local path, base64 with or without a data-URI prefix, or an http(s) URL (fetched with a time and size bound),
// decoded to RGB. Every error names the field it came from.
import fs from 'node:fs';
import { decodeImage, type RgbImage } from '../image-input.ts';
import { UserError } from '../model-dir.ts';

const FETCH_TIMEOUT_MS = 30_000;

/** `field`'s image: bytes already read (a multipart file) or a string naming or holding one */
export async function imageFromSource(src: string | Uint8Array, field: string, maxBytes: number): Promise<RgbImage> {
  if (typeof src !== 'string') return decodeImage(src, field);
  const s = src.trim();
  if (/^https?:\/\//i.test(s)) return decodeImage(await fetchBytes(s, field, maxBytes), `${field} (${s})`);
  const data = /^data:image\/[a-z0-9.+-]+;base64,/i.exec(s);
  if (data) return decodeImage(base64(s.slice(data[0].length), field), field);
  if (s.startsWith('data:')) throw new UserError(`${field}: a data URI must be data:image/<type>;base64,<data>`);
  // a path when such a file exists, else base64 (a bare base64 PNG or JPEG starts iVBOR / /9j/)
  if (fs.existsSync(s)) {
    const st = fs.statSync(s);
    if (!st.isFile()) throw new UserError(`${field}: ${s} is not a file`);
    if (st.size > maxBytes) throw new UserError(`${field}: ${s} is ${st.size} bytes; at most ${maxBytes} are taken`);
    return decodeImage(fs.readFileSync(s), `${field} (${s})`);
  }
  if (/^(iVBOR|\/9j\/)/.test(s)) return decodeImage(base64(s, field), field);
  throw new UserError(`${field}: neither a file here, an http(s) URL, nor base64 image data (data:image/png;base64,... or bare base64 of a PNG or JPEG)`);
}

function base64(s: string, field: string): Buffer {
  const clean = s.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean) || clean.length % 4 === 1) throw new UserError(`${field}: not valid base64`);
  return Buffer.from(clean, 'base64');
}

async function fetchBytes(url: string, field: string, maxBytes: number): Promise<Buffer> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), redirect: 'follow' });
  } catch (e) {
    throw new UserError(`${field}: could not fetch ${url} (${(e as Error).message})`);
  }
  if (!res.ok) throw new UserError(`${field}: fetching ${url} gave HTTP ${res.status}`);
  const len = Number(res.headers.get('content-length') ?? 0);
  if (len > maxBytes) throw new UserError(`${field}: ${url} is ${len} bytes; at most ${maxBytes} are taken`);
  const body = Buffer.from(await res.arrayBuffer());
  if (body.length > maxBytes) throw new UserError(`${field}: ${url} is ${body.length} bytes; at most ${maxBytes} are taken`);
  return body;
}
