// Types of plan.json (`ditforge-plan/1`), the only thing the compiler hands the runtime.
// See docs/architecture.md §3. The compiler imports these types; the runtime never imports the compiler.

export const PLAN_FORMAT = 'ditforge-plan/1';

export type Component = 'transformer' | 'text_encoder' | 'vae';

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
  component: Component;
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
}
