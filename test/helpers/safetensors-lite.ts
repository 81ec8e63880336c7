// Minimal safetensors reader for compiler tests (F32 / I64 / U8 -> Float32Array); the runtime's
// validating parser lives in runtime/io/safetensors.ts.
import fs from 'node:fs';

export interface LiteTensor {
  shape: number[];
  data: Float32Array;
}

export function readSafetensors(file: string): Map<string, LiteTensor> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  const out = new Map<string, LiteTensor>();
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = h.data_offsets;
    const bytes = buf.subarray(base + a, base + b);
    const count = h.shape.reduce((x, y) => x * y, 1);
    const data = new Float32Array(count);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < count; i++) {
      if (h.dtype === 'F32') data[i] = dv.getFloat32(i * 4, true);
      else if (h.dtype === 'I64') data[i] = Number(dv.getBigInt64(i * 8, true));
      else if (h.dtype === 'U8') data[i] = dv.getUint8(i);
      else throw new Error(`${file}: ${name}: dtype ${h.dtype} not supported by the lite reader`);
    }
    out.set(name, { shape: h.shape, data });
  }
  return out;
}

export function weightsMap(file: string): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  for (const [k, v] of readSafetensors(file)) m.set(k, v.data);
  return m;
}

export { relL2 } from '../../runtime/metrics.ts';
