// `attention` vs the float64 reference in reference-gemm.ts.
// Tolerance: elementwise, from the error model in attentionRef: the float32 scores carry
// |ds| <= gamma_D * scale * sum |q k|, softmax turns that into a relative error of at most ~2|ds| per
// probability, and P V / the final normalization add gamma_Sk * max|v|. Dropped keys must get probability
// exactly 0 and a fully masked row must be exactly 0 (tolerance 0 there).
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import { expectClose, randn, sentinel } from './harness.ts';
import { attentionRef, compactRows } from './reference-gemm.ts';

interface Case { B: number; Sq: number; Sk: number; H: number; D: number; mask?: 'none' | 'some' | 'row0-all'; fused?: boolean; seed?: number; qScale?: number }

function runCase(c: Case) {
  const { B, Sq, Sk, H, D } = c;
  const HD = H * D, seed = c.seed ?? B * 31 + Sq * 7 + Sk * 3 + H * 11 + D;
  const scale = 1 / Math.sqrt(D);
  let q: Float32Array, k: Float32Array, v: Float32Array, qStride: number, kStride: number, vStride: number;
  let qArr: Float32Array, kArr: Float32Array, vArr: Float32Array;
  if (c.fused) {
    // one fused [B, S, 3*H*D (+pad)] qkv buffer, q/k/v as offset views with the same row stride
    if (Sq !== Sk) throw new Error('fused needs Sq == Sk');
    const st = 3 * HD + 3;
    const qkv = randn(B * Sq * st, seed, c.qScale ?? 1);
    qArr = qkv; kArr = qkv.subarray(HD); vArr = qkv.subarray(2 * HD);
    q = qkv; k = kArr; v = vArr;
    qStride = kStride = vStride = st;
  } else {
    qStride = HD + 2; kStride = HD + 5; vStride = HD + 1;
    q = qArr = randn(B * Sq * qStride, seed + 1, c.qScale ?? 1);
    k = kArr = randn(B * Sk * kStride, seed + 2);
    v = vArr = randn(B * Sk * vStride, seed + 3);
  }
  let keyMask: Float32Array | null = null;
  if (c.mask && c.mask !== 'none') {
    keyMask = new Float32Array(B * Sk);
    for (let b = 0; b < B; b++)
      for (let j = 0; j < Sk; j++) keyMask[b * Sk + j] = c.mask === 'row0-all' && b === 0 ? 0 : (j * 7 + b) % 3 === 0 ? 0 : 1;
    if (Sk > 1 && c.mask === 'some') keyMask[B * Sk - 1] = 0;
  }
  const oStride = HD + 3;
  const o = sentinel(B * Sq * oStride);
  native.runKernel('attention', [q, k, v, keyMask, o], [B, Sq, Sk, H, D, qStride, kStride, vStride, oStride], [scale]);
  const want = attentionRef({ q: qArr, k: kArr, v: vArr, keyMask, B, Sq, Sk, H, D, qStride, kStride, vStride, scale });
  const got = compactRows(o, B * Sq, HD, oStride);
  expectClose(got, want.o, 0, 0, want.tol, `attention ${JSON.stringify(c)}`);
  // row padding between heads' rows is never written
  for (let r = 0; r < B * Sq; r++) for (let cc = HD; cc < oStride; cc++) expect(o[r * oStride + cc]).toBe(Math.fround(-12345.678));
  return { got, want };
}

describe('attention', () => {
  for (const D of [16, 24, 32, 64, 128, 5]) {
    it(`D=${D}: odd Sq/Sk, separate strided q/k/v`, () => {
      for (const [Sq, Sk] of [[1, 1], [7, 13], [37, 65], [97, 130]] as const) runCase({ B: 2, Sq, Sk, H: 3, D });
    });
  }
  it('q/k/v as strided views of one fused qkv buffer', () => {
    runCase({ B: 2, Sq: 77, Sk: 77, H: 4, D: 32, fused: true });
    runCase({ B: 1, Sq: 129, Sk: 129, H: 2, D: 24, fused: true });
  });
  it('masked keys get probability 0', () => {
    runCase({ B: 2, Sq: 19, Sk: 70, H: 2, D: 16, mask: 'some' });
    runCase({ B: 3, Sq: 5, Sk: 200, H: 1, D: 64, mask: 'some' });
    // a dropped key with a huge value must not leak: its v is set to 1e30
    const B = 1, Sq = 3, Sk = 9, H = 1, D = 16;
    const q = randn(Sq * D, 5), k = randn(Sk * D, 6), v = randn(Sk * D, 7), mask = new Float32Array(Sk).fill(1);
    mask[4] = 0;
    v.fill(1e30, 4 * D, 5 * D);
    const o = sentinel(Sq * D);
    native.runKernel('attention', [q, k, v, mask, o], [B, Sq, Sk, H, D, D, D, D, D], [0.25]);
    const want = attentionRef({ q, k, v, keyMask: mask, B, Sq, Sk, H, D, qStride: D, kStride: D, vStride: D, scale: 0.25 });
    expectClose(o, want.o, 0, 0, want.tol, 'leak');
  });
  it('a fully masked batch row gives exactly 0', () => {
    const { got } = runCase({ B: 2, Sq: 6, Sk: 33, H: 2, D: 24, mask: 'row0-all' });
    for (let kk = 0; kk < 6 * 48; kk++) expect(got[kk]).toBe(0);
  });
  it('large logits (scale x 8) stay finite and accurate', () => {
    runCase({ B: 1, Sq: 40, Sk: 90, H: 2, D: 64, qScale: 8 });
  });
  it('DiT-like 1 x 256 x 256, H=4, D=64', () => {
    runCase({ B: 1, Sq: 256, Sk: 256, H: 4, D: 64, fused: true });
  });
});
