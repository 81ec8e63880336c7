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

/**
 * Mean SSIM of two HWC uint8 RGB images (Wang et al. 2004 constants K1 0.01, K2 0.03, L 255) over 8x8
 * windows with stride 4 (stride 1 for images smaller than 16 px), averaged over windows and channels.
 * float64 throughout; identical images give exactly 1.
 */
export function ssimRgb(a: ArrayLike<number>, b: ArrayLike<number>, width: number, height: number, win = 8): number {
  if (a.length !== b.length || a.length !== width * height * 3) throw new Error(`ssimRgb: sizes ${a.length}, ${b.length} vs ${width}x${height}x3`);
  const w = Math.min(win, width, height);
  const stride = Math.min(width, height) < 16 ? 1 : Math.max(1, w >> 1);
  const C1 = (0.01 * 255) ** 2;
  const C2 = (0.03 * 255) ** 2;
  let sum = 0;
  let count = 0;
  for (let c = 0; c < 3; c++) {
    for (let y0 = 0; y0 + w <= height; y0 += stride) {
      for (let x0 = 0; x0 + w <= width; x0 += stride) {
        let ma = 0, mb = 0;
        for (let y = y0; y < y0 + w; y++) for (let x = x0; x < x0 + w; x++) {
          const k = (y * width + x) * 3 + c;
          ma += a[k]!;
          mb += b[k]!;
        }
        const n = w * w;
        ma /= n;
        mb /= n;
        let va = 0, vb = 0, cov = 0;
        for (let y = y0; y < y0 + w; y++) for (let x = x0; x < x0 + w; x++) {
          const k = (y * width + x) * 3 + c;
          const da = a[k]! - ma, db = b[k]! - mb;
          va += da * da;
          vb += db * db;
          cov += da * db;
        }
        va /= n - 1;
        vb /= n - 1;
        cov /= n - 1;
        sum += ((2 * ma * mb + C1) * (2 * cov + C2)) / ((ma * ma + mb * mb + C1) * (va + vb + C2));
        count++;
      }
    }
  }
  return sum / count;
}
