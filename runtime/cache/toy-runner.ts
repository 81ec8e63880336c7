// Pure-TS reference BlockListRunner over toy blocks (Float32Array math), like Cache-DiT's
// RandTransformerBlock fixtures. It defines the exact semantics the native runner must reproduce
// (buffer ops: host-runner.ts).

import type { ProbeSums } from './context.ts';
import type { ForwardPattern, Stream } from './engine.ts';
import { HostBufferRunner } from './host-runner.ts';
import { mulberry32 } from '../seeded-random.ts';

const f32 = Math.fround;

/** One toy block: reads (h, e) and returns the new hidden and (patterns 0/1/4/5) the new encoder states. */
export type ToyBlock = (h: Float32Array, e: Float32Array | null) => { h: Float32Array; e?: Float32Array };

export interface ToyRunnerOptions {
  pattern: ForwardPattern;
  blocks: ToyBlock[];
  hiddenNumel: number;
  /** encoder numel (patterns 0/1/2 input, 4/5 output); 0 for pattern 3 */
  encoderNumel?: number;
  batch?: number;
}

export class ToyBlockListRunner extends HostBufferRunner {
  readonly numBlocks: number;
  readonly pattern: ForwardPattern;
  readonly hasEncoder: boolean;
  readonly batch: number;
  protected readonly label = 'toy runner';
  hidden: Float32Array;
  encoder: Float32Array | null;
  /** counters for tests: blocks executed, probes issued (host reads) */
  blocksRun = 0;
  probes = 0;
  /** optional override of the probe (scripted decision tests) */
  probeOverride: ((prev: string, cur: string | { io: Stream }) => ProbeSums | null) | null = null;

  constructor(private readonly opts: ToyRunnerOptions) {
    super();
    this.numBlocks = opts.blocks.length;
    this.pattern = opts.pattern;
    this.hasEncoder = opts.pattern !== 3 && (opts.encoderNumel ?? 0) > 0;
    this.batch = opts.batch ?? 1;
    this.hidden = new Float32Array(opts.hiddenNumel);
    this.encoder = this.hasEncoder ? new Float32Array(opts.encoderNumel!) : null;
  }

  /** set the inputs of one forward (patterns 4/5: the encoder io is produced by the blocks) */
  setInputs(hidden: Float32Array, encoder?: Float32Array | null): void {
    this.hidden.set(hidden);
    if (this.encoder && encoder) this.encoder.set(encoder);
  }

  private io(stream: Stream): Float32Array {
    if (stream === 'hidden') return this.hidden;
    if (!this.encoder) throw new Error('toy runner: no encoder stream');
    return this.encoder;
  }

  protected ioNumel(stream: Stream): number {
    return this.io(stream).length;
  }

  protected readIo(stream: Stream, into?: Float32Array): Float32Array {
    if (!into) return this.io(stream);
    into.set(this.io(stream));
    return into;
  }

  protected writeIo(stream: Stream, x: Float32Array): void {
    const io = this.io(stream);
    if (x !== io) io.set(x);
  }

  async runBlocks(begin: number, end: number): Promise<void> {
    for (let i = begin; i < end; i++) {
      const enc = this.pattern <= 2 ? this.encoder : this.pattern >= 4 ? this.encoder : null;
      const out = this.opts.blocks[i](this.hidden, this.pattern <= 2 ? enc : null);
      this.hidden.set(out.h);
      if (out.e && this.encoder && (this.pattern === 0 || this.pattern === 1 || this.pattern >= 4)) this.encoder.set(out.e);
      this.blocksRun++;
    }
  }

  override async probe(prev: string, cur: string | { io: Stream }): Promise<ProbeSums | null> {
    this.probes++;
    if (this.probeOverride) return this.probeOverride(prev, cur);
    return super.probe(prev, cur);
  }

  /** reference: run every block without any cache logic */
  async uncached(hidden: Float32Array, encoder?: Float32Array | null): Promise<{ h: Float32Array; e: Float32Array | null }> {
    this.setInputs(hidden, encoder);
    await this.runBlocks(0, this.numBlocks);
    return { h: this.hidden.slice(), e: this.encoder ? this.encoder.slice() : null };
  }
}

/**
 * Cache-DiT's verified toy: block k multiplies the hidden states by (1 + 0.1(k+1)) and the encoder
 * states by (1 + 0.01(k+1)) (k+1 so block 0 is not the identity). Patterns 4/5 emit e = first half of h * 0.5
 * (so their encoder numel is hiddenNumel / 2).
 */
export function linearToyBlocks(n: number, pattern: ForwardPattern): ToyBlock[] {
  return Array.from({ length: n }, (_, k) => {
    const a = f32(1 + 0.1 * (k + 1));
    const c = f32(1 + 0.01 * (k + 1));
    return (h: Float32Array, e: Float32Array | null) => {
      const h2 = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) h2[i] = f32(h[i] * a);
      if (pattern === 0 || pattern === 1) {
        const e2 = new Float32Array(e!.length);
        for (let i = 0; i < e2.length; i++) e2[i] = f32(e![i] * c);
        return { h: h2, e: e2 };
      }
      if (pattern === 4 || pattern === 5) {
        const e2 = new Float32Array(Math.max(1, Math.floor(h.length / 2)));
        for (let i = 0; i < e2.length; i++) e2[i] = f32(h2[i] * 0.5);
        return { h: h2, e: e2 };
      }
      return { h: h2 };
    };
  });
}


/** standard normal samples (Box-Muller) from a PRNG */
export function randn(n: number, rnd: () => number, mean = 0, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rnd(), 1e-12);
    const v = rnd();
    out[i] = f32(mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
  }
  return out;
}

/**
 * Nonlinear mixing blocks (deterministic): h' = tanh-ish mix of h and the encoder; e' mixes back.
 * Used for bit-exactness and residual-application tests on every pattern.
 */
export function mixToyBlocks(n: number, pattern: ForwardPattern, seed = 1): ToyBlock[] {
  const rnd = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const a = f32(0.8 + 0.4 * rnd());
    const b = f32(0.2 * rnd() - 0.1);
    const c = f32(0.9 + 0.2 * rnd());
    return (h: Float32Array, e: Float32Array | null) => {
      const h2 = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) {
        const m = e ? e[i % e.length] : 0;
        h2[i] = f32(h[i] + f32(0.1 * Math.tanh(f32(a * h[i] + b * m))));
      }
      if (pattern === 0 || pattern === 1) {
        const e2 = new Float32Array(e!.length);
        for (let i = 0; i < e2.length; i++) e2[i] = f32(f32(c * e![i]) + f32(0.01 * h[i % h.length]));
        return { h: h2, e: e2 };
      }
      if (pattern === 4 || pattern === 5) {
        const e2 = new Float32Array(Math.max(1, Math.floor(h.length / 2)));
        for (let i = 0; i < e2.length; i++) e2[i] = f32(Math.sin(h2[i]) * c);
        return { h: h2, e: e2 };
      }
      return { h: h2 };
    };
  });
}

/**
 * Cache-DiT `RandTransformerBlock_Pattern_*`: with probability 0.5 the block outputs fresh normal noise,
 * else it multiplies by 0.7 (seeded here so that two runs are identical).
 */
export function randToyBlocks(n: number, pattern: ForwardPattern, seed = 0): ToyBlock[] {
  const rnd = mulberry32(seed);
  return Array.from({ length: n }, () => (h: Float32Array, e: Float32Array | null) => {
    const noisy = rnd() < 0.5;
    const h2 = noisy ? randn(h.length, rnd) : h.map((x) => f32(x * 0.7));
    if (pattern === 0 || pattern === 1) return { h: h2, e: noisy ? randn(e!.length, rnd) : e!.map((x) => f32(x * 0.7)) };
    if (pattern === 4 || pattern === 5) return { h: h2, e: h2.map((x) => f32(x * 0.7)) };
    return { h: h2 };
  });
}
