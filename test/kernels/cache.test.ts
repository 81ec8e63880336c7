// Cache kernels (cache_probe, residual_store, residual_apply, forecast) vs the float64 references of
// reference-cache.ts on random odd sizes. residual_*: one float32 rounding (rtol 1.2e-7). cache_probe: cur is
// exact (same float32 subtraction); the float64 sums of n terms differ from a sequential float64 sum by
// summation order only (rtol 1e-12). forecast: float32 accumulation of k terms (atol 1e-6 at |s| ~ 1) and
// bit-exact against the engine's float32 evalTerms.
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import { evalTerms } from '../../runtime/cache/calibrators.ts';
import * as ref from './reference-cache.ts';
import { expectClose, randn } from './harness.ts';

const SIZES = [1, 7, 4095, 4097, 16384 * 3 + 37, 100_003];

function probe(prev: Float32Array | null, x0: Float32Array | null, h: Float32Array, cur: Float32Array | null) {
  const sums = new Float32Array(4);
  native.runKernel('cache_probe', [prev, x0, h, cur, sums], [h.length], []);
  const d = new Float64Array(sums.buffer);
  return { num: d[0], den: d[1] };
}

describe('cache_probe', () => {
  for (const n of SIZES)
    it(`fused residual + relative-L1 sums, n=${n}`, () => {
      const prev = randn(n, 1), x0 = randn(n, 2), h = randn(n, 3), cur = new Float32Array(n).fill(NaN);
      const got = probe(prev, x0, h, cur);
      const want = ref.cacheProbe(prev, x0, h);
      expect(Array.from(cur)).toEqual(Array.from(want.cur));
      expect(Math.abs(got.num - want.num)).toBeLessThanOrEqual(1e-12 * want.num);
      expect(Math.abs(got.den - want.den)).toBeLessThanOrEqual(1e-12 * want.den);
      // without x0 / cur: the DBPrune form (prev vs a tensor as is)
      const g2 = probe(prev, null, h, null);
      const w2 = ref.cacheProbe(prev, null, h);
      expect(Math.abs(g2.num - w2.num)).toBeLessThanOrEqual(1e-12 * w2.num);
      // deterministic: same sums bit for bit on a second call
      expect(probe(prev, x0, h, cur)).toEqual(got);
    });
  it('rejects short tensors and a short sums tensor', () => {
    const a = randn(10, 1);
    expect(() => native.runKernel('cache_probe', [a, null, randn(9, 2), null, new Float32Array(4)], [10], [])).toThrow(/h.*needs 10/);
    expect(() => native.runKernel('cache_probe', [a, null, a, null, new Float32Array(2)], [10], [])).toThrow(/sums.*needs 4/);
  });
});

describe('residual_store / residual_apply', () => {
  for (const n of SIZES)
    it(`n=${n}, and in place`, () => {
      const a = randn(n, 4), b = randn(n, 5), y = new Float32Array(n);
      native.runKernel('residual_store', [a, b, y], [n], []);
      expectClose(y, ref.residualStore(a, b), 0, 1.2e-7);
      native.runKernel('residual_apply', [a, b, y], [n], []);
      expectClose(y, ref.residualApply(a, b), 0, 1.2e-7);
      const want = ref.residualApply(a, b);
      native.runKernel('residual_apply', [a, b, a], [n], []);
      expectClose(a, want, 0, 1.2e-7);
    });
});

describe('forecast', () => {
  for (const k of [1, 2, 3, 6])
    it(`${k} terms, n=4097 and 100003: float64 reference and bit-exact vs evalTerms`, () => {
      for (const n of [4097, 100_003]) {
        const s = Array.from({ length: k }, (_, j) => randn(n, 10 + j));
        const c = [1, 0.37, 1.5, -2.25, 0.1, 3].slice(0, k);
        const y = new Float32Array(n);
        native.runKernel('forecast', [y, ...s], [n, k], c);
        expectClose(y, ref.forecast(s, c), 1e-6 * k, 1e-6);
        const host = evalTerms({ batch: 1, terms: [{ tensors: s, coefs: c }], precision: 'f32' }, n);
        expect(Buffer.from(y.buffer).equals(Buffer.from(host.buffer))).toBe(true);
        // c0 != 1
        const c2 = [0.5, ...c.slice(1)];
        native.runKernel('forecast', [y, ...s], [n, k], c2);
        const host2 = evalTerms({ batch: 1, terms: [{ tensors: s, coefs: c2 }], precision: 'f32' }, n);
        expect(Buffer.from(y.buffer).equals(Buffer.from(host2.buffer))).toBe(true);
      }
    });
  it('rejects k out of range and a missing term', () => {
    const y = new Float32Array(8);
    expect(() => native.runKernel('forecast', [y, y], [8, 0], [1])).toThrow(/k .*1\.\.6/);
    expect(() => native.runKernel('forecast', [y, y, null], [8, 2], [1, 1])).toThrow(/s1.*required/);
  });
});
