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
