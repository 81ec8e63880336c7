// Native FP8 all-to-all kernels (templates/cpu/fp8.cpp.hbs) are bit-exact with the host reference
// runtime/comm/fp8.ts on data with zeros, subnormals, huge values, inf and NaN; head padding and strided
// input of fp8_qkv_permute_quant match padHeads + qkvPermuteQuant.
import { describe, expect, it } from 'vitest';
import { perTokenDequant, perTokenQuant, qkvPermuteDequant, qkvPermuteQuant } from '../../runtime/comm/fp8.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { rng, randn } from '../helpers/random.ts';

const has = nativeAvailable() && native.kernels().includes('fp8_qkv_permute_quant');

function nasty(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const k = r();
    x[i] =
      k < 0.05 ? 0 : k < 0.08 ? -0 : k < 0.12 ? randn(r) * 1e-40 : k < 0.16 ? randn(r) * 1e4 : k < 0.18 ? randn(r) * 1e-8 : k < 0.185 ? Infinity : k < 0.19 ? -Infinity : k < 0.192 ? NaN : randn(r) * (1 + 10 * r());
  }
  return x;
}

const f32 = (u8: Uint8Array): Float32Array => new Float32Array(u8.buffer, u8.byteOffset, u8.byteLength / 4);
const bitsEq = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let bad = 0;
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) bad++;
  expect(bad).toBe(0);
};

describe.skipIf(!has)('native FP8 kernels == runtime/comm/fp8.ts (bit-exact)', () => {
  it('fp8_qkv_permute_quant / dequant: (B,S,P,N,D) -> (P,S,B,N,D+4), padding heads, strided rows', () => {
    for (const [B, S, P, N, D, H, extra] of [
      [1, 7, 3, 2, 32, 4, 0], // 4 heads over 3 ranks: last rank all padding
      [2, 5, 2, 3, 16, 6, 16], // strided rows
      [1, 9, 4, 1, 64, 3, 0],
    ] as const) {
      const xs = H * D + extra;
      const x = nasty(B * S * xs, 7 + S);
      // host reference: contiguous, zero-padded to P*N heads
      const padded = new Float32Array(B * S * P * N * D);
      for (let t = 0; t < B * S; t++) padded.set(x.subarray(t * xs, t * xs + H * D), t * P * N * D);
      const want = qkvPermuteQuant(padded, B, S, P, N, D);
      const got = new Uint8Array(want.length);
      native.runKernel('fp8_qkv_permute_quant', [x, f32(got)], [B, S, P, N, D, H, xs], []);
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
      // dequant of one rank's received chunk layout (S, B, N, D+4)
      const rows = P * S;
      const wantD = qkvPermuteDequant(want, rows, B, N, D);
      const gotD = new Float32Array(wantD.length);
      native.runKernel('fp8_qkv_permute_dequant', [f32(want), gotD], [rows, B, N, D], []);
      bitsEq(gotD, wantD);
    }
  });

  it('fp8_per_token_quant / dequant: rows of H -> H+2 bytes (bf16 scale), odd H', () => {
    for (const [rows, H] of [
      [10, 64],
      [7, 30],
      [3, 130],
    ] as const) {
      const x = nasty(rows * H, rows * H);
      const want = perTokenQuant(x, rows, H);
      const got = new Uint8Array(Math.ceil((rows * (H + 2)) / 4) * 4);
      native.runKernel('fp8_per_token_quant', [x, f32(got)], [rows, H], []);
      expect(Buffer.from(got.subarray(0, want.length)).equals(Buffer.from(want))).toBe(true);
      const padded = new Uint8Array(got.length);
      padded.set(want);
      const wantD = perTokenDequant(want, rows, H);
      const gotD = new Float32Array(rows * H);
      native.runKernel('fp8_per_token_dequant', [f32(padded), gotD], [rows, H], []);
      bitsEq(gotD, wantD);
    }
  });

  it('argument checks: D % 4, undersized byte buffers', () => {
    const x = new Float32Array(64);
    expect(() => native.runKernel('fp8_qkv_permute_quant', [x, new Float32Array(64)], [1, 2, 1, 1, 6, 1, 6], [])).toThrow(/D must be a multiple of 4/);
    expect(() => native.runKernel('fp8_per_token_quant', [x, new Float32Array(2)], [2, 32], [])).toThrow(/needs 17/);
  });
});
