// Shared helpers of the kernel tests: seeded random inputs and a tolerance check that reports the worst element.
import { expect } from 'vitest';

import { mulberry32 as rng } from '../../runtime/seeded-random.ts';

export { rng };

/** normal(mean, std) float32 values (Box-Muller), never all zeros */
export function randn(n: number, seed: number, std = 1, mean = 0): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    const u = Math.max(r(), 1e-12), v = r();
    out[k] = mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export function uniform(n: number, seed: number, lo: number, hi: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/** an output buffer pre-filled with a sentinel, so unwritten elements fail the comparison */
export const sentinel = (n: number): Float32Array => new Float32Array(n).fill(-12345.678);

/**
 * Asserts |got - want| <= atol + rtol * |want| elementwise (tol may also be a per-element bound array).
 * On failure the message names the worst element.
 */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol = 0, tol?: ArrayLike<number>, label = ''): void {
  expect(got.length, `${label} length`).toBe(want.length);
  let worst = -1, worstExcess = 0, maxAbs = 0;
  for (let k = 0; k < want.length; k++) {
    const d = Math.abs(got[k] - want[k]);
    const bound = (tol ? tol[k] : 0) + atol + rtol * Math.abs(want[k]);
    if (!(d <= bound)) {
      const excess = Number.isFinite(d) ? d / bound : Infinity;
      if (worst < 0 || excess > worstExcess) {
        worst = k;
        worstExcess = excess;
      }
    }
    if (Number.isFinite(d)) maxAbs = Math.max(maxAbs, d);
  }
  if (worst >= 0)
    expect.fail(`${label} element ${worst}: got ${got[worst]}, want ${want[worst]} (|diff| ${Math.abs(got[worst] - want[worst])}, max abs diff ${maxAbs})`);
}

export const absArr = (a: ArrayLike<number>): Float32Array => Float32Array.from(a, Math.abs);
