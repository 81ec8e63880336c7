import { describe, expect, it } from 'vitest';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import {
  E4M3_TO_F32,
  bf16BitsToF32,
  dequantizeE4m3,
  f32ToBf16Bits,
  f32ToE4m3,
  perTokenDequant,
  perTokenQuant,
  qkvPermuteDequant,
  qkvPermuteQuant,
  quantizeE4m3,
} from '../../runtime/comm/fp8.ts';
import { Rng, randn } from '../../runtime/parallel/attention-ref.ts';

const { onnx } = onnxProto;

/** ORT graph: X f32 -> Cast(FLOAT8E4M3FN, saturate=1) -> Cast(FLOAT) -> Y. */
async function ortCastE4m3(x: Float32Array): Promise<Float32Array> {
  const F = onnx.TensorProto.DataType;
  const vi = (name: string, n: number) => ({ name, type: { tensorType: { elemType: F.FLOAT, shape: { dim: [{ dimValue: n }] } } } });
  const bytes = onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 10,
      opsetImport: [{ domain: '', version: 21 }],
      graph: {
        name: 'cast_e4m3',
        node: [
          { opType: 'Cast', input: ['X'], output: ['q'], attribute: [{ name: 'to', type: 2, i: 17 }, { name: 'saturate', type: 2, i: 1 }] },
          { opType: 'Cast', input: ['q'], output: ['Y'], attribute: [{ name: 'to', type: 2, i: 1 }] },
        ],
        input: [vi('X', x.length)],
        output: [vi('Y', x.length)],
      },
    }),
  ).finish();
  const s = await ort.InferenceSession.create(Buffer.from(bytes));
  const r = await s.run({ X: new ort.Tensor('float32', x, [x.length]) });
  return r.Y.data as Float32Array;
}

function testInputs(): Float32Array {
  const rng = new Rng(1234);
  const v: number[] = [0, -0, 448, -448, 449, 460, 463.99, 464, 464.01, 465, 479, 480, 481, 1000, -1000, 1e30, -1e30, Infinity, -Infinity, NaN];
  // Every midpoint between adjacent e4m3 magnitudes (normal and subnormal ties) and its neighbours.
  const mags = Array.from(E4M3_TO_F32.subarray(0, 0x7f));
  for (let i = 0; i + 1 < mags.length; i++) {
    const mid = Math.fround((mags[i] + mags[i + 1]) / 2);
    for (const m of [mid, nextUp(mid), nextDown(mid), mags[i]]) v.push(m, -m);
  }
  // Subnormal band 2^-7 .. 2^-12, float32 subnormals, and random normals at many scales.
  for (let i = 0; i < 2000; i++) v.push((rng.uniform() * 2 - 1) * 2 ** -(7 + 5 * rng.uniform()));
  for (let i = 0; i < 200; i++) v.push((rng.uniform() * 2 - 1) * 1e-40);
  for (let i = 0; i < 20000; i++) v.push(rng.normal() * 10 ** (rng.uniform() * 6 - 3));
  for (let i = 0; i < 4000; i++) v.push((rng.uniform() * 2 - 1) * 1200);
  // Random bit patterns (every exponent, NaN payloads).
  const bits = new Uint32Array(20000);
  for (let i = 0; i < bits.length; i++) bits[i] = (rng.uniform() * 2 ** 32) >>> 0;
  return Float32Array.from([...v, ...new Float32Array(bits.buffer)]);
}

function nextUp(x: number): number {
  const a = new Float32Array([x]);
  const u = new Uint32Array(a.buffer);
  u[0] += x >= 0 ? 1 : -1;
  return a[0];
}
function nextDown(x: number): number {
  const a = new Float32Array([x]);
  const u = new Uint32Array(a.buffer);
  u[0] -= x > 0 ? 1 : x === 0 ? 0 : -1;
  return a[0];
}

describe('float8 e4m3fn conversion', () => {
  it('is bit-exact against onnxruntime Cast(FLOAT8E4M3FN, saturate=1)', async () => {
    const x = testInputs();
    const y = await ortCastE4m3(x);
    let mism = 0;
    const examples: string[] = [];
    for (let i = 0; i < x.length; i++) {
      const ours = f32ToE4m3(x[i]);
      const theirs = f32ToE4m3(y[i]); // exact re-encode of ORT's (representable) result, sign kept
      const bothNaN = Number.isNaN(y[i]) && (ours & 0x7f) === 0x7f;
      if (ours !== theirs && !bothNaN) {
        mism++;
        if (examples.length < 8) examples.push(`${x[i]} -> ours 0x${ours.toString(16)} ort ${y[i]} (0x${theirs.toString(16)})`);
      }
    }
    console.log(`fp8 e4m3 vs ORT: ${x.length} values, ${mism} mismatches`);
    expect(examples).toEqual([]);
    expect(mism).toBe(0);
  });

  it('decodes every byte and round-trips every representable value', () => {
    for (let b = 0; b < 256; b++) {
      if ((b & 0x7f) === 0x7f) {
        expect(Number.isNaN(E4M3_TO_F32[b])).toBe(true);
        continue;
      }
      expect(f32ToE4m3(E4M3_TO_F32[b])).toBe(b);
    }
    expect(E4M3_TO_F32[0x7e]).toBe(448);
    expect(E4M3_TO_F32[0x01]).toBe(2 ** -9);
    expect(f32ToE4m3(-0)).toBe(0x80);
    expect(f32ToE4m3(2 ** -10)).toBe(0); // tie to even (0)
    expect(f32ToE4m3(3 * 2 ** -10)).toBe(2); // 1.5 units -> 2
    expect(dequantizeE4m3(quantizeE4m3(Float32Array.of(1000, -1e9, 0.1015625)))).toEqual(Float32Array.of(448, -448, 0.1015625));
  });

  it('bf16 bits round to nearest even', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(bf16BitsToF32(f32ToBf16Bits(0.1))).toBe(0.10009765625);
    expect(bf16BitsToF32(f32ToBf16Bits(1.337))).toBe(1.3359375);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });

  it("per-token quant matches Cache-DiT's roundtrip expectations (randn (2,3,128))", () => {
    const x = randn(new Rng(7), 2 * 3 * 128);
    const q = perTokenQuant(x, 6, 128);
    expect(q.length).toBe(2 * 3 * 130);
    const y = perTokenDequant(q, 6, 128);
    let mean = 0;
    let max = 0;
    for (let i = 0; i < x.length; i++) {
      const e = Math.abs(x[i] - y[i]);
      mean += e / x.length;
      max = Math.max(max, e);
    }
    console.log(`per-token fp8 roundtrip: mean abs err ${mean.toFixed(4)}, max ${max.toFixed(4)}`);
    expect(mean).toBeLessThan(0.05);
    expect(max).toBeLessThan(0.2);
    // scale is bf16(absmax/448) in the last two bytes of each row
    let amax = 1e-4;
    for (let i = 0; i < 128; i++) amax = Math.max(amax, Math.abs(x[i]));
    expect(bf16BitsToF32(q[128] | (q[129] << 8))).toBe(bf16BitsToF32(f32ToBf16Bits(Math.fround(Math.fround(amax) / 448))));
  });

  it('qkv permute quant: (2,4,3,5,64) -> (3,4,2,5,68) with per-(token, head) fp32 scales', () => {
    const [B, S, P, N, D] = [2, 4, 3, 5, 64];
    const x = randn(new Rng(9), B * S * P * N * D);
    x[0] = 1e4; // one outlier per row only hurts that row
    const q = qkvPermuteQuant(x, B, S, P, N, D);
    expect(q.length).toBe(3 * 4 * 2 * 5 * 68);
    const dv = new DataView(q.buffer);
    for (let p = 0; p < P; p++) {
      // chunk p is what rank p receives: (S, B, N, D+4), dequantised to (B, S, N, D)
      const chunk = q.subarray(p * S * B * N * 68, (p + 1) * S * B * N * 68);
      const y = qkvPermuteDequant(chunk, S, B, N, D);
      for (let b = 0; b < B; b++)
        for (let s = 0; s < S; s++)
          for (let n = 0; n < N; n++) {
            let amax = 0;
            for (let d = 0; d < D; d++) amax = Math.max(amax, Math.abs(x[(((b * S + s) * P + p) * N + n) * D + d]));
            const scale = dv.getFloat32((((p * S + s) * B + b) * N + n) * 68 + 64, true);
            expect(scale).toBe(Math.max(Math.fround(amax / 448), Math.fround(1e-6)));
            for (let d = 0; d < D; d++) {
              const xv = x[(((b * S + s) * P + p) * N + n) * D + d];
              const yv = y[((b * S + s) * N + n) * D + d];
              expect(Math.abs(xv - yv)).toBeLessThanOrEqual(amax / 448 * 16 + 1e-6); // half an e4m3 ulp at 448 = 16
            }
          }
    }
    const zeros = qkvPermuteQuant(new Float32Array(64), 1, 1, 1, 1, 64);
    expect(new DataView(zeros.buffer).getFloat32(64, true)).toBe(Math.fround(1e-6));
    expect(() => qkvPermuteQuant(new Float32Array(6), 1, 1, 1, 1, 6)).toThrow(/multiple of 4/);
  });
});
