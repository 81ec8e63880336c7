// `attention_bias` (the text encoders' attention: CLIP's causal mask, T5's additive relative position
// bias) and `t5_position_bias` against float64 references. attention_bias uses attentionRef's error model
// (reference-gemm.ts) with the bias's rounding added to the score bound; keys beyond the causal limit must
// get probability exactly 0 (a huge v there must not leak). t5_position_bias is a table lookup: exact.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import { expectClose, randn, sentinel } from './harness.ts';
import { attentionRef, compactRows } from './reference-gemm.ts';

interface Case { B: number; Sq: number; Sk: number; H: number; D: number; causal: boolean; bias: boolean; mask?: boolean; seed: number }

/** a key mask [B, Sk] keeping a prefix of each row (UMT5's padding mask; >= 1 key per row) */
function prefixMask(B: number, Sk: number, seed: number): Float32Array {
  const m = new Float32Array(B * Sk);
  for (let b = 0; b < B; b++) {
    const keep = 1 + ((seed * 7 + b * 13) % Sk);
    m.fill(1, b * Sk, b * Sk + keep);
  }
  return m;
}

function runCase(c: Case) {
  const { B, Sq, Sk, H, D } = c;
  const HD = H * D, qStride = HD + 2, kStride = HD + 3, vStride = HD + 1, oStride = HD + 5;
  const q = randn(B * Sq * qStride, c.seed), k = randn(B * Sk * kStride, c.seed + 1), v = randn(B * Sk * vStride, c.seed + 2);
  const bias = c.bias ? randn(H * Sq * Sk, c.seed + 3, 2) : null;
  const scale = c.bias ? 1 : 1 / Math.sqrt(D); // T5 does not scale its scores
  const keyMask = c.mask ? prefixMask(B, Sk, c.seed) : null;
  const o = sentinel(B * Sq * oStride);
  native.runKernel('attention_bias', [q, k, v, bias, keyMask, o], [B, Sq, Sk, H, D, qStride, kStride, vStride, oStride, c.causal ? 1 : 0], [scale]);
  const want = attentionRef({ q, k, v, keyMask, bias, causal: c.causal, B, Sq, Sk, H, D, qStride, kStride, vStride, scale });
  expectClose(compactRows(o, B * Sq, HD, oStride), want.o, 0, 0, want.tol, `attention_bias ${JSON.stringify(c)}`);
  for (let r = 0; r < B * Sq; r++) for (let cc = HD; cc < oStride; cc++) expect(o[r * oStride + cc]).toBe(Math.fround(-12345.678));
}

/** transformers T5Attention._relative_position_bucket, written out in float64 */
function bucketRef(rel: number, numBuckets: number, maxDistance: number, bidirectional: boolean): number {
  let nb = numBuckets, out = 0, n = rel;
  if (bidirectional) {
    nb = nb >> 1;
    if (n > 0) out += nb;
    n = Math.abs(n);
  } else n = Math.max(-n, 0);
  const exact = nb >> 1;
  if (n < exact) return out + n;
  return out + Math.min(exact + Math.floor((Math.log(n / exact) / Math.log(maxDistance / exact)) * (nb - exact)), nb - 1);
}

describe('attention_bias', () => {
  it('causal (CLIP) at odd sizes and head dims', () => {
    for (const [Sq, D] of [[1, 5], [7, 16], [77, 24], [130, 64]] as const) runCase({ B: 2, Sq, Sk: Sq, H: 3, D, causal: true, bias: false, seed: Sq + D });
  });
  it('additive bias [H, Sq, Sk] (T5), Sq != Sk, unscaled scores', () => {
    for (const [Sq, Sk, D] of [[1, 1, 8], [13, 29, 16], [33, 33, 64], [65, 17, 7]] as const) runCase({ B: 2, Sq, Sk, H: 4, D, causal: false, bias: true, seed: Sq * Sk + D });
  });
  it('bias and a key mask [B, Sk] (UMT5 over padding), odd sizes', () => {
    for (const [Sq, Sk, D] of [[1, 1, 8], [13, 29, 16], [37, 37, 7]] as const) runCase({ B: 3, Sq, Sk, H: 2, D, causal: false, bias: true, mask: true, seed: Sq + Sk + D });
  });
  it('masked keys get probability exactly 0', () => {
    const Sk = 6, D = 4;
    const q = randn(Sk * D, 4), k = randn(Sk * D, 5), v = randn(Sk * D, 6);
    v.fill(1e30, 3 * D); // keys 3.. are padding
    const mask = Float32Array.from([1, 1, 1, 0, 0, 0]);
    const o = sentinel(Sk * D);
    native.runKernel('attention_bias', [q, k, v, randn(Sk * Sk, 7), mask, o], [1, Sk, Sk, 1, D, D, D, D, D, 0], [1]);
    for (const x of o) expect(Math.abs(x)).toBeLessThan(10);
  });
  it('grouped-query attention (kvHeads = 2 of H = 6, causal, key mask): the repeat_kv reference', () => {
    const B = 2, S = 9, H = 6, Hk = 2, D = 8, g = H / Hk;
    const q = randn(B * S * H * D, 31), k = randn(B * S * Hk * D, 32), v = randn(B * S * Hk * D, 33);
    const keyMask = prefixMask(B, S, 3);
    const o = sentinel(B * S * H * D);
    native.runKernel('attention_bias', [q, k, v, null, keyMask, o], [B, S, S, H, D, H * D, Hk * D, Hk * D, H * D, 1, Hk], [1 / Math.sqrt(D)]);
    // transformers' repeat_kv: query head h reads key/value head floor(h / g)
    const rep = (t: Float32Array) => Float32Array.from({ length: B * S * H * D }, (_, i) => t[Math.floor(i / (H * D)) * Hk * D + Math.floor((i % (H * D)) / D / g) * D + (i % D)]!);
    const want = attentionRef({ q, k: rep(k), v: rep(v), keyMask, bias: null, causal: true, B, Sq: S, Sk: S, H, D, qStride: H * D, kStride: H * D, vStride: H * D, scale: 1 / Math.sqrt(D) });
    expectClose(o, want.o, 0, 0, want.tol, 'attention_bias GQA');
    expect(() => native.runKernel('attention_bias', [q, k, v, null, null, o], [B, S, S, H, D, H * D, Hk * D, Hk * D, H * D, 0, 4], [1])).toThrow(/kvHeads must divide H/);
  });
  it('causal and bias together', () => {
    runCase({ B: 1, Sq: 41, Sk: 41, H: 2, D: 32, causal: true, bias: true, seed: 9 });
  });
  it('keys beyond the causal limit get probability exactly 0', () => {
    const Sq = 5, D = 8;
    const q = randn(Sq * D, 1), k = randn(Sq * D, 2), v = randn(Sq * D, 3);
    v.fill(1e30, (Sq - 1) * D); // the last key's value: only the last query may see it
    const o = sentinel(Sq * D);
    native.runKernel('attention_bias', [q, k, v, null, null, o], [1, Sq, Sq, 1, D, D, D, D, D, 1], [0.5]);
    for (let k2 = 0; k2 < (Sq - 1) * D; k2++) expect(Math.abs(o[k2]!)).toBeLessThan(10);
  });
  it('rejects a short bias and a causal flag other than 0/1', () => {
    const q = randn(2 * 3 * 8, 1), o = new Float32Array(2 * 3 * 8);
    expect(() => native.runKernel('attention_bias', [q, q, q, new Float32Array(5), null, o], [2, 3, 3, 2, 4, 8, 8, 8, 8, 0], [1])).toThrow(/bias.*holds 5 floats, needs 18/);
    expect(() => native.runKernel('attention_bias', [q, q, q, null, null, o], [2, 3, 3, 2, 4, 8, 8, 8, 8, 2], [1])).toThrow(/causal must be 0 or 1/);
  });
});

describe('t5_position_bias', () => {
  for (const [H, Sq, Sk, NB, MD, bidir] of [[4, 32, 32, 32, 128, true], [3, 7, 300, 32, 128, true], [2, 200, 9, 16, 20, true], [5, 40, 40, 32, 128, false]] as const) {
    it(`H=${H} ${Sq}x${Sk} buckets ${NB} max distance ${MD} ${bidir ? 'bidirectional' : 'causal'}: table[bucket(j - i), h]`, () => {
      const table = randn(NB * H, Sq + Sk + NB);
      const out = sentinel(H * Sq * Sk);
      native.runKernel('t5_position_bias', [table, out], [H, Sq, Sk, NB, MD, bidir ? 1 : 0], []);
      const want = new Float64Array(H * Sq * Sk);
      for (let h = 0; h < H; h++) for (let i = 0; i < Sq; i++) for (let j = 0; j < Sk; j++) want[(h * Sq + i) * Sk + j] = table[bucketRef(j - i, NB, MD, bidir) * H + h]!;
      expectClose(out, want, 0, 0, undefined, 't5_position_bias');
    });
  }
});
