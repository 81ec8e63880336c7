// Float64 references of the cache kernels (templates/cpu/cache.cpp.hbs).

/** cache_probe: cur = x0 ? h - x0 : h (float32 subtraction, as the kernel stores it); sums in float64 */
export function cacheProbe(prev: Float32Array | null, x0: Float32Array | null, h: Float32Array): { cur: Float32Array; num: number; den: number } {
  const cur = new Float32Array(h.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < h.length; i++) {
    cur[i] = x0 ? Math.fround(h[i] - x0[i]) : h[i];
    if (prev) {
      num += Math.abs(prev[i] - cur[i]);
      den += Math.abs(prev[i]);
    }
  }
  return { cur, num, den };
}

export function residualStore(a: Float32Array, b: Float32Array): Float64Array {
  return Float64Array.from(a, (v, i) => v - b[i]);
}

export function residualApply(x: Float32Array, r: Float32Array): Float64Array {
  return Float64Array.from(x, (v, i) => v + r[i]);
}

/** forecast in float64: sum_k c_k * s_k */
export function forecast(s: Float32Array[], c: number[]): Float64Array {
  const y = new Float64Array(s[0].length);
  for (let k = 0; k < s.length; k++) for (let i = 0; i < y.length; i++) y[i] += Math.fround(c[k]) * s[k][i];
  return y;
}

/** taylor_diff in float64: (a - b) / w */
export function taylorDiff(a: Float32Array, b: Float32Array, w: number): Float64Array {
  return Float64Array.from(a, (v, i) => (v - b[i]) / w);
}

/** foca_forecast in float64 (elapsed e: Heun e <= 3, damped beyond; Cache-DiT foca.py) */
export function focaForecast(full: Float32Array, prev: Float32Array, fk: Float32Array, fkm1: Float32Array, e: number): Float64Array {
  return Float64Array.from(full, (f, i) => {
    const d = f - prev[i] + (fk[i] - fkm1[i]);
    if (e <= 3) return f + (e / 2) * d;
    const w = 3 / e;
    return w * (f + 1.5 * d) + (1 - w) * f;
  });
}

/** dmd_gram in float64: per batch segment b, the Gram matrix <x_i, x_j> -> out[(b * k + i) * k + j] */
export function dmdGram(x: Float32Array[], batch: number): Float64Array {
  const k = x.length;
  const d = x[0].length / batch;
  const out = new Float64Array(batch * k * k);
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < k; i++)
      for (let j = 0; j < k; j++) {
        let acc = 0;
        for (let q = b * d; q < (b + 1) * d; q++) acc += x[i][q] * x[j][q];
        out[(b * k + i) * k + j] = acc;
      }
  return out;
}

/** forecast_f64 in float64: per batch segment b, sum_j coefs[b][j] * s_j */
export function forecastF64(s: Float32Array[], coefs: number[][], batch: number): Float64Array {
  const n = s[0].length;
  const d = n / batch;
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) for (let j = 0; j < s.length; j++) y[i] += coefs[Math.floor(i / d)][j] * s[j][i];
  return y;
}
