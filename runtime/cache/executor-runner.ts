// BlockListRunner over the plan executor (docs/architecture.md §4) with HOST-side cache buffers:
// a working bridge for CPU plans until the fused device kernels exist (see README.md / report).
// io tensors are moved with readTensor/writeTensor; blocks run with run(segment, begin, end).

import type { Plan, PlanSegment } from '../plan.ts';
import type { ProbeSums } from './context.ts';
import type { BlockListRunner, ForwardPattern, Stream } from './engine.ts';

/** The subset of NativeExecutor the cache engine needs (structural, so tests can fake it). */
export interface ExecutorLike {
  readTensor(id: number, into: Float32Array): void;
  writeTensor(id: number, data: Float32Array): void;
  run(segment: string, blockBegin?: number, blockEnd?: number): Promise<void>;
}

const f32 = Math.fround;

export class ExecutorBlockListRunner implements BlockListRunner {
  readonly numBlocks: number;
  readonly pattern: ForwardPattern;
  readonly hasEncoder: boolean;
  readonly batch: number;
  private readonly ids: { hidden: number; encoder?: number };
  private readonly numel: { hidden: number; encoder: number };
  private readonly bufs = new Map<string, Float32Array>();
  private readonly scratch: { hidden: Float32Array; encoder: Float32Array | null };

  constructor(
    private readonly exec: ExecutorLike,
    private readonly plan: Pick<Plan, 'tensors'>,
    private readonly segment: PlanSegment,
  ) {
    if (!segment.blocks || !segment.io || segment.pattern === undefined) {
      throw new Error(`cache: segment '${segment.name}' is not a block-list segment (needs blocks, io, pattern)`);
    }
    if (![0, 1, 2, 3, 4, 5].includes(segment.pattern)) {
      throw new Error(`cache: segment '${segment.name}' has unsupported forward pattern ${segment.pattern}`);
    }
    this.numBlocks = segment.blocks.length;
    this.pattern = segment.pattern as ForwardPattern;
    this.ids = segment.io;
    const t = (id: number) => {
      const v = plan.tensors.find((x) => x.id === id);
      if (!v) throw new Error(`cache: segment '${segment.name}' io tensor ${id} is not in the plan`);
      return v;
    };
    const h = t(segment.io.hidden);
    this.hasEncoder = segment.io.encoder !== undefined && this.pattern !== 3;
    const e = this.hasEncoder ? t(segment.io.encoder!) : null;
    this.numel = { hidden: h.numel, encoder: e?.numel ?? 0 };
    this.batch = h.shape && h.shape.length > 1 ? h.shape[0] : 1;
    this.scratch = { hidden: new Float32Array(h.numel), encoder: e ? new Float32Array(e.numel) : null };
  }

  private ioId(stream: Stream): number {
    if (stream === 'encoder') {
      if (!this.hasEncoder) throw new Error(`cache: segment '${this.segment.name}' has no encoder stream`);
      return this.ids.encoder!;
    }
    return this.ids.hidden;
  }

  /** read an io tensor into the stream's scratch array */
  private readIo(stream: Stream): Float32Array {
    const s = stream === 'hidden' ? this.scratch.hidden : this.scratch.encoder!;
    this.exec.readTensor(this.ioId(stream), s);
    return s;
  }

  private buf(name: string): Float32Array {
    const b = this.bufs.get(name);
    if (!b) throw new Error(`cache: buffer '${name}' is not set (segment '${this.segment.name}')`);
    return b;
  }

  private alloc(name: string, n: number): Float32Array {
    let b = this.bufs.get(name);
    if (!b || b.length !== n) {
      b = new Float32Array(n);
      this.bufs.set(name, b);
    }
    return b;
  }

  runBlocks(begin: number, end: number): Promise<void> {
    if (end <= begin) return Promise.resolve();
    return this.exec.run(this.segment.name, begin, end);
  }

  save(stream: Stream, dst: string): void {
    const b = this.alloc(dst, this.numel[stream]);
    this.exec.readTensor(this.ioId(stream), b);
  }

  residual(stream: Stream, dst: string, base: string): void {
    const x = this.readIo(stream);
    const b = this.buf(base);
    const out = this.alloc(dst, x.length);
    for (let i = 0; i < x.length; i++) out[i] = f32(x[i] - b[i]);
  }

  addTo(stream: Stream, src: string): void {
    const x = this.readIo(stream);
    const b = this.buf(src);
    for (let i = 0; i < x.length; i++) x[i] = f32(x[i] + b[i]);
    this.exec.writeTensor(this.ioId(stream), x);
  }

  load(stream: Stream, src: string): void {
    this.exec.writeTensor(this.ioId(stream), this.buf(src));
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

  read(name: string): Float32Array {
    return this.buf(name).slice();
  }

  write(name: string, _stream: Stream, data: Float32Array): void {
    this.alloc(name, data.length).set(data);
  }

  has(name: string): boolean {
    return this.bufs.has(name);
  }

  clear(): void {
    this.bufs.clear();
  }
}
