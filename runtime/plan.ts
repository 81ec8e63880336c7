// Types of plan.json (`ditforge-plan/1`), the only thing the compiler hands the runtime.
// See docs/architecture.md §3. The compiler imports these types; the runtime never imports the compiler.

export const PLAN_FORMAT = 'ditforge-plan/1';

export type Component = 'transformer' | 'text_encoder' | 'text_encoder_2' | 'vae' | 'vae_encoder';
/** what a plan can be compiled for: a pipeline component, or a controlnet (CN-P, docs/architecture.md §3c) */
export type PlanComponent = Component | 'controlnet';

export interface PlanIO {
  name: string;
  tensor: number;
  shape: number[];
}

export interface PlanWeight {
  /** diffusers checkpoint name, e.g. `transformer_blocks.0.attn.to_q.weight` */
  name: string;
  shape: number[];
  tensor: number;
  /**
   * Tensor-parallel shard (docs/architecture.md §3c): this plan's tensor is the concatenation of `ranges`
   * ([start, len)) along `axis` of the checkpoint tensor `name`, whose shape is `full`. The runtime cuts
   * it from the unchanged safetensors file (runtime/parallel/tp.ts `sliceWeight`); `shape` is the slice's.
   */
  slice?: PlanWeightSlice;
}

export interface PlanWeightSlice {
  full: number[];
  axis: number;
  ranges: [number, number][];
}

export interface PlanTensor {
  id: number;
  base: 'arena' | 'weight';
  /** weight name when base == 'weight' */
  weight?: string;
  /** offset in floats from the start of the arena (or of the weight) */
  offset: number;
  numel: number;
  /** logical shape, for debugging and the cache engine */
  shape?: number[];
  /** IR value name, for debugging */
  name?: string;
}

export interface PlanOp {
  /** kernel name from the catalogue (docs/architecture.md §2) or a generated `ew_<hash>` */
  k: string;
  /** tensor ids, -1 = null */
  t: number[];
  i: number[];
  f: number[];
  /** model-file location of the DSL call that produced this op (file:line:col) */
  src?: string;
  /** comm ops only (`k` starts with `comm.`): what the TS runtime exchanges between native runs */
  comm?: PlanCommInfo;
}

/**
 * A communication point (docs/architecture.md §3c). `comm.all_to_all_qkv`: t = [x, xg], i = [B, H, D,
 * xStride]: x `[B, S_local, H*D]` (row stride xStride) -> xg `[B, S_global, hReal*D]` (contiguous), heads
 * scattered, sequence gathered. `comm.all_to_all_o`: t = [og, o], i = [B, H, D, oStride]: the inverse.
 * `comm.wait`: awaits every comm op issued with `wait: false` and writes their results.
 * `comm.all_gather_mask`: t = [mask, maskg], i = [B]: key mask `[B, S_local]` -> `[B, S_global]` (rank order).
 * `comm.ring_attention` / `comm.usp_attention`: t = [q, k, v, o, mask?], i = [B, H, D, qS, kS, vS, oS], f = [scale]:
 * the whole attention over the sequence-sharded q/k/v (ring: K/V, and the key mask `[B, S_local]` when present,
 * passed around with LSE merge).
 * `comm.all_gather` (CP internal gather point): t = [x, y], i = [outer, n_local, inner]: x `[outer, n_local, inner]`
 * -> y `[outer, sum(sizes), inner]`, rank shards in rank order; `comm` holds group 'cp', `sizes` (per-rank n_local)
 * and `module` (the gather point); the head fields are 0.
 * `comm.all_reduce` (tensor parallel): t = [x, y], i = [n, f64?]: y = sum of x over the TP group (y may alias x);
 * i[1] = 1: the n floats hold n/2 float64 values, summed as float64 (the distributed RMSNorm's per-row sums of
 * squares between the native `rms_sumsq` and `rms_norm_apply` kernels); `comm` holds group 'tp', `module` (the
 * block) and sizes [] (no per-rank sizes).
 * `comm.all_gather_tp` (tensor parallel colwise_replicate): t = [x, y], i = [rows, n, 1]: x `[rows, n]` ->
 * y `[rows, T*n]` with rank r's channels at r*n (`comm.sizes` = every rank's n).
 */
export interface PlanCommInfo {
  group: 'ulysses' | 'ring' | 'usp' | 'tp' | 'cp';
  /** per-rank sequence lengths of this attention (rank order) */
  sizes: number[];
  /** heads per rank after padding, zero heads appended, real heads on this rank */
  hLocal: number;
  hPad: number;
  hReal: number;
  /** FP8 e4m3 per-token payload (Q, V, O; never K) */
  float8: boolean;
  /** false: issued asynchronously, completed by the next `comm.wait` */
  wait: boolean;
  /** which attention operand */
  stream: 'q' | 'k' | 'v' | 'o';
  /** block (module) the attention belongs to */
  module: string;
}

/** Per-rank context-parallel lowering (Ulysses) of a plan (docs/architecture.md §3c). */
export interface PlanParallel {
  kind: 'ulysses' | 'ring' | 'usp' | 'tp';
  world: number;
  rank: number;
  /** degrees: world = ulysses * ring (USP mesh [ring, ulysses]: rank = ringIdx * ulysses + ulyssesIdx) */
  ulysses: number;
  ring: number;
  /** tensor-parallel degree (kind 'tp'; absent = 1): every rank holds the full activations between blocks */
  tp?: number;
  anything: boolean;
  float8: boolean;
  async: boolean;
  headPadPolicy: 'cache-dit' | 'any';
  /**
   * full inputs split on `axis` into per-rank `sizes` before the forward (this plan's input has sizes[rank]);
   * `parts`: the axis concatenates several streams, each split per rank (rank r gets part0_r | part1_r | ...)
   */
  split: Record<string, { axis: number; sizes: number[]; parts?: number[][]; residual?: boolean }>;
  /** outputs all-gathered on `axis` from per-rank `sizes` after the forward */
  gather: Record<string, { axis: number; sizes: number[] }>;
  /**
   * outputs left token-sharded on `axis` (CN-P: a controlnet's per-block residuals, fed to the transformer's
   * `residual: true` split inputs of the same sizes without a gather)
   */
  sharded?: Record<string, { axis: number; sizes: number[] }>;
  /** internal split points (docs/architecture.md §3c): sliced inside the plan, for messages and tests */
  internal?: { split: Record<string, { axis: number; sizes: number[] }>; gather: Record<string, { axis: number; sizes: number[] }> };
}

export interface PlanBlock {
  name: string;
  ops: PlanOp[];
}

export interface PlanSegment {
  name: string;
  ops?: PlanOp[];
  /** block-list segments: Cache-DiT block list name and ForwardPattern 0..5 */
  list?: string;
  pattern?: number;
  blocks?: PlanBlock[];
  /** tensors the block list reads and writes in place: hidden and (patterns 0/1/2, 4/5) encoder */
  io?: { hidden: number; encoder?: number };
}

export interface ElementwiseSpec {
  name: string;
  arity: number;
  /** C expression over a0..a{arity-1} (float) and f0..f7 */
  expr: string;
}

export interface Plan {
  format: typeof PLAN_FORMAT;
  model: string;
  component: PlanComponent;
  tag: string;
  dims: Record<string, number>;
  /** the resolved model config the plan was built from */
  config: Record<string, unknown>;
  inputs: PlanIO[];
  outputs: PlanIO[];
  weights: PlanWeight[];
  arenaFloats: number;
  tensors: PlanTensor[];
  segments: PlanSegment[];
  kernels: string[];
  elementwise: ElementwiseSpec[];
  /** multiply-adds x 2 of one forward, for `inspect` and benchmarks */
  flops?: number;
  /** present on per-rank plans of a parallel lowering */
  parallel?: PlanParallel;
}
