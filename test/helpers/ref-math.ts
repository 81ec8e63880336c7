// Float64 building blocks shared by the test references (the plan interpreter and the DiT reference forwards).
export const silu = (x: number): number => x / (1 + Math.exp(-x));
/** erf(x) in float64 (W. J. Cody's rational approximations, |error| < 1e-15 relative) */
export function erf(x: number): number {
  const ax = Math.abs(x);
  let r: number;
  if (ax < 0.5) {
    const t = ax * ax;
    const p = [3.1611237438705656, 113.86415415105016, 377.485237685302, 3209.3775891384694, 0.18577770618460315];
    const q = [23.601290952344122, 244.02463793444417, 1282.6165260773723, 2844.2368334391706];
    r = (ax * ((((p[4]! * t + p[0]!) * t + p[1]!) * t + p[2]!) * t + p[3]!)) / ((((t + q[0]!) * t + q[1]!) * t + q[2]!) * t + q[3]!);
  } else if (ax < 4) {
    const p = [0.5641884969886701, 8.883149794388377, 66.11919063714163, 298.6351381974001, 881.952221241769, 1712.0476126340707, 2051.0783778260716, 1230.3393547979972, 2.1531153547440383e-8];
    const q = [15.744926110709835, 117.6939508913125, 537.1811018620099, 1621.3895745666903, 3290.7992357334597, 4362.619090143247, 3439.3676741437216, 1230.3393548037495];
    let num = p[8]! * ax;
    let den = ax;
    for (let i = 0; i < 7; i++) {
      num = (num + p[i]!) * ax;
      den = (den + q[i]!) * ax;
    }
    const erfc = (Math.exp(-ax * ax) * (num + p[7]!)) / (den + q[7]!);
    r = 1 - erfc;
  } else {
    const t = 1 / (ax * ax);
    const p = [0.30532663496123236, 0.36034489994980445, 0.12578172611122926, 0.016083785148742275, 6.587491615298378e-4, 0.016315387137302097];
    const q = [2.568520192289822, 1.8729528499234604, 0.5279051029514285, 0.06051834131244132, 0.0023352049762686918];
    let num = p[5]! * t;
    let den = t;
    for (let i = 0; i < 4; i++) {
      num = (num + p[i]!) * t;
      den = (den + q[i]!) * t;
    }
    const erfc = (Math.exp(-ax * ax) / ax) * (1 / Math.sqrt(Math.PI) - (t * (num + p[4]!)) / (den + q[4]!));
    r = 1 - erfc;
  }
  return x < 0 ? -r : r;
}

/** exact GELU in float64 */
export const geluErf = (x: number): number => 0.5 * x * (1 + erf(x * Math.SQRT1_2));

export const gelu = (u: number): number => 0.5 * u * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (u + 0.044715 * u * u * u)));
export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** LayerNorm statistics of the row x[off, off + C): its mean and 1 / sqrt(biased variance + eps) */
export function layerNormStats(x: ArrayLike<number>, off: number, C: number, eps: number): [mean: number, rstd: number] {
  let mean = 0;
  for (let c = 0; c < C; c++) mean += x[off + c]!;
  mean /= C;
  let v = 0;
  for (let c = 0; c < C; c++) v += (x[off + c]! - mean) ** 2;
  return [mean, 1 / Math.sqrt(v / C + eps)];
}

/** RMSNorm scale of the row x[off, off + G): 1 / sqrt(mean(x^2) + eps) */
export function rmsScale(x: ArrayLike<number>, off: number, G: number, eps: number): number {
  let s = 0;
  for (let g = 0; g < G; g++) s += x[off + g]! ** 2;
  return 1 / Math.sqrt(s / G + eps);
}

/** sum of a[aOff + d] * b[bOff + d] over d < n, in order */
export function dot(a: ArrayLike<number>, aOff: number, b: ArrayLike<number>, bOff: number, n: number): number {
  let s = 0;
  for (let d = 0; d < n; d++) s += a[aOff + d]! * b[bOff + d]!;
  return s;
}

/**
 * Attention scores p[0, n) (-Infinity: masked key) -> unnormalised softmax weights exp(p - max) in place, 0 for
 * masked keys; returns their sum (0 when every key is masked).
 */
export function softmaxWeights(p: Float64Array, n: number): number {
  let mx = -Infinity;
  for (let j = 0; j < n; j++) mx = Math.max(mx, p[j]!);
  let z = 0;
  for (let j = 0; j < n; j++) z += p[j] = p[j] === -Infinity ? 0 : Math.exp(p[j]! - mx);
  return z;
}
