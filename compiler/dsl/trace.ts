// Tracing machinery behind the DSL: symbolic tensors record IR nodes into the active Tracer.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompileError, Graph, type Attrs, type Node } from '../ir/graph.ts';

/** the root of the compiler's and the model files' sources (the repository; dist/ of an installed package) */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const COMPILER_DIR = path.join(REPO_ROOT, 'compiler') + path.sep;
const OWN_DIR = REPO_ROOT + path.sep;

/**
 * The model-file location (repo-relative `file:line:col`) of the first stack frame outside the
 * compiler, i.e. the DSL call in the model file. tsx and vitest keep TypeScript positions.
 */
export function callerLocation(): string {
  const stack = new Error().stack ?? '';
  for (const line of stack.split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?[^\s()]+):(\d+):(\d+)\)?\s*$/.exec(line.trim());
    if (!m) continue;
    let file = m[1]!;
    if (file.startsWith('file://')) file = fileURLToPath(file);
    if (!path.isAbsolute(file)) continue;
    // other packages' frames are skipped, not ours when we are installed under node_modules
    if (file.startsWith(COMPILER_DIR) || (!file.startsWith(OWN_DIR) && file.includes(`${path.sep}node_modules${path.sep}`))) continue;
    const rel = path.relative(REPO_ROOT, file).split(path.sep).join('/');
    return `${rel.startsWith('..') ? file : rel}:${m[2]}:${m[3]}`;
  }
  return '';
}

/** Absolute path of the first stack frame outside the compiler (the file that called a DSL function). */
export function callerFile(): string | undefined {
  const loc = callerLocation();
  if (!loc) return undefined;
  const file = loc.replace(/:\d+:\d+$/, '');
  return path.isAbsolute(file) ? file : path.join(REPO_ROOT, file);
}

export class DslError extends CompileError {}

/** How one linear runs on a tensor-parallel rank (decided by the hook from the model's TP plan). */
export interface TpLinear {
  /** local output features */
  out: number;
  /** this rank adds the bias (row-parallel: rank 0 only, so the all-reduce adds it once) */
  bias: boolean;
  /** row-parallel: an all-reduce over the TP group follows the GEMM */
  reduce: boolean;
  /** colwise_replicate: the local outputs are all-gathered over the TP group (channels in rank order) */
  gather: boolean;
  /** full input features (row-parallel: the sharded input's global width) */
  inFull: number;
}

/**
 * Per-rank tensor-parallel tracing (compiler/passes/tp-lower.ts installs one on a rank's trace): column-
 * parallel linears produce N/tp outputs from a weight slice, ops with `heads` on a sharded tensor use
 * heads/tp, row-parallel linears take the sharded input and are followed by an `all_reduce` node.
 */
export interface TpTraceHook {
  /** `parts`: the channel blocks of a packed (fused) projection, each sharded on its own */
  /** `loraRank`: the module's unfused LoRA branch (its A / B weights sliced like the weight's input / output) */
  linear(module: string, x: number, out: number, hasBias: boolean, src: string, parts?: number[], loraRank?: number): TpLinear | undefined;
  /**
   * the rank's sizes of a last-axis split of node x given in global widths (the blocks of a packed linear),
   * or undefined where x is not channel-sharded
   */
  localSizes(x: number, sizes: number[]): number[] | undefined;
  /**
   * an RMSNorm over the channels of node x (`module`: its weight prefix, '' = no weight): on a sharded x
   * the full channel width (a distributed RMSNorm: sum of squares all-reduced), else undefined
   */
  norm(module: string | null, x: number, src: string): { full: number } | undefined;
  /** heads of a multi-head op whose input is node x (`what` names it in errors) */
  heads(x: number, heads: number, what: string, src: string): number;
  /** a parameter with one entry per attention head along `axis` (T5's bias table): the rank's shape, its slice recorded */
  headParam(name: string, shape: number[], axis: number, src: string): number[];
  /** every recorded node: propagates and checks the channel sharding */
  recorded(n: Node): void;
  /** a shape error while recording `op`: the error to throw (explains sharded inputs) */
  failed(op: string, inputs: number[], e: Error): Error;
}

export class Tracer {
  graph = new Graph();
  segment = 'seg0';
  block: string | undefined;
  /** tensor-parallel rank trace (absent: the plain one-device trace) */
  tp: TpTraceHook | undefined;
  /** unfused LoRA: module -> rank of the low-rank branch its linear runs (absent: none) */
  lora: Map<string, number> | undefined;
  private segCounter = 0;

  record(op: string, inputs: number[], attrs: Attrs, name?: string, src?: string): number {
    const ctx: { src: string; segment: string; block?: string; name?: string } = { src: src ?? callerLocation(), segment: this.segment };
    if (this.block !== undefined) ctx.block = this.block;
    if (name !== undefined) ctx.name = name;
    let n: Node;
    try {
      n = this.graph.add(op, inputs, attrs, ctx);
    } catch (e) {
      throw this.tp && e instanceof Error ? this.tp.failed(op, inputs, e) : e;
    }
    this.tp?.recorded(n);
    return n.id;
  }

  nextPlainSegment(): void {
    this.segCounter++;
    this.segment = `seg${this.segCounter}`;
  }
}

let active: Tracer | undefined;

export function currentTracer(): Tracer {
  if (!active) throw new DslError('DSL ops can only run while the compiler traces a model (inside forward / a block body)', callerLocation() || undefined);
  return active;
}

export function withTracer<T>(t: Tracer, fn: () => T): T {
  const prev = active;
  active = t;
  try {
    return fn();
  } finally {
    active = prev;
  }
}
