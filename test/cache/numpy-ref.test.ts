import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dmdCoefs, dmdFitItem, evalTerms, npPercentile, pyFloatRepr, pyRound } from '../../runtime/cache/index.ts';

// Golden values produced by numpy / CPython (fixtures/gen_numpy_ref.py).
const ref = JSON.parse(readFileSync(new URL('./fixtures/numpy-ref.json', import.meta.url), 'utf8'));

describe('against numpy / CPython', () => {
  it('np.percentile (linear)', () => {
    for (const c of ref.pct) for (const [q, v] of Object.entries(c.q)) expect(npPercentile(c.v, Number(q))).toBe(v);
  });
  it('repr(float), repr(round(x*100, 2)), repr(round(x, 3))', () => {
    for (const c of ref.fmt) {
      expect(pyFloatRepr(c.x)).toBe(c.repr);
      expect(pyFloatRepr(pyRound(c.x * 100, 2))).toBe(c.r2);
      expect(pyFloatRepr(pyRound(c.x, 3))).toBe(c.r3);
    }
  });
  it('DMD fit + forecast matches a numpy port of Cache-DiT (SVD, eig, lstsq) to < 1e-6', () => {
    for (const c of ref.dmd) {
      const tail = c.traj.map((r: number[]) => Float32Array.from(r));
      const d = tail[0].length;
      const fit = dmdFitItem(tail, 0, d, 0, 1e-8)!;
      const out = evalTerms({ batch: 1, terms: [{ tensors: tail.slice(1), coefs: dmdCoefs(fit, c.k) }], precision: 'f64' }, d);
      let num = 0;
      let den = 0;
      for (let i = 0; i < d; i++) {
        num += Math.abs(out[i] - c.pred[i]);
        den += Math.abs(c.pred[i]);
      }
      expect(num / den).toBeLessThan(1e-6);
    }
  });
});
