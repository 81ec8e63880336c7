// The one safetensors parser of ditforge (docs/architecture.md §5).
//
// File layout: 8-byte little-endian u64 header length N, N bytes of JSON header, then the data section.
// Header: { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, "__metadata__": {..} }
// with offsets relative to the start of the data section.
//
// The file is read through the native addon's `mapFile` (read-only mmap) when the addon is built, else with
// one fs read; either way it is held once. F32 tensors at 4-byte-aligned offsets are returned as zero-copy
// views; F16/BF16 are converted once (cached); integer tensors are converted to float32 (exact below 2^24)
// for `tensor()`, and `ints()` returns them as JS numbers. Every error names the file and the tensor.

import fs from 'node:fs';
import os from 'node:os';
import { loadNative } from '../native.ts';

export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'U8';

const DTYPE_SIZE: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1 };
export const SAFETENSORS_DTYPES = Object.keys(DTYPE_SIZE) as SafetensorsDType[];

/** safetensors' own limit on the header size (100 MB) */
const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly tensorName?: string,
  ) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** byte range within the data section */
  begin: number;
  end: number;
}

export interface FloatTensor {
  dtype: SafetensorsDType;
  shape: number[];
  data: Float32Array;
}

if (os.endianness() !== 'LE') {
  throw new Error('ditforge: safetensors reading requires a little-endian host');
}

type MapFile = (path: string) => ArrayBuffer;
let mapFileImpl: MapFile | null | undefined;

/** The native addon's mmap, or null when the addon is not built (then files are read with fs). */
function getMapFile(): MapFile | null {
  if (mapFileImpl !== undefined) return mapFileImpl;
  if (process.env.DITFORGE_NO_MMAP === '1') return (mapFileImpl = null);
  try {
    const n = loadNative();
    mapFileImpl = typeof n.mapFile === 'function' ? (p: string) => n.mapFile(p) : null;
  } catch {
    mapFileImpl = null;
  }
  return mapFileImpl;
}

function product(shape: number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const f16Table = (() => {
  // exact float16 -> float32 values for all 65536 bit patterns
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    let v: number;
    if (e === 0) v = m * 2 ** -24;
    else if (e === 31) v = m === 0 ? Infinity : NaN;
    else v = (1 + m / 1024) * 2 ** (e - 15);
    t[h] = s * v;
  }
  return t;
})();

export function f16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16Table[bits[i]!]!;
  return out;
}

export function bf16ToF32(bits: Uint16Array): Float32Array {
  const u = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return new Float32Array(u.buffer);
}

export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private readonly converted = new Map<string, Float32Array>();

  constructor(
    readonly path: string,
    /** the whole file (mmap or one fs read) */
    private readonly buffer: ArrayBuffer,
    private readonly bufferOffset: number,
    readonly byteLength: number,
    /** absolute byte offset of the data section */
    readonly dataStart: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    readonly mapped: boolean,
  ) {
    this.tensors = tensors;
    this.metadata = metadata;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) {
      const known = this.names();
      const list = known.length > 8 ? `${known.slice(0, 8).join(', ')}, ... (${known.length} tensors)` : known.join(', ');
      throw new SafetensorsError(`${this.path}: no tensor "${name}" (file has: ${list || 'no tensors'})`, this.path, name);
    }
    return t;
  }

  /** raw bytes of a tensor (a view into the file) */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    return new Uint8Array(this.buffer, this.bufferOffset + this.dataStart + t.begin, t.end - t.begin);
  }

  /**
   * The tensor as float32. F32 at an aligned offset: a zero-copy view into the file (do not write to it);
   * F16/BF16/ints: converted once and cached.
   */
  tensor(name: string): FloatTensor {
    const t = this.info(name);
    const n = product(t.shape);
    const abs = this.bufferOffset + this.dataStart + t.begin;
    if (t.dtype === 'F32') {
      if (abs % 4 === 0) return { dtype: t.dtype, shape: [...t.shape], data: new Float32Array(this.buffer, abs, n) };
    }
    let data = this.converted.get(name);
    if (!data) {
      data = this.convert(t, abs, n);
      this.converted.set(name, data);
    }
    return { dtype: t.dtype, shape: [...t.shape], data };
  }

  /** integer tensors (I64/I32/U8) as JS numbers; I64 values must be safe integers */
  ints(name: string): number[] {
    const t = this.info(name);
    const n = product(t.shape);
    const bytes = this.bytes(name);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = new Array<number>(n);
    switch (t.dtype) {
      case 'I64':
        for (let i = 0; i < n; i++) {
          const v = dv.getBigInt64(i * 8, true);
          if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
            throw new SafetensorsError(`${this.path}: tensor "${name}": I64 value ${v} at index ${i} is not a safe JS integer`, this.path, name);
          }
          out[i] = Number(v);
        }
        return out;
      case 'I32':
        for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
        return out;
      case 'U8':
        for (let i = 0; i < n; i++) out[i] = bytes[i]!;
        return out;
      default:
        throw new SafetensorsError(`${this.path}: tensor "${name}" has dtype ${t.dtype}, expected an integer dtype (I64, I32, U8)`, this.path, name);
    }
  }

  private convert(t: TensorInfo, abs: number, n: number): Float32Array {
    const bytes = new Uint8Array(this.buffer, abs, t.end - t.begin);
    switch (t.dtype) {
      case 'F32':
        // unaligned: one copy
        return new Float32Array(bytes.slice().buffer);
      case 'F16':
      case 'BF16': {
        const bits = abs % 2 === 0 ? new Uint16Array(this.buffer, abs, n) : new Uint16Array(bytes.slice().buffer);
        const out = t.dtype === 'F16' ? f16ToF32(bits) : bf16ToF32(bits);
        // the float32 copy is what is kept: the mapped half-precision pages leave memory (peak ~1x the
        // float32 size instead of 1.5x)
        if (this.mapped) loadNative().releaseMappedPages(this.buffer, abs, t.end - t.begin);
        return out;
      }
      case 'I64':
      case 'I32':
      case 'U8':
        return Float32Array.from(this.ints(t.name));
    }
  }
}

function fail(file: string, msg: string, tensor?: string): never {
  throw new SafetensorsError(`${file}: ${msg}`, file, tensor);
}

/** Validates a header and returns its tensors and metadata. `dataSize` = file size - 8 - header length. */
export function parseHeader(
  file: string,
  headerBytes: Uint8Array,
  dataSize: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    fail(file, `invalid safetensors header: not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    fail(file, 'invalid safetensors header: the JSON header must be an object');
  }
  const tensors = new Map<string, TensorInfo>();
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        fail(file, 'invalid safetensors header: "__metadata__" must be an object of strings');
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(file, `invalid safetensors header: "__metadata__"."${k}" must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(file, `${where}: header entry must be an object`, name);
    const v = value as Record<string, unknown>;
    const dtype = v.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_SIZE)) {
      fail(file, `${where}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${SAFETENSORS_DTYPES.join(', ')})`, name);
    }
    const shape = v.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      fail(file, `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`, name);
    }
    const offs = v.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      fail(file, `${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`, name);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(file, `${where}: data_offsets [${begin}, ${end}] end before begin`, name);
    const expected = product(shape as number[]) * DTYPE_SIZE[dtype as SafetensorsDType];
    if (expected !== end - begin) {
      fail(
        file,
        `${where}: shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`,
        name,
      );
    }
    if (end > dataSize) {
      fail(file, `${where}: data_offsets [${begin}, ${end}] out of range: the data section has ${dataSize} bytes (file truncated?)`, name);
    }
    tensors.set(name, { name, dtype: dtype as SafetensorsDType, shape: [...(shape as number[])], begin, end });
  }
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.begin < a.end) {
      fail(file, `tensor "${b.name}": data_offsets [${b.begin}, ${b.end}] overlap tensor "${a.name}" [${a.begin}, ${a.end}]`, b.name);
    }
  }
  return { tensors, metadata };
}

function parseBuffer(path: string, buffer: ArrayBuffer, offset: number, size: number, mapped: boolean): SafetensorsFile {
  if (size < 8) fail(path, `not a safetensors file: ${size} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(buffer, offset, size);
  const n64 = dv.getBigUint64(0, true);
  if (n64 < 2n || n64 > BigInt(MAX_HEADER_BYTES) || n64 > BigInt(size - 8)) {
    fail(path, `invalid safetensors header length ${n64} (file has ${size} bytes; the header must fit in the file and be at most ${MAX_HEADER_BYTES} bytes)`);
  }
  const n = Number(n64);
  const { tensors, metadata } = parseHeader(path, new Uint8Array(buffer, offset + 8, n), size - 8 - n);
  return new SafetensorsFile(path, buffer, offset, size, 8 + n, tensors, metadata, mapped);
}

/** Opens and validates a safetensors file (mmap through the native addon when built, else one fs read). */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, path);
  }
  if (!st.isFile()) throw new SafetensorsError(`${path}: not a regular file`, path);
  const mapFile = st.size >= 8 ? getMapFile() : null;
  if (mapFile) {
    let ab: ArrayBuffer | undefined;
    try {
      ab = mapFile(path);
    } catch {
      ab = undefined; // fall back to fs
    }
    if (ab) return parseBuffer(path, ab, 0, ab.byteLength, true);
  }
  return openSafetensorsSync(path);
}

/** Synchronous variant, always reads with fs (one read, held once). */
export function openSafetensorsSync(path: string): SafetensorsFile {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, path);
  }
  return parseBuffer(path, buf.buffer as ArrayBuffer, buf.byteOffset, buf.byteLength, false);
}

export interface WriteTensor {
  dtype: 'F32' | 'I64' | 'I32' | 'U8';
  shape: number[];
  data: Float32Array | ArrayLike<number>;
}

/** Serialises tensors to safetensors bytes (header padded with spaces to 8-byte alignment). */
export function encodeSafetensors(tensors: Record<string, WriteTensor>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    const n = product(t.shape);
    if (t.data.length !== n) {
      throw new Error(`writeSafetensors: tensor "${name}" has ${t.data.length} values but shape [${t.shape.join(', ')}] needs ${n}`);
    }
    const bytes = n * DTYPE_SIZE[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  const enc = new TextEncoder();
  let hb = enc.encode(json);
  const pad = (8 - (hb.length % 8)) % 8;
  if (pad) hb = enc.encode(json + ' '.repeat(pad));
  const out = new Uint8Array(8 + hb.length + off);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const [, t] of entries) {
    const n = t.data.length;
    switch (t.dtype) {
      case 'F32':
        for (let i = 0; i < n; i++) dv.setFloat32(p + i * 4, t.data[i]!, true);
        p += n * 4;
        break;
      case 'I64':
        for (let i = 0; i < n; i++) dv.setBigInt64(p + i * 8, BigInt(Math.trunc(t.data[i]!)), true);
        p += n * 8;
        break;
      case 'I32':
        for (let i = 0; i < n; i++) dv.setInt32(p + i * 4, t.data[i]!, true);
        p += n * 4;
        break;
      case 'U8':
        for (let i = 0; i < n; i++) out[p + i] = t.data[i]!;
        p += n;
        break;
    }
  }
  return out;
}

/** Writes a safetensors file. */
export function writeSafetensors(path: string, tensors: Record<string, WriteTensor>, metadata?: Record<string, string>): void {
  fs.writeFileSync(path, encodeSafetensors(tensors, metadata));
}
