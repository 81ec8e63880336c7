// Cache kernels (cache_probe, residual_store, residual_apply, forecast, and the calibrator kernels taylor_diff,
// foca_forecast, dmd_gram, forecast_f64) vs the float64 references of reference-cache.ts on random odd sizes.
// residual_*: one float32 rounding (rtol 1.2e-7). cache_probe: cur is exact (same float32 subtraction); the
// float64 sums of n terms differ from a sequential float64 sum by summation order only (rtol 1e-12). forecast:
// float32 accumulation of k terms (atol 1e-6 at |s| ~ 1) and bit-exact against the engine's float32 evalTerms.
// The calibrator kernels are also checked bit for bit against `hostOps` (runtime/cache/tensor-ops.ts), the
// host calibrators' arithmetic, through NativeTensorOps (which chains launches beyond the ABI's tensor slots).
import { describe, expect, it } from 'vitest';
import { native } from '../../runtime/native.ts';
import { evalTerms } from '../../runtime/cache/calibrators.ts';
import { hostOps } from '../../runtime/cache/tensor-ops.ts';
import { NativeTensorOps } from '../../runtime/cache/native-ops.ts';
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

const bitEqual = (a: Float32Array | Float64Array, b: Float32Array | Float64Array) =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
const nops = new NativeTensorOps(native);

describe('taylor_diff', () => {
  for (const n of SIZES)
    it(`n=${n}: float64 reference, bit-exact vs hostOps.diff, in place`, () => {
      const a = randn(n, 20), b = randn(n, 21);
      for (const w of [1, 3, 7]) {
        const y = new Float32Array(n);
        native.runKernel('taylor_diff', [a, b, y], [n], [w]);
        // (a - b) rounded, then / w rounded: two float32 roundings -> rtol 2 * 2^-24
        expectClose(y, ref.taylorDiff(a, b, w), 0, 1.2e-7);
        expect(bitEqual(y, hostOps.diff(a, b, w))).toBe(true);
        expect(bitEqual(nops.diff(a, b, w), y)).toBe(true);
      }
      const a2 = a.slice();
      native.runKernel('taylor_diff', [a2, b, a2], [n], [3]);
      expect(bitEqual(a2, hostOps.diff(a, b, 3))).toBe(true);
    });
});

describe('foca_forecast', () => {
  for (const n of SIZES)
    it(`n=${n}: Heun (e <= 3) and damped (e > 3) vs float64, bit-exact vs hostOps.foca`, () => {
      const [full, prev, fk, fkm1] = [30, 31, 32, 33].map((sd) => randn(n, sd));
      for (const e of [1, 2, 3, 4, 7]) {
        const y = nops.foca(full, prev, fk, fkm1, e);
        // <= 6 float32 roundings of values |x| <~ 5 * (1 + e): atol 4e-6 covers cancellation, rtol for the rest
        expectClose(y, ref.focaForecast(full, prev, fk, fkm1, e), 4e-6, 1e-6);
        expect(bitEqual(y, hostOps.foca(full, prev, fk, fkm1, e))).toBe(true);
      }
    });
});

describe('dmd_gram', () => {
  for (const [batch, d] of [[1, 1], [1, 7], [1, 4097], [3, 4097], [2, 16384 * 3 + 37], [1, 100_003]] as const)
    it(`batch ${batch} x ${d}: float64 Gram matrices vs a sequential sum, bit-exact vs hostOps.gram`, () => {
      const n = batch * d;
      // k <= 7: one symmetric launch; 9: 3 x 4 tiles (block launches, kb > 0)
      for (const k of [1, 4, 7, 9]) {
        const x = Array.from({ length: k }, (_, j) => randn(n, 41 + j));
        const got = nops.gram(x, batch)();
        const want = ref.dmdGram(x, batch);
        for (let q = 0; q < want.length; q++) {
          // float64 sums of exact products: summation order only, 1e-12 of the sum of |products| (~ d)
          expect(Math.abs(got[q] - want[q])).toBeLessThanOrEqual(1e-12 * d);
        }
        expect(bitEqual(got, hostOps.gram(x, batch)())).toBe(true);
      }
    });
  it('rejects a batch that does not divide n, too many tensors, a missing tensor, a short g', () => {
    const a = randn(10, 1);
    expect(() => native.runKernel('dmd_gram', [new Float32Array(2), a], [10, 3, 1, 0], [])).toThrow(/batch .*divide n = 10/);
    expect(() => native.runKernel('dmd_gram', [new Float32Array(200), a], [10, 1, 5, 3], [])).toThrow(/ka \+ kb <= 7/);
    expect(() => native.runKernel('dmd_gram', [new Float32Array(8), a, null], [10, 1, 2, 0], [])).toThrow(/x1.*required/);
    expect(() => native.runKernel('dmd_gram', [new Float32Array(6), a, a], [10, 1, 2, 0], [])).toThrow(/g.*needs 8/);
  });
});

describe('forecast_f64', () => {
  for (const [batch, d] of [[1, 1], [1, 4097], [3, 4097], [2, 16384 * 3 + 37], [1, 100_003]] as const)
    it(`batch ${batch} x ${d}: float64 accumulation, one or chained launches, bit-exact vs hostOps.combine64`, () => {
      const n = batch * d;
      for (const k of [1, 3, 5, 8, 11]) {
        const s = Array.from({ length: k }, (_, j) => randn(n, 50 + j));
        const coefs = Array.from({ length: batch }, (_, b) => Array.from({ length: k }, (_, j) => Math.sin(1 + b + 0.37 * j) * 1.7));
        const y = nops.combine64(s, coefs, batch);
        // one float32 rounding of a float64 sum of k terms (cancellation is in float64: ~1e-15)
        expectClose(y, ref.forecastF64(s, coefs, batch), 1e-12, 6e-8);
        expect(bitEqual(y, hostOps.combine64(s, coefs, batch))).toBe(true);
      }
    });
  it('a non-finite output anywhere makes the whole result the last term (DMD: newest snapshot), on device', () => {
    const n = 4097 * 2;
    const s = [randn(n, 60), randn(n, 61), randn(n, 62)];
    const coefs = [[1, 2, 3], [1e300, 1e300, 0]]; // batch 2: the second segment overflows float32
    const y = nops.combine64(s, coefs, 2);
    expect(bitEqual(y, s[2])).toBe(true);
    expect(bitEqual(hostOps.combine64(s, coefs, 2), s[2])).toBe(true);
    const big = Array.from({ length: 7 }, (_, j) => randn(n, 70 + j));
    const c7 = [Array(7).fill(1), [1, 1, 1, 1, 1, 1e300, 1]];
    expect(bitEqual(nops.combine64(big, c7, 2), big[6])).toBe(true); // the overflow is in the first launch
  });
  it('rejects k out of range, a missing acc for a partial launch, bad flags', () => {
    const y = new Float32Array(8), c = new Float32Array(16);
    expect(() => native.runKernel('forecast_f64', [y, c, null, y], [8, 1, 6, 3], [])).toThrow(/k .*1\.\.5/);
    expect(() => native.runKernel('forecast_f64', [y, c, null, y], [8, 1, 1, 1], [])).toThrow(/acc.*required/);
    expect(() => native.runKernel('forecast_f64', [y, c, null, y], [8, 1, 1, 4], [])).toThrow(/flags/);
    expect(() => native.runKernel('forecast_f64', [y, new Float32Array(1), null, y], [8, 1, 1, 3], [])).toThrow(/coefs.*needs 2/);
  });
});

describe('NativeTensorOps.combine (TaylorSeer forecast)', () => {
  it('more than 6 terms chain launches in the same float32 order: bit-exact vs hostOps.combine', () => {
    const n = 4097;
    for (const k of [1, 6, 7, 12]) {
      const s = Array.from({ length: k }, (_, j) => randn(n, 80 + j));
      const c = Array.from({ length: k }, (_, j) => (j === 0 ? 1 : 1 / (j + 0.5)));
      expect(bitEqual(nops.combine(s, c), hostOps.combine(s, c))).toBe(true);
      expect(bitEqual(nops.copy(s[0]), s[0])).toBe(true);
    }
  });
});
