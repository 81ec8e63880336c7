// BlockListRunner over the plan executor (docs/architecture.md §4) with HOST-side cache buffers
// (HostBufferRunner): the bridge for executors without tensor views (the multi-rank ParallelExecutor).
// io tensors are moved with readTensor/writeTensor; blocks run with run(segment, begin, end).

import type { Plan, PlanSegment } from '../plan.ts';
import type { ForwardPattern, Stream } from './engine.ts';
import { HostBufferRunner } from './host-runner.ts';

/** The subset of NativeExecutor the cache engine needs (structural, so tests can fake it). */
export interface ExecutorLike {
  readTensor(id: number, into: Float32Array): void;
  writeTensor(id: number, data: Float32Array): void;
  run(segment: string, blockBegin?: number, blockEnd?: number): Promise<void>;
}

export class ExecutorBlockListRunner extends HostBufferRunner {
  readonly numBlocks: number;
  readonly pattern: ForwardPattern;
  readonly hasEncoder: boolean;
  readonly batch: number;
  protected readonly label: string;
  private readonly ids: { hidden: number; encoder?: number };
  private readonly numel: { hidden: number; encoder: number };
  private readonly scratch: { hidden: Float32Array; encoder: Float32Array | null };

  constructor(
    private readonly exec: ExecutorLike,
    plan: Pick<Plan, 'tensors'>,
    private readonly segment: PlanSegment,
  ) {
    super();
    if (!segment.blocks || !segment.io || segment.pattern === undefined) {
      throw new Error(`cache: segment '${segment.name}' is not a block-list segment (needs blocks, io, pattern)`);
    }
    if (![0, 1, 2, 3, 4, 5].includes(segment.pattern)) {
      throw new Error(`cache: segment '${segment.name}' has unsupported forward pattern ${segment.pattern}`);
    }
    this.label = `cache (segment '${segment.name}')`;
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

  protected ioNumel(stream: Stream): number {
    return this.numel[stream];
  }

  protected readIo(stream: Stream, into?: Float32Array): Float32Array {
    const s = into ?? (stream === 'hidden' ? this.scratch.hidden : this.scratch.encoder!);
    this.exec.readTensor(this.ioId(stream), s);
    return s;
  }

  protected writeIo(stream: Stream, x: Float32Array): void {
    this.exec.writeTensor(this.ioId(stream), x);
  }

  runBlocks(begin: number, end: number): Promise<void> {
    if (end <= begin) return Promise.resolve();
    return this.exec.run(this.segment.name, begin, end);
  }
}
