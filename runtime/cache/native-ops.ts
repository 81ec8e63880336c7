// TensorOps on the native cache kernels (templates/cpu/cache.cpp.hbs; the CUDA build has the same kernels):
// calibrator updates and forecasts run where the tensors live. Bit-exact with `hostOps` (same float32 op
// order, no FMA, the same float64 chunked sum order in dmd_gram). Nothing tensor-sized is read by the host;
// `gram` is the one small read (batch x k x k float64 per DMD fit), counted in `stats`.

import { focaCoef, type TensorOps } from './tensor-ops.ts';

export interface KernelRunner {
  runKernel(name: string, t: (Float32Array | null)[], i: number[], f: number[]): void;
}

export interface NativeOpsStats {
  /** kernel launches */
  kernels: number;
  /** small host reads (dmd_gram results) and the float64 values they carried */
  hostReads: number;
  hostReadValues: number;
}

/** most tensors one launch takes (forecast: 6, dmd_gram: 7, forecast_f64: 5), from the kernel ABI's 8 slots */
const FORECAST_TERMS = 6;
const GRAM_TENSORS = 7;
const F64_TERMS = 5;

export class NativeTensorOps implements TensorOps {
  constructor(
    private readonly k: KernelRunner,
    readonly stats: NativeOpsStats = { kernels: 0, hostReads: 0, hostReadValues: 0 },
  ) {}

  private run(name: string, t: (Float32Array | null)[], i: number[], f: number[] = []): void {
    this.stats.kernels++;
    this.k.runKernel(name, t, i, f);
  }

  copy(x: Float32Array): Float32Array {
    const y = new Float32Array(x.length);
    this.run('forecast', [y, x], [x.length, 1], [1]); // one term with c0 == 1 is a copy
    return y;
  }

  diff(a: Float32Array, b: Float32Array, w: number): Float32Array {
    const y = new Float32Array(a.length);
    this.run('taylor_diff', [a, b, y], [a.length], [w]);
    return y;
  }

  combine(tensors: Float32Array[], coefs: number[]): Float32Array {
    const n = tensors[0].length;
    const y = new Float32Array(n);
    const c = coefs.map((x) => Math.fround(x));
    this.run('forecast', [y, ...tensors.slice(0, FORECAST_TERMS)], [n, Math.min(tensors.length, FORECAST_TERMS)], c.slice(0, FORECAST_TERMS));
    // more terms: continue from y with coefficient 1 (a copy), the same float32 accumulation order
    for (let j = FORECAST_TERMS; j < tensors.length; j += FORECAST_TERMS - 1) {
      const ts = tensors.slice(j, j + FORECAST_TERMS - 1);
      this.run('forecast', [y, y, ...ts], [n, 1 + ts.length], [1, ...c.slice(j, j + ts.length)]);
    }
    return y;
  }

  foca(full: Float32Array, prev: Float32Array, fk: Float32Array, fkm1: Float32Array, e: number): Float32Array {
    const y = new Float32Array(full.length);
    const { damped, c } = focaCoef(e);
    this.run('foca_forecast', [full, prev, fk, fkm1, y], [full.length, damped ? 1 : 0], [c]);
    return y;
  }

  gram(x: Float32Array[], batch: number): Float64Array {
    const k = x.length;
    if (k <= GRAM_TENSORS) return this.gramLaunch(x, 0, batch); // the whole symmetric matrix in one launch
    // larger (dmd_history > 7): 3 x 4 tiles of <x_i, x_j>, one launch each
    const out = new Float64Array(batch * k * k);
    for (let r0 = 0; r0 < k; r0 += 3)
      for (let c0 = 0; c0 < k; c0 += 4) {
        const rows = x.slice(r0, r0 + 3);
        const cols = x.slice(c0, c0 + 4);
        const t = this.gramLaunch([...rows, ...cols], cols.length, batch);
        for (let b = 0; b < batch; b++)
          for (let i = 0; i < rows.length; i++)
            for (let j = 0; j < cols.length; j++) out[(b * k + r0 + i) * k + c0 + j] = t[(b * rows.length + i) * cols.length + j];
      }
    return out;
  }

  /** dmd_gram over x = rows (+ kb cols): kb 0 -> the symmetric Gram of x, else the rows x cols block */
  private gramLaunch(x: Float32Array[], kb: number, batch: number): Float64Array {
    const ka = x.length - kb;
    const values = batch * ka * (kb || ka);
    const g = new Float32Array(2 * values);
    this.run('dmd_gram', [g, ...x], [x[0].length, batch, ka, kb]);
    this.stats.hostReads++;
    this.stats.hostReadValues += values;
    return new Float64Array(g.buffer);
  }

  combine64(tensors: Float32Array[], coefs: number[][], batch: number): Float32Array {
    const n = tensors[0].length;
    const y = new Float32Array(n);
    const calls = Math.ceil(tensors.length / F64_TERMS);
    const acc = calls > 1 ? new Float32Array(2 * n) : null; // float64 accumulator carried between launches
    for (let q = 0; q < calls; q++) {
      const j0 = q * F64_TERMS;
      const ts = tensors.slice(j0, j0 + F64_TERMS);
      const c = new Float64Array(batch * ts.length);
      for (let b = 0; b < batch; b++) for (let j = 0; j < ts.length; j++) c[b * ts.length + j] = coefs[b][j0 + j];
      const flags = (q === 0 ? 1 : 0) | (q === calls - 1 ? 2 : 0);
      this.run('forecast_f64', [y, new Float32Array(c.buffer), acc, ...ts], [n, batch, ts.length, flags]);
    }
    return y;
  }
}
