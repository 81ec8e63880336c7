// The ditforge model DSL: the only compiler surface model files import.
// Model code runs on symbolic tensors; every op records an IR node with its model-file location.
// See compiler/dsl/README.md.
import { PACKAGE_ROOT } from '../../runtime/package-root.ts';
import fs from 'node:fs';
import path from 'node:path';
import type { Component, PlanComponent } from '../../runtime/plan.ts';
import { callerFile, callerLocation, currentTracer, DslError } from './trace.ts';
import type { CachePlan, ParallelPlan, TpStyle } from './plans.ts';

export type { Component, PlanComponent } from '../../runtime/plan.ts';
export * from './plans.ts';
export { DslError } from './trace.ts';

// ---------------------------------------------------------------------------------------------
// Tensors

function rec(op: string, inputs: (Tensor | null)[], attrs: Record<string, unknown> = {}, name?: string): Tensor {
  const t = currentTracer();
  const id = t.record(op, inputs.map((x) => (x ? x.id : -1)), attrs, name);
  return new Tensor(id, t.graph.node(id).shape);
}

function scalarOrTensor(x: Tensor, o: Tensor | number, op: 'add' | 'sub' | 'mul' | 'div'): Tensor {
  if (typeof o === 'number') {
    if (op === 'add') return rec('add_scalar', [x], { c: o });
    if (op === 'sub') return rec('add_scalar', [x], { c: -o });
    if (op === 'mul') return rec('scale', [x], { c: o });
    return rec('scale', [x], { c: 1 / o });
  }
  return rec(op, [x, o]);
}

/** A symbolic float32 tensor (row-major). Methods record IR nodes. */
export class Tensor {
  constructor(
    /** IR node id */
    readonly id: number,
    readonly shape: readonly number[],
  ) {}

  get rank(): number {
    return this.shape.length;
  }
  /** size of axis `i` (negative counts from the end) */
  dim(i: number): number {
    const d = this.shape[i < 0 ? this.shape.length + i : i];
    if (d === undefined) throw new DslError(`axis ${i} out of range for shape [${this.shape.join(', ')}]`, callerLocation());
    return d;
  }

  /** elementwise with numpy broadcasting (or a scalar) */
  add(o: Tensor | number): Tensor {
    return scalarOrTensor(this, o, 'add');
  }
  sub(o: Tensor | number): Tensor {
    return scalarOrTensor(this, o, 'sub');
  }
  mul(o: Tensor | number): Tensor {
    return scalarOrTensor(this, o, 'mul');
  }
  div(o: Tensor | number): Tensor {
    return scalarOrTensor(this, o, 'div');
  }
  /** multiply by a constant */
  scale(c: number): Tensor {
    return rec('scale', [this], { c });
  }
  neg(): Tensor {
    return rec('neg', [this]);
  }
  silu(): Tensor {
    return rec('silu', [this]);
  }
  /** GELU, tanh approximation (diffusers `approximate="tanh"`) */
  gelu(): Tensor {
    return rec('gelu_tanh', [this]);
  }
  /** exact GELU, x/2 (1 + erf(x / sqrt 2)) (torch.nn.GELU(approximate="none")) */
  geluErf(): Tensor {
    return rec('gelu_erf', [this]);
  }
  sigmoid(): Tensor {
    return rec('sigmoid', [this]);
  }
  tanh(): Tensor {
    return rec('tanh', [this]);
  }
  exp(): Tensor {
    return rec('exp', [this]);
  }
  square(): Tensor {
    return rec('square', [this]);
  }
  sqrt(): Tensor {
    return rec('sqrt', [this]);
  }

  /** `[start, start+len)` along `axis` (a view where the consumer takes strides, else a copy) */
  slice(axis: number, start: number, len: number): Tensor {
    return rec('slice', [this], { axis, start, len });
  }
  /** `n` equal chunks along `axis` (default: last), like torch.chunk */
  chunk(n: number, axis = -1): Tensor[] {
    const d = this.dim(axis);
    if (d % n !== 0) throw new DslError(`chunk: axis of size ${d} cannot be split into ${n} equal chunks`, callerLocation());
    return Array.from({ length: n }, (_, i) => this.slice(axis, (i * d) / n, d / n));
  }
  /**
   * split into pieces of the given sizes along `axis` (default: last); on a tensor-parallel rank the sizes of
   * a packed linear's blocks (global widths) become the rank's shares of them
   */
  split(sizes: number[], axis = -1): Tensor[] {
    const d = this.dim(axis);
    const last = (axis < 0 ? axis + this.shape.length : axis) === this.shape.length - 1;
    const local = last ? currentTracer().tp?.localSizes(this.id, sizes) : undefined;
    if (local) sizes = local;
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total !== d) throw new DslError(`split: sizes [${sizes.join(', ')}] sum to ${total}, axis has ${d}`, callerLocation());
    let s = 0;
    return sizes.map((n) => {
      const r = this.slice(axis, s, n);
      s += n;
      return r;
    });
  }
  /** view with a new shape (one -1 allowed) */
  reshape(...shape: number[]): Tensor {
    return rec('reshape', [this], { shape });
  }
  /** `[b, r, c] -> [b, c, r]` */
  transpose(): Tensor {
    return rec('transpose', [this]);
  }

  /** adaLN modulation `x * (1 + scale) + shift`; x `[B, S, C]`, shift/scale `[B, C]` */
  modulate(shift: Tensor, scale: Tensor): Tensor {
    return rec('modulate', [this, shift, scale]);
  }
  /** `g * x` with a per-batch gate `g [B, C]` over `x [B, S, C]` */
  gate(g: Tensor): Tensor {
    return rec('gate', [g, this]);
  }
  /** gated residual `this + g * v` (this, v `[B, S, C]`; g `[B, C]`) */
  addGated(g: Tensor, v: Tensor): Tensor {
    return rec('gate_residual', [this, g, v]);
  }
}

/**
 * `y = x W^T + b` with explicit weight tensors (e.g. a Conv3d patch embedding used as a linear:
 * `dense(patches, m.param('patch_embedding.weight', [C, 16, 1, 2, 2]).reshape(C, 64), m.param('patch_embedding.bias', [C]))`).
 */
export function dense(x: Tensor, W: Tensor, b?: Tensor | null, o: { act?: 'gelu_tanh' | 'silu' } = {}): Tensor {
  let y = rec('linear', [x, W, b ?? null], { name: '', epilogue: 0 });
  if (o.act === 'gelu_tanh') y = y.gelu();
  else if (o.act === 'silu') y = y.silu();
  return y;
}

/** Concatenate along `axis` (token axis 1 for `[B, S, C]`, channel axis -1). */
export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new DslError('concat of nothing', callerLocation());
  if (xs.length === 1) return xs[0]!;
  return rec('concat', xs, { axis });
}

/** heads of a multi-head op on `x` in this trace: heads / tp on a tensor-parallel rank when x is sharded */
function localHeads(x: Tensor, heads: number, what: string): number {
  const tp = currentTracer().tp;
  return tp ? tp.heads(x.id, heads, what, callerLocation()) : heads;
}

export interface AttentionOptions {
  heads: number;
  /** softmax scale, default 1/sqrt(head dim) */
  scale?: number;
  /** `[B, Sk]`, 1 keeps a key, 0 drops it */
  keyMask?: Tensor;
  /** query i sees keys 0..i only (CLIP's causal mask) */
  causal?: boolean;
  /** `[H, Sq, Sk]` added to the scaled scores, shared by the batch (T5's relative position bias) */
  bias?: Tensor;
  /** key / value heads of grouped-query attention (k and v hold kvHeads*D channels; default heads) */
  kvHeads?: number;
}

/** Multi-head scaled dot-product attention on token-major `[B, S, H*D]` tensors. */
export function attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Tensor {
  const C = q.dim(-1);
  const heads = localHeads(q, o.heads, 'attention');
  if (C % heads !== 0) throw new DslError(`attention: ${C} channels cannot be split into ${heads} heads`, callerLocation());
  const D = C / heads;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  if (o.kvHeads !== undefined && o.kvHeads !== o.heads) {
    // grouped-query attention (the decoder LMs): the text encoders' kernel, each kv head serving heads / kvHeads
    if (o.heads % o.kvHeads !== 0) throw new DslError(`attention: ${o.heads} heads are not a multiple of ${o.kvHeads} key/value heads`, callerLocation());
    if (o.bias) throw new DslError('attention: an attention bias with grouped-query attention is not supported', callerLocation());
    const kvHeads = localHeads(k, o.kvHeads, 'attention (key/value heads)');
    return rec('attention_bias', [q, k, v, null, o.keyMask ?? null], { heads, kvHeads, scale, causal: o.causal === true });
  }
  if (o.causal || o.bias) {
    // the text encoders' attention (kernel attention_bias): a causal mask and/or an additive bias
    if (o.bias && o.bias.dim(0) !== heads) throw new DslError(`attention: the bias has ${o.bias.dim(0)} heads, the attention ${heads} (on a tensor-parallel rank: make the bias from a headParam)`, callerLocation());
    return rec('attention_bias', [q, k, v, o.bias ?? null, o.keyMask ?? null], { heads, scale, causal: o.causal === true });
  }
  return rec('attention', [q, k, v, o.keyMask ?? null], { heads, scale });
}

/**
 * T5's relative position bias (transformers T5Attention.compute_bias, bidirectional for the encoder):
 * `table [numBuckets, H]` (`relative_attention_bias.weight`) -> `[H, queries, keys]`.
 */
export function t5PositionBias(table: Tensor, o: { queries: number; keys: number; numBuckets: number; maxDistance: number; bidirectional: boolean }): Tensor {
  return rec('t5_position_bias', [table], { queries: o.queries, keys: o.keys, numBuckets: o.numBuckets, maxDistance: o.maxDistance, bidirectional: o.bidirectional });
}

/** RoPE cos/sin table (diffusers FluxPosEmbed): `ids [S, A]` -> `[2, S, sum(axes)]` (cos, sin). */
export function ropeTable(ids: Tensor, o: { axes: number[]; theta: number }): Tensor {
  return rec('rope_table', [ids], { axes: [...o.axes], theta: o.theta });
}

/**
 * RoPE on `[B, S, H*D]` with rows `row0 .. row0+S` of `table` (so the text and image parts of a joint
 * sequence can be rotated separately); pairs interleaved (diffusers), or with `half` channel j with j + D/2
 * (transformers' rotate_half).
 */
export function applyRope(x: Tensor, table: Tensor, o: { heads: number; row0?: number; half?: boolean }): Tensor {
  return rec('rope', [x, table], { heads: localHeads(x, o.heads, 'rope'), row0: o.row0 ?? 0, ...(o.half ? { half: true } : {}) });
}

export interface TimestepEmbeddingOptions {
  dim: number;
  flipSinToCos: boolean;
  freqShift: number;
  scale?: number;
  maxPeriod?: number;
}

/** diffusers `get_timestep_embedding` (`Timesteps`): `t [B]` -> `[B, dim]` */
export function timestepEmbedding(t: Tensor, o: TimestepEmbeddingOptions): Tensor {
  return rec('timestep_embedding', [t], { dim: o.dim, flip: o.flipSinToCos, shift: o.freqShift, scale: o.scale ?? 1, maxPeriod: o.maxPeriod ?? 10000 });
}

/** mean over the rows of `x [B, S, C]` whose `mask [B, S]` is 1 */
export function maskedMean(x: Tensor, mask: Tensor): Tensor {
  return rec('masked_mean', [x, mask]);
}

/** nearest-neighbour x2 upsampling of `[N, C, H, W]` */
export function upsampleNearest2x(x: Tensor): Tensor {
  return rec('upsample_nearest2x', [x]);
}

// ---------------------------------------------------------------------------------------------
// Modules: weights by diffusers checkpoint name, relative to a prefix

export interface LinearOptions {
  /** default true */
  bias?: boolean;
  /** activation applied to the output (fused into the GEMM epilogue) */
  act?: 'gelu_tanh' | 'silu';
  /** expected input channels (checked; default: taken from x) */
  in?: number;
  /**
   * a fused projection: the output is these channel blocks side by side (diffusers' `_tp_packed_col_blocks`:
   * FLUX.2's `to_qkv_mlp_proj` is q | k | v | gate | up); one GEMM on one device, each block split on its
   * own under tensor parallelism (PackedColwiseParallel). Must sum to `out`.
   */
  parts?: number[];
}

/** a norm weight scaled as `offset + w` (float32; Gemma's RMSNorm stores w around 0 and scales by 1 + w) */
function offsetWeight(w: Tensor, offset: number | undefined): Tensor {
  return offset ? w.add(offset) : w;
}

export class Module {
  constructor(
    /** checkpoint name prefix including the trailing '.', '' at the root */
    readonly prefix: string,
  ) {}

  /** a child module: `m.scope('attn').linear('to_q', ...)` = weight `<prefix>attn.to_q.weight` */
  scope(name: string): Module {
    return new Module(`${this.prefix}${name}.`);
  }

  /** A weight tensor `<prefix><name>` (declared on first use; reuse with another shape is an error). */
  param(name: string, shape: number[]): Tensor {
    const full = `${this.prefix}${name}`;
    const tr = currentTracer();
    const g = tr.graph;
    const prev = g.weights.get(full);
    if (prev !== undefined) {
      const ps = g.node(prev).shape;
      if (ps.join(',') !== shape.join(',')) {
        throw new DslError(`weight '${full}' was declared as [${ps.join(', ')}] (at ${g.node(prev).src}), now used as [${shape.join(', ')}]`, callerLocation());
      }
      return new Tensor(prev, ps);
    }
    for (const d of shape) if (!Number.isInteger(d) || d <= 0) throw new DslError(`weight '${full}': invalid shape [${shape.join(', ')}]`, callerLocation());
    const seg = tr.segment;
    const blk = tr.block;
    // weights belong to no segment/block (they are not computed)
    tr.segment = '';
    tr.block = undefined;
    try {
      const id = tr.record('weight', [], { name: full, shape: [...shape] }, full);
      g.weights.set(full, id);
      return new Tensor(id, shape);
    } finally {
      tr.segment = seg;
      tr.block = blk;
    }
  }

  /** `y = x W^T + b` with `W [out, in]` = `<name>.weight`, `b` = `<name>.bias` */
  linear(name: string, x: Tensor, out: number, o: LinearOptions = {}): Tensor {
    const K = x.dim(-1);
    // tensor-parallel rank trace: column-parallel -> local outputs; row-parallel -> all-reduce after the GEMM
    if (o.parts && o.parts.reduce((a, p) => a + p, 0) !== out) {
      throw new DslError(`linear '${this.prefix}${name}': parts [${o.parts.join(', ')}] sum to ${o.parts.reduce((a, p) => a + p, 0)}, not its ${out} outputs`, callerLocation());
    }
    const full = `${this.prefix}${name}`;
    const loraRank = currentTracer().lora?.get(full);
    const tp = currentTracer().tp?.linear(full, x.id, out, o.bias !== false, callerLocation(), o.parts, loraRank);
    if (o.in !== undefined && o.in !== (tp?.inFull ?? K)) {
      throw new DslError(`linear '${this.prefix}${name}' expects ${o.in} input channels, got ${K} (input shape [${x.shape.join(', ')}])`, callerLocation());
    }
    const n = tp?.out ?? out;
    const W = this.param(`${name}.weight`, [n, K]);
    const b = o.bias === false || (tp && !tp.bias) ? null : this.param(`${name}.bias`, [n]);
    let y = rec('linear', [x, W, b], { name: full, epilogue: 0 });
    if (loraRank) {
      // unfused LoRA: y + (x A^T) B^T, before a row-parallel all-reduce (each rank adds its partial product)
      const A = this.param(`${name}.lora_A.weight`, [loraRank, K]);
      const B = this.param(`${name}.lora_B.weight`, [n, loraRank]);
      const down = rec('linear', [x, A, null], { name: `${full}.lora_A`, lora: 'A', module: full, epilogue: 0 });
      y = y.add(rec('linear', [down, B, null], { name: `${full}.lora_B`, lora: 'B', module: full, epilogue: 0 }));
    }
    if (tp?.reduce) y = rec('all_reduce', [y], { group: 'tp', module: `${this.prefix}${name}` });
    if (tp?.gather) y = rec('tp_all_gather', [y], { full: out, module: `${this.prefix}${name}` });
    if (o.act === 'gelu_tanh') y = y.gelu();
    else if (o.act === 'silu') y = y.silu();
    return y;
  }

  /** LayerNorm over the last axis; `name` null = no affine (elementwise_affine=False) */
  layerNorm(name: string | null, x: Tensor, o: { eps: number; bias?: boolean }): Tensor {
    const C = x.dim(-1);
    const w = name === null ? null : this.param(`${name}.weight`, [C]);
    const b = name === null || o.bias === false ? null : this.param(`${name}.bias`, [C]);
    return rec('layer_norm', [x, w, b], { eps: o.eps });
  }

  /** RMSNorm over the last axis; `name` null = no weight; `offset`: scale by (offset + weight) (Gemma's 1 + w) */
  rmsNorm(name: string | null, x: Tensor, o: { eps: number; offset?: number }): Tensor {
    const C = x.dim(-1);
    // tensor-parallel rank trace on channel-sharded x (Wan's norm_q over all heads): distributed RMSNorm
    const tp = currentTracer().tp?.norm(name === null ? null : `${this.prefix}${name}`, x.id, callerLocation());
    const w = name === null ? null : offsetWeight(this.param(`${name}.weight`, [C]), o.offset);
    if (tp) return rec('dist_rms_norm', [x, w], { eps: o.eps, full: tp.full });
    return rec('rms_norm', [x, w], { eps: o.eps });
  }

  /** per-head RMSNorm of `[B, S, H*D]` with weight `<name>.weight [D]` (FLUX norm_q / norm_k); `offset` as rmsNorm's */
  headRmsNorm(name: string, x: Tensor, o: { heads: number; eps: number; offset?: number }): Tensor {
    const C = x.dim(-1);
    const heads = localHeads(x, o.heads, `per-head RMSNorm '${this.prefix}${name}'`);
    if (C % heads !== 0) throw new DslError(`per-head RMSNorm '${this.prefix}${name}': ${C} channels cannot be split into ${heads} heads`, callerLocation());
    const w = offsetWeight(this.param(`${name}.weight`, [C / heads]), o.offset);
    return rec('head_rms_norm', [x, w], { heads, eps: o.eps });
  }

  /**
   * A parameter with one entry per attention head along `axis` (T5's relative position bias table
   * `[buckets, heads]`): on a tensor-parallel rank, the rank's heads of it.
   */
  headParam(name: string, shape: number[], axis: number): Tensor {
    const tp = currentTracer().tp;
    if (!tp) return this.param(name, shape);
    return this.param(name, tp.headParam(`${this.prefix}${name}`, shape, axis, callerLocation()));
  }

  /** `table[ids]` with `<name>.weight [num, dim]`; ids are float32 */
  embedding(name: string, ids: Tensor, o: { num: number; dim: number }): Tensor {
    const table = this.param(`${name}.weight`, [o.num, o.dim]);
    return rec('embedding', [ids, table]);
  }

  /**
   * NCHW conv with `<name>.weight [out, in, k, k]` (+ `<name>.bias`); `pad` zeros before each spatial axis and
   * `padEnd` (default `pad`) after it
   */
  conv2d(name: string, x: Tensor, out: number, o: { kernel: number; stride?: number; pad?: number; padEnd?: number; bias?: boolean }): Tensor {
    if (x.rank !== 4) throw new DslError(`conv2d '${this.prefix}${name}': input must be [N, C, H, W], got [${x.shape.join(', ')}]`, callerLocation());
    const W = this.param(`${name}.weight`, [out, x.dim(1), o.kernel, o.kernel]);
    const b = o.bias === false ? null : this.param(`${name}.bias`, [out]);
    return rec('conv2d', [x, W, b], { name: `${this.prefix}${name}`, stride: o.stride ?? 1, pad: o.pad ?? 0, padEnd: o.padEnd ?? o.pad ?? 0 });
  }

  /**
   * Frame-major Conv3d: `x [T, Ci, H, W]` with `<name>.weight [out, Ci, kt, kh, kw]` (+ bias) -> `[T - kt + 1,
   * out, Ho, Wo]`; no temporal padding (a causal conv puts its cache frames in front of x first).
   */
  conv3d(name: string, x: Tensor, out: number, o: { kernel: [number, number, number]; stride?: number; pad?: number; bias?: boolean }): Tensor {
    if (x.rank !== 4) throw new DslError(`conv3d '${this.prefix}${name}': input must be frame-major [T, C, H, W], got [${x.shape.join(', ')}]`, callerLocation());
    const W = this.param(`${name}.weight`, [out, x.dim(1), ...o.kernel]);
    const b = o.bias === false ? null : this.param(`${name}.bias`, [out]);
    return rec('conv3d', [x, W, b], { name: `${this.prefix}${name}`, stride: o.stride ?? 1, pad: o.pad ?? 0 });
  }

  /** GroupNorm over `[N, C, ...]` with affine `<name>.weight/.bias [C]` (null = no affine) */
  groupNorm(name: string | null, x: Tensor, o: { groups: number; eps: number }): Tensor {
    const C = x.dim(1);
    if (C % o.groups !== 0) throw new DslError(`group norm '${this.prefix}${name ?? ''}': ${C} channels are not divisible by ${o.groups} groups`, callerLocation());
    const w = name === null ? null : this.param(`${name}.weight`, [C]);
    const b = name === null ? null : this.param(`${name}.bias`, [C]);
    return rec('group_norm', [x, w, b], { groups: o.groups, eps: o.eps, silu: false });
  }
}

// ---------------------------------------------------------------------------------------------
// Blocks, forward patterns, block lists

/** Cache-DiT ForwardPattern (cache-dit.md §2.1) */
export const Pattern = { P0: 0, P1: 1, P2: 2, P3: 3, P4: 4, P5: 5 } as const;
export type Pattern = (typeof Pattern)[keyof typeof Pattern];

/** Does pattern `p` take encoder states in / give them out, and in which order are outputs returned? */
export const PATTERN_INFO: Record<number, { encoderIn: boolean; encoderOut: boolean; hiddenFirst: boolean }> = {
  0: { encoderIn: true, encoderOut: true, hiddenFirst: true },
  1: { encoderIn: true, encoderOut: true, hiddenFirst: false },
  2: { encoderIn: true, encoderOut: false, hiddenFirst: true },
  3: { encoderIn: false, encoderOut: false, hiddenFirst: true },
  4: { encoderIn: false, encoderOut: true, hiddenFirst: true },
  5: { encoderIn: false, encoderOut: true, hiddenFirst: false },
};

export interface Streams {
  hidden: Tensor;
  encoder?: Tensor;
}

/** What a block body returns: `{ hidden, encoder }`, or a tuple in the pattern's order, or `hidden`. */
export type BlockResult = Streams | Tensor | [Tensor, Tensor];

export type BlockFn<Cfg, Ctx> = (m: Module, s: Streams, ctx: Ctx, cfg: Cfg) => BlockResult;

export interface BlockDef<Cfg = any, Ctx = any> {
  kind: 'block';
  /** checkpoint prefix of the block list the block comes from (`transformer_blocks`) */
  prefix: string;
  pattern: Pattern;
  fn: BlockFn<Cfg, Ctx>;
  src: string;
}

/**
 * A transformer block: `prefix` is the diffusers ModuleList name (weights of block i are
 * `<prefix>.<i>.*`), `pattern` its Cache-DiT ForwardPattern.
 */
export function block<Cfg = any, Ctx = any>(prefix: string, pattern: Pattern, fn: BlockFn<Cfg, Ctx>): BlockDef<Cfg, Ctx> {
  if (!(pattern in PATTERN_INFO)) throw new DslError(`block '${prefix}': unknown pattern ${pattern} (use Pattern.P0..P5)`, callerLocation());
  return { kind: 'block', prefix, pattern, fn, src: callerLocation() };
}

export interface BlockRange<Cfg = any, Ctx = any> {
  block: BlockDef<Cfg, Ctx>;
  /** number of blocks, or a config key holding it */
  count: number | string | ((cfg: Cfg) => number);
  src: string;
}

/** `count` consecutive blocks of one kind (count: a number, a config key, or a function of the config). */
export function repeat<Cfg = any, Ctx = any>(b: BlockDef<Cfg, Ctx>, count: number | string | ((cfg: Cfg) => number)): BlockRange<Cfg, Ctx> {
  return { block: b, count, src: callerLocation() };
}

export interface BlockListSpec<Cfg, Ctx> {
  /** Cache-DiT list name (blocks_name), e.g. `transformer_blocks` */
  name: string;
  pattern: Pattern;
  /** block ranges merged into this list, in order */
  blocks: BlockRange<Cfg, Ctx>[];
}

// ---------------------------------------------------------------------------------------------
// Components and models

/** The builder a component's `forward` receives: a root Module plus block-list execution. */
export class Builder<Cfg = any> extends Module {
  /** @internal */
  constructor(
    readonly cfg: Cfg,
    /** @internal hook installed by the compiler */
    private readonly runList: (spec: BlockListSpec<Cfg, any>, s: Streams, ctx: unknown, src: string) => Streams,
  ) {
    super('');
  }

  /**
   * Runs a block list: one cached unit (a plan segment with one PlanBlock per block). `s` holds the
   * streams the pattern takes in; `ctx` (temb, rope table, ...) is passed to every block unchanged.
   * Returns the streams after the last block.
   */
  blocks<Ctx>(spec: BlockListSpec<Cfg, Ctx>, s: Streams, ctx: Ctx): Streams {
    return this.runList(spec, s, ctx, callerLocation());
  }
}

export interface DimsSpec<Cfg> {
  /** default user-facing dims, e.g. `{ batch: 1, height: 32, width: 32, textTokens: 12 }` */
  defaults: Record<string, number>;
  /**
   * Validates user dims (throw `invalidDim`) and returns the plan dims and tag,
   * e.g. `{ dims: { B: 1, imageTokens: 16, textTokens: 12 }, tag: 'b1-h32w32-t12' }`.
   */
  resolve(cfg: Cfg, d: Record<string, number>): { dims: Record<string, number>; tag: string };
}

export interface ComponentDef<Cfg = any> {
  kind: 'component';
  component: PlanComponent;
  /** diffusers class name (for inspect) */
  className: string;
  /** config defaults (diffusers config.json keys) */
  config: Cfg;
  dims: DimsSpec<Cfg>;
  /** graph inputs in order, with shapes (plan dims available) */
  inputs(cfg: Cfg, d: Record<string, number>): Record<string, number[]>;
  /** the forward pass; returns the named outputs in order */
  forward(b: Builder<Cfg>, x: Record<string, Tensor>, cfg: Cfg, d: Record<string, number>): Record<string, Tensor>;
  /**
   * tensor-parallel plan of this component class (module pattern -> style), like Cache-DiT's per-class
   * planners; used for components other than the transformer (TE-P) when the request names none
   */
  tp?: Record<string, TpStyle>;
  /** block lists the cache engine may cache, by Cache-DiT name (informational; from `b.blocks` calls) */
  src: string;
  file: string | undefined;
}

export function component<Cfg>(def: Omit<ComponentDef<Cfg>, 'kind' | 'src' | 'file'>): ComponentDef<Cfg> {
  return { ...def, kind: 'component', src: callerLocation(), file: callerFile() };
}

/** A component with config overrides (e.g. FLUX.1 transformer with the tiny model's config). */
export interface ComponentInstance {
  def: ComponentDef<any>;
  config: Record<string, unknown>;
}

export function withConfig<Cfg>(def: ComponentDef<Cfg>, config: Partial<Cfg> | Record<string, unknown>): ComponentInstance {
  return { def, config: { ...(config as Record<string, unknown>) } };
}

export interface ModelDefinition {
  name: string;
  components: Partial<Record<PlanComponent, ComponentInstance>>;
  /** default cache plan for the transformer */
  cache?: CachePlan;
  /** parallel plan (lowered by later issues) */
  parallel?: ParallelPlan;
  /** default user dims per component, overriding the component's defaults */
  dims?: Partial<Record<PlanComponent, Record<string, number>>>;
  src: string;
  file: string | undefined;
}

export function model(name: string, spec: Omit<ModelDefinition, 'name' | 'src' | 'file'>): ModelDefinition {
  return { name, ...spec, src: callerLocation(), file: callerFile() };
}

/** Throws a dims error naming the value and what is valid. */
export function invalidDim(name: string, value: number, valid: string): never {
  throw new DslError(`${name} ${value} is not valid: ${valid}`);
}

/** Reads a diffusers config.json (repo-relative path), dropping `_`-prefixed keys. */
export function diffusersConfig(repoRelativePath: string): Record<string, unknown> {
  const file = path.join(PACKAGE_ROOT, repoRelativePath);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new DslError(`cannot read config '${repoRelativePath}': ${(e as Error).message}`, callerLocation());
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!k.startsWith('_')) out[k] = v;
  return out;
}
