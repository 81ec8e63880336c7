// Comparison metrics used by parity tests, benchmarks and the parallel references: one definition each.

/** ||a - b|| / ||b|| accumulated in float64; throws on a length mismatch. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relL2: lengths ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** max |a - b| */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxAbsDiff: lengths ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** PSNR (dB) of `a` against reference `b`; peak = max|b| unless given (255 for uint8 images). */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>, peak?: number): number {
  if (a.length !== b.length) throw new Error(`psnr: lengths ${a.length} vs ${b.length}`);
  let mse = 0;
  let p = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    mse += d * d;
    p = Math.max(p, Math.abs(b[i]!));
  }
  mse /= a.length || 1;
  const top = peak ?? p;
  return mse === 0 ? Infinity : 10 * Math.log10((top * top) / mse);
}
