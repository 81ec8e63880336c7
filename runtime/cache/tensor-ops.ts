// The tensor operations the calibrators run (reference §1.8). Calibrator state logic (calibrators.ts) only
// holds tensor handles and calls these ops, so the same code runs on host arrays (`hostOps`, the reference,
// pure TS) and on the native cache kernels (`NativeTensorOps` in native-ops.ts: taylor_diff, forecast,
// foca_forecast, dmd_gram, forecast_f64), where nothing tensor-sized ever comes back to the host: the only
// host read is the small float64 result of `gram` (DMD Gram matrices, batch x k x k values per fit), which
// is launched at the compute step and read later, natively together with the next probe's sums.
//
// Every op returns an output no live handle refers to (fresh, or natively a recycled buffer handed back with
// `release`) and never writes its inputs: calibrator states share handles freely (e.g. FoCa's F_k and F_full
// after an update are the same tensor).

const f32 = Math.fround;

/** fixed reduction chunk of `gram` (= kChunk of templates/cpu/cache.cpp.hbs): the sum order is part of the contract */
export const DOT_CHUNK = 4096;

export interface TensorOps {
  /** a copy of x (a device copy natively) */
  copy(x: Float32Array): Float32Array;
  /** (a - b) / w, float32, two roundings (TaylorSeer divided difference) */
  diff(a: Float32Array, b: Float32Array, w: number): Float32Array;
  /** c0*s0 (a copy when c0 == 1) + c1*s1 + ... in float32, term order, no FMA (TaylorSeer forecast) */
  combine(tensors: Float32Array[], coefs: number[]): Float32Array;
  /** FoCa forecast from the anchors for elapsed steps e (Heun e <= 3, damped beyond), Cache-DiT's op order */
  foca(full: Float32Array, prev: Float32Array, fk: Float32Array, fkm1: Float32Array, e: number): Float32Array;
  /**
   * per batch segment b, the Gram matrix <x_i, x_j> in float64 -> out[(b * k + i) * k + j]: computed now, read
   * when the returned function is called (a small host read; natively free when a probe read came in between)
   */
  gram(x: Float32Array[], batch: number): () => Float64Array;
  /**
   * per batch segment b: sum_j coefs[b][j] * s_j, float64 accumulation in term order, cast to float32;
   * when any output is non-finite the result is a copy of the last tensor (DMD: the newest snapshot)
   */
  combine64(tensors: Float32Array[], coefs: number[][], batch: number): Float32Array;
  /**
   * x (an output of these ops) is dead: no handle will read it again, so a later op may overwrite and return
   * it (NativeTensorOps recycles it; hostOps has none: garbage collection frees its arrays). Tensors the ops
   * did not make are ignored.
   */
  release?(x: Float32Array): void;
}

/** FoCa's two coefficients as the host computes them in float32 (shared by hostOps and the native kernel call) */
export function focaCoef(e: number): { damped: boolean; c: number } {
  return e <= 3 ? { damped: false, c: f32(e / 2) } : { damped: true, c: f32(3 / e) };
}

/** float64 dot product of a and b over [off, off + d): sequential within DOT_CHUNK chunks, chunks added in order */
export function dot64(a: Float32Array, b: Float32Array, off: number, d: number): number {
  let total = 0;
  for (let c0 = off; c0 < off + d; c0 += DOT_CHUNK) {
    const c1 = Math.min(c0 + DOT_CHUNK, off + d);
    let s = 0;
    for (let k = c0; k < c1; k++) s += a[k] * b[k];
    total += s;
  }
  return total;
}

/** pure-TS reference ops (toy / executor runners; the semantics the native kernels match bit for bit) */
export const hostOps: TensorOps = {
  copy: (x) => x.slice(),
  diff(a, b, w) {
    const d = new Float32Array(a.length);
    for (let k = 0; k < a.length; k++) d[k] = f32(f32(a[k] - b[k]) / w);
    return d;
  },
  combine(tensors, coefs) {
    const out = new Float32Array(tensors.length ? tensors[0].length : 0);
    for (let j = 0; j < tensors.length; j++) {
      const x = tensors[j];
      const c = f32(coefs[j]);
      if (j === 0 && c === 1) out.set(x);
      else if (j === 0) for (let i = 0; i < out.length; i++) out[i] = f32(c * x[i]);
      else for (let i = 0; i < out.length; i++) out[i] = f32(out[i] + f32(c * x[i]));
    }
    return out;
  },
  foca(full, prev, fk, fkm1, e) {
    const { damped, c } = focaCoef(e);
    const F = new Float32Array(full.length);
    const omw = f32(1 - c);
    for (let i = 0; i < F.length; i++) {
      const d = f32(f32(full[i] - prev[i]) + f32(fk[i] - fkm1[i]));
      if (!damped) F[i] = f32(full[i] + f32(c * d));
      else F[i] = f32(f32(c * f32(full[i] + f32(1.5 * d))) + f32(omw * full[i]));
    }
    return F;
  },
  gram(x, batch) {
    const k = x.length;
    const d = x[0].length / batch;
    const out = new Float64Array(batch * k * k);
    for (let b = 0; b < batch; b++)
      for (let i = 0; i < k; i++)
        for (let j = i; j < k; j++) out[(b * k + i) * k + j] = out[(b * k + j) * k + i] = dot64(x[i], x[j], b * d, d);
    return () => out;
  },
  combine64(tensors, coefs, batch) {
    const n = tensors[0].length;
    const seg = n / batch;
    const out = new Float32Array(n);
    const acc = new Float64Array(seg);
    let finite = true;
    for (let b = 0; b < batch; b++) {
      const off = b * seg;
      acc.fill(0);
      for (let j = 0; j < tensors.length; j++) {
        const x = tensors[j];
        const c = coefs[b][j];
        for (let i = 0; i < seg; i++) acc[i] += c * x[off + i];
      }
      for (let i = 0; i < seg; i++) {
        out[off + i] = acc[i];
        if (!Number.isFinite(out[off + i])) finite = false;
      }
    }
    return finite ? out : tensors[tensors.length - 1].slice();
  },
};
