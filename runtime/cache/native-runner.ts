// BlockListRunner on the native executor with the cache kernels (templates/cpu/cache.cpp.hbs):
// the io tensors are used IN PLACE through `Executor.tensorView` (Float32Arrays aliasing the arena), the
// cache buffers are plain Float32Arrays in host memory (= device memory on CPU), and every tensor op is a
// native kernel (`runKernel`): residual_store, residual_apply, cache_probe (fused Fn residual + relative-L1
// sums); calibrators update and forecast through `ops` (NativeTensorOps: taylor_diff, forecast,
// foca_forecast, dmd_gram, forecast_f64) on `tensor()` handles. Per step the only value the host reads is the
// probe's 2 float64 sums; DMD's small Gram matrices (launched at compute steps) come back with them (`ops.stats`).
// Blocks run with `run(segment, begin, end)`.
//
// Fused probe: `residual('hidden', 'Fn_cur', base)` is deferred; the probe that follows computes
// Fn_cur = h - x0 and the sums in one pass. A `move('Fn_cur', ...)` without a probe (warmup / masked
// steps) materialises it with residual_store. Any write to the hidden stream drops a deferred Fn_cur
// (the engine never reads it after the stream changed; a read then throws instead of being stale).

import type { Plan, PlanSegment } from '../plan.ts';
import type { ProbeSums } from './context.ts';
import type { BlockListRunner, ForwardPattern, Stream } from './engine.ts';
import { NativeTensorOps, type KernelRunner } from './native-ops.ts';

/** The subset of NativeExecutor this runner needs. */
export interface ViewExecutor {
  tensorView(id: number): Float32Array;
  run(segment: string, blockBegin?: number, blockEnd?: number): Promise<void>;
}

export interface NativeRunnerStats {
  /** probe kernels run (= host reads of the 2 sums) */
  probes: number;
  /** kernel launches other than probes (buffer ops; calibrator kernels are in `ops.stats`) */
  kernels: number;
  /** blocks run */
  blocks: number;
}

export class NativeBlockListRunner implements BlockListRunner {
  readonly numBlocks: number;
  readonly pattern: ForwardPattern;
  readonly hasEncoder: boolean;
  readonly batch: number;
  readonly stats: NativeRunnerStats = { probes: 0, kernels: 0, blocks: 0 };
  /** calibrator tensor ops on the cache kernels (their own launch / host-read counters) */
  readonly ops: NativeTensorOps;
  private readonly views: { hidden: Float32Array; encoder: Float32Array | null };
  private readonly bufs = new Map<string, Float32Array>();
  /** spare arrays by length (moves and clears recycle, so steady state allocates nothing) */
  private readonly spare = new Map<number, Float32Array[]>();
  private readonly sums = new Float32Array(4);
  private readonly sums64 = new Float64Array(this.sums.buffer);
  /** deferred Fn_cur = hidden - bufs[base] */
  private pendingFn: string | null = null;

  constructor(
    exec: ViewExecutor,
    private readonly k: KernelRunner,
    plan: Pick<Plan, 'tensors'>,
    private readonly segment: PlanSegment,
  ) {
    if (!segment.blocks || !segment.io || segment.pattern === undefined) {
      throw new Error(`cache: segment '${segment.name}' is not a block-list segment (needs blocks, io, pattern)`);
    }
    if (![0, 1, 2, 3, 4, 5].includes(segment.pattern)) {
      throw new Error(`cache: segment '${segment.name}' has unsupported forward pattern ${segment.pattern}`);
    }
    this.exec = exec;
    this.ops = new NativeTensorOps(k);
    this.numBlocks = segment.blocks.length;
    this.pattern = segment.pattern as ForwardPattern;
    const h = plan.tensors.find((x) => x.id === segment.io!.hidden);
    if (!h) throw new Error(`cache: segment '${segment.name}' io tensor ${segment.io.hidden} is not in the plan`);
    this.hasEncoder = segment.io.encoder !== undefined && this.pattern !== 3;
    this.views = {
      hidden: exec.tensorView(segment.io.hidden),
      encoder: this.hasEncoder ? exec.tensorView(segment.io.encoder!) : null,
    };
    this.batch = h.shape && h.shape.length > 1 ? h.shape[0] : 1;
  }

  private readonly exec: ViewExecutor;

  private view(stream: Stream): Float32Array {
    const v = this.views[stream];
    if (!v) throw new Error(`cache: segment '${this.segment.name}' has no encoder stream`);
    return v;
  }

  private buf(name: string): Float32Array {
    if (name === 'Fn_cur' && this.pendingFn !== null) this.materialize();
    const b = this.bufs.get(name);
    if (!b) throw new Error(`cache: buffer '${name}' is not set (segment '${this.segment.name}')`);
    return b;
  }

  private release(b: Float32Array | undefined): void {
    if (!b) return;
    let l = this.spare.get(b.length);
    if (!l) this.spare.set(b.length, (l = []));
    l.push(b);
  }

  private alloc(name: string, n: number): Float32Array {
    const b = this.bufs.get(name);
    if (b && b.length === n) return b;
    this.release(b);
    const nb = this.spare.get(n)?.pop() ?? new Float32Array(n);
    this.bufs.set(name, nb);
    return nb;
  }

  private kernel(name: string, t: (Float32Array | null)[], i: number[], f: number[] = []): void {
    this.stats.kernels++;
    this.k.runKernel(name, t, i, f);
  }

  private materialize(): void {
    const base = this.pendingFn!;
    this.pendingFn = null;
    const h = this.views.hidden;
    this.kernel('residual_store', [h, this.buf(base), this.alloc('Fn_cur', h.length)], [h.length]);
  }

  /** the hidden stream is about to change: a deferred Fn_cur can no longer be computed */
  private touch(stream: Stream): void {
    if (stream === 'hidden' && this.pendingFn !== null) {
      this.pendingFn = null;
      this.release(this.bufs.get('Fn_cur'));
      this.bufs.delete('Fn_cur');
    }
  }

  runBlocks(begin: number, end: number): Promise<void> {
    if (end <= begin) return Promise.resolve();
    this.touch('hidden');
    this.stats.blocks += end - begin;
    return this.exec.run(this.segment.name, begin, end);
  }

  save(stream: Stream, dst: string): void {
    const v = this.view(stream);
    this.alloc(dst, v.length).set(v);
  }

  residual(stream: Stream, dst: string, base: string): void {
    const v = this.view(stream);
    if (stream === 'hidden' && dst === 'Fn_cur') {
      this.buf(base); // must exist
      this.pendingFn = base;
      return;
    }
    this.kernel('residual_store', [v, this.buf(base), this.alloc(dst, v.length)], [v.length]);
  }

  addTo(stream: Stream, src: string): void {
    const v = this.view(stream);
    const r = this.buf(src);
    this.touch(stream);
    this.kernel('residual_apply', [v, r, v], [v.length]);
  }

  load(stream: Stream, src: string): void {
    const r = this.buf(src);
    this.touch(stream);
    this.view(stream).set(r);
  }

  move(src: string, dst: string): void {
    const b = this.buf(src);
    this.bufs.delete(src);
    this.release(this.bufs.get(dst));
    this.bufs.set(dst, b);
  }

  async probe(prev: string, cur: string | { io: Stream }): Promise<ProbeSums | null> {
    const p = this.buf(prev);
    this.stats.probes++;
    if (cur === 'Fn_cur' && this.pendingFn !== null) {
      // fused: Fn_cur = h - x0 and the sums in one pass
      const base = this.pendingFn;
      this.pendingFn = null;
      const h = this.views.hidden;
      const x0 = this.buf(base);
      const out = this.alloc('Fn_cur', h.length);
      if (p.length !== h.length) {
        this.kernel('residual_store', [h, x0, out], [h.length]);
        return null;
      }
      this.k.runKernel('cache_probe', [p, x0, h, out, this.sums], [h.length], []);
    } else {
      const c = typeof cur === 'string' ? this.buf(cur) : this.view(cur.io);
      if (p.length !== c.length) return null;
      this.k.runKernel('cache_probe', [p, null, c, null, this.sums], [c.length], []);
    }
    this.ops.readback(); // small calibrator results (DMD Gram) ride along with the sums
    return { num: this.sums64[0], den: this.sums64[1] };
  }

  tensor(name: string): Float32Array {
    return this.buf(name);
  }

  apply(stream: Stream, t: Float32Array, residual: boolean): void {
    const v = this.view(stream);
    this.touch(stream);
    if (residual) this.kernel('residual_apply', [v, t, v], [v.length]);
    else v.set(t);
  }

  has(name: string): boolean {
    return this.bufs.has(name);
  }

  clear(): void {
    this.pendingFn = null;
    for (const b of this.bufs.values()) this.release(b);
    this.bufs.clear();
    this.ops.clear(); // the context refreshes: its calibrators (and their recycled buffers) go with it
  }
}
