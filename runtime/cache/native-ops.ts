// TensorOps on the native cache kernels (templates/cpu/cache.cpp.hbs; the CUDA build has the same kernels):
// calibrator updates and forecasts run where the tensors live. Bit-exact with `hostOps` (same float32 op
// order, no FMA, the same float64 chunked sum order in dmd_gram). Nothing tensor-sized is read by the host.
// `gram` results (batch x k x k float64 per DMD fit) are small device results the host needs: the runner
// calls `readback()` when it reads a probe's sums, and every result launched before rides along in that same
// transfer (device scratch next to the sums); only a result needed before any probe is a read of its own.
// `stats` counts those separate reads and the values transferred.
// Outputs come from a pool of buffers by length: the calibrators `release` the tensors their states drop
// (a step's forecast, an evicted DMD snapshot, a shifted-out Taylor ladder), so a steady run allocates (and
// zeroes) nothing tensor-sized; every kernel writes all of its output, so recycled contents never show.
// `clear()` (the runner's, when the context refreshes) frees the pool.

import { focaCoef, type TensorOps } from './tensor-ops.ts';

export interface KernelRunner {
  runKernel(name: string, t: (Float32Array | null)[], i: number[], f: number[]): void;
}

export interface NativeOpsStats {
  /** kernel launches */
  kernels: number;
  /** small host reads of their own (dmd_gram results not delivered with a probe's sums) */
  hostReads: number;
  /** float64 values of dmd_gram results that reached the host (with a probe or on their own) */
  hostReadValues: number;
}

interface PendingRead {
  values: number;
  delivered: boolean;
}

/** most tensors one launch takes (forecast: 6, dmd_gram: 7, forecast_f64: 5), from the kernel ABI's 8 slots */
const FORECAST_TERMS = 6;
const GRAM_TENSORS = 7;
const F64_TERMS = 5;

export class NativeTensorOps implements TensorOps {
  /** small results launched and not yet on the host */
  private readonly pending = new Set<PendingRead>();
  /** released outputs by length, ready for reuse */
  private readonly free = new Map<number, Float32Array[]>();
  /** buffers in `free` (a second release of one must not hand it out twice) */
  private readonly inPool = new Set<Float32Array>();
  /** outputs these ops made: the only tensors `release` takes */
  private readonly own = new WeakSet<Float32Array>();

  constructor(
    private readonly k: KernelRunner,
    readonly stats: NativeOpsStats = { kernels: 0, hostReads: 0, hostReadValues: 0 },
  ) {}

  private run(name: string, t: (Float32Array | null)[], i: number[], f: number[] = []): void {
    this.stats.kernels++;
    this.k.runKernel(name, t, i, f);
  }

  /** an output of n floats: a released one of that length, else a new one */
  private alloc(n: number): Float32Array {
    const y = this.free.get(n)?.pop();
    if (y) {
      this.inPool.delete(y);
      return y;
    }
    const fresh = new Float32Array(n);
    this.own.add(fresh);
    return fresh;
  }

  release(x: Float32Array): void {
    if (!this.own.has(x) || this.inPool.has(x)) return;
    this.inPool.add(x);
    const list = this.free.get(x.length);
    if (list) list.push(x);
    else this.free.set(x.length, [x]);
  }

  /** drops the pool (released buffers); outputs still held stay valid */
  clear(): void {
    this.free.clear();
    this.inPool.clear();
  }

  /** floats held by the pool (released, not yet reused) */
  get pooledFloats(): number {
    let n = 0;
    for (const [len, list] of this.free) n += len * list.length;
    return n;
  }

  copy(x: Float32Array): Float32Array {
    const y = this.alloc(x.length);
    this.run('forecast', [y, x], [x.length, 1], [1]); // one term with c0 == 1 is a copy
    return y;
  }

  diff(a: Float32Array, b: Float32Array, w: number): Float32Array {
    const y = this.alloc(a.length);
    this.run('taylor_diff', [a, b, y], [a.length], [w]);
    return y;
  }

  combine(tensors: Float32Array[], coefs: number[]): Float32Array {
    const n = tensors[0].length;
    const y = this.alloc(n);
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
    const y = this.alloc(full.length);
    const { damped, c } = focaCoef(e);
    this.run('foca_forecast', [full, prev, fk, fkm1, y], [full.length, damped ? 1 : 0], [c]);
    return y;
  }

  gram(x: Float32Array[], batch: number): () => Float64Array {
    const k = x.length;
    let out: Float64Array;
    if (k <= GRAM_TENSORS) {
      out = this.gramLaunch(x, 0, batch); // the whole symmetric matrix in one launch
    } else {
      // larger (dmd_history > 7): 3 x 4 tiles of <x_i, x_j>, one launch each, gathered (host side, after the read)
      const tiles: { r0: number; c0: number; nr: number; nc: number; t: Float64Array }[] = [];
      for (let r0 = 0; r0 < k; r0 += 3)
        for (let c0 = 0; c0 < k; c0 += 4) {
          const rows = x.slice(r0, r0 + 3);
          const cols = x.slice(c0, c0 + 4);
          tiles.push({ r0, c0, nr: rows.length, nc: cols.length, t: this.gramLaunch([...rows, ...cols], cols.length, batch) });
        }
      out = new Float64Array(batch * k * k);
      for (const { r0, c0, nr, nc, t } of tiles)
        for (let b = 0; b < batch; b++)
          for (let i = 0; i < nr; i++) for (let j = 0; j < nc; j++) out[(b * k + r0 + i) * k + c0 + j] = t[(b * nr + i) * nc + j];
    }
    const p: PendingRead = { values: batch * k * k, delivered: false };
    this.pending.add(p);
    return () => {
      if (!p.delivered) {
        this.stats.hostReads++; // needed before a probe read brought it along
        this.deliver(p);
      }
      return out;
    };
  }

  /** the runner read a probe's sums: every small result launched before comes back in the same transfer */
  readback(): void {
    for (const p of this.pending) this.deliver(p);
  }

  private deliver(p: PendingRead): void {
    p.delivered = true;
    this.stats.hostReadValues += p.values;
    this.pending.delete(p);
  }

  /** dmd_gram over x = rows (+ kb cols): kb 0 -> the symmetric Gram of x, else the rows x cols block */
  private gramLaunch(x: Float32Array[], kb: number, batch: number): Float64Array {
    const ka = x.length - kb;
    const g = new Float32Array(2 * batch * ka * (kb || ka));
    this.run('dmd_gram', [g, ...x], [x[0].length, batch, ka, kb]);
    return new Float64Array(g.buffer);
  }

  combine64(tensors: Float32Array[], coefs: number[][], batch: number): Float32Array {
    const n = tensors[0].length;
    const y = this.alloc(n);
    const calls = Math.ceil(tensors.length / F64_TERMS);
    const acc = calls > 1 ? this.alloc(2 * n) : null; // float64 accumulator carried between launches (start launch zeroes it)
    for (let q = 0; q < calls; q++) {
      const j0 = q * F64_TERMS;
      const ts = tensors.slice(j0, j0 + F64_TERMS);
      const c = new Float64Array(batch * ts.length);
      for (let b = 0; b < batch; b++) for (let j = 0; j < ts.length; j++) c[b * ts.length + j] = coefs[b][j0 + j];
      const flags = (q === 0 ? 1 : 0) | (q === calls - 1 ? 2 : 0);
      this.run('forecast_f64', [y, new Float32Array(c.buffer), acc, ...ts], [n, batch, ts.length, flags]);
    }
    if (acc) this.release(acc);
    return y;
  }
}
