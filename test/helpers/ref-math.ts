// Float64 building blocks shared by the test references (the plan interpreter and the DiT reference forwards).
export const silu = (x: number): number => x / (1 + Math.exp(-x));
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
