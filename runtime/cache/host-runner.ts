// The buffer-op skeleton shared by the host-side BlockListRunners (toy-runner.ts: pure-TS reference blocks;
// executor-runner.ts: plan executor through readTensor/writeTensor): named Float32Array buffers, float32
// residual / add loops, the float64 relative-L1 probe and `hostOps` for the calibrators. A subclass says how
// the io streams are read and written and how blocks run.

import type { ProbeSums } from './context.ts';
import type { BlockListRunner, ForwardPattern, Stream } from './engine.ts';
import { hostOps, type TensorOps } from './tensor-ops.ts';

const f32 = Math.fround;

export abstract class HostBufferRunner implements BlockListRunner {
  abstract readonly numBlocks: number;
  abstract readonly pattern: ForwardPattern;
  abstract readonly hasEncoder: boolean;
  abstract readonly batch: number;
  readonly ops: TensorOps = hostOps;
  readonly bufs = new Map<string, Float32Array>();

  /** the current values of an io stream: into `into` when given (returns it), else any array (not kept) */
  protected abstract readIo(stream: Stream, into?: Float32Array): Float32Array;
  /** store new values of an io stream (`x` may be the array readIo returned) */
  protected abstract writeIo(stream: Stream, x: Float32Array): void;
  /** numel of an io stream */
  protected abstract ioNumel(stream: Stream): number;
  /** label for errors */
  protected abstract readonly label: string;
  abstract runBlocks(begin: number, end: number): Promise<void>;

  protected buf(name: string): Float32Array {
    const b = this.bufs.get(name);
    if (!b) throw new Error(`${this.label}: buffer '${name}' is not set`);
    return b;
  }

  /** the buffer `name` sized n (reused in place: no one else holds runner buffers, calibrators copy) */
  protected alloc(name: string, n: number): Float32Array {
    let b = this.bufs.get(name);
    if (!b || b.length !== n) this.bufs.set(name, (b = new Float32Array(n)));
    return b;
  }

  save(stream: Stream, dst: string): void {
    this.readIo(stream, this.alloc(dst, this.ioNumel(stream)));
  }

  residual(stream: Stream, dst: string, base: string): void {
    const x = this.readIo(stream);
    const b = this.buf(base);
    const out = this.alloc(dst, x.length);
    for (let i = 0; i < x.length; i++) out[i] = f32(x[i] - b[i]);
  }

  addTo(stream: Stream, src: string): void {
    this.apply(stream, this.buf(src), true);
  }

  load(stream: Stream, src: string): void {
    this.apply(stream, this.buf(src), false);
  }

  apply(stream: Stream, t: Float32Array, residual: boolean): void {
    if (!residual) return this.writeIo(stream, t);
    const x = this.readIo(stream);
    for (let i = 0; i < x.length; i++) x[i] = f32(x[i] + t[i]);
    this.writeIo(stream, x);
  }

  move(src: string, dst: string): void {
    const b = this.buf(src);
    this.bufs.delete(src);
    this.bufs.set(dst, b);
  }

  async probe(prev: string, cur: string | { io: Stream }): Promise<ProbeSums | null> {
    const p = this.buf(prev);
    const c = typeof cur === 'string' ? this.buf(cur) : this.readIo(cur.io);
    if (p.length !== c.length) return null;
    let num = 0;
    let den = 0;
    for (let i = 0; i < p.length; i++) {
      num += Math.abs(p[i] - c[i]);
      den += Math.abs(p[i]);
    }
    return { num, den };
  }

  tensor(name: string): Float32Array {
    return this.buf(name);
  }

  has(name: string): boolean {
    return this.bufs.has(name);
  }

  clear(): void {
    this.bufs.clear();
  }
}
