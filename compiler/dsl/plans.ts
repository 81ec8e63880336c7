// Plan types a model file declares: cache policy (Cache-DiT DBCacheConfig names and defaults),
// parallel plan (Cache-DiT ParallelismConfig + per-model TP/CP plans) and compile target.
// Lowering of ParallelPlan / Target is implemented by later issues; the types are fixed now.

// The cache configuration types (field names and defaults of Cache-DiT's DBCacheConfig and calibrator
// configs) have one home, the cache engine; a model file declares its defaults with them.
import type { BasicCacheConfig, CalibratorConfig } from '../../runtime/cache/config.ts';
export type { CacheType, BasicCacheConfig, DBCacheConfig, CalibratorConfig } from '../../runtime/cache/config.ts';

/** What a model declares about caching: its cached block lists and default policy. */
export interface CachePlan {
  /**
   * Cached block lists, each one Cache-DiT context: `blocks` are the DSL block prefixes merged into
   * the list in order (FLUX.1: `['transformer_blocks', 'single_transformer_blocks']`, one list).
   */
  lists: { name: string; blocks: string[]; pattern: number }[];
  /** defaults the pipeline starts from (merged over Cache-DiT's DBCacheConfig defaults) */
  config?: Partial<BasicCacheConfig>;
  calibrator?: CalibratorConfig;
  /** true: classifier-free guidance runs as separate transformer calls (Cache-DiT has_separate_cfg) */
  has_separate_cfg?: boolean;
}

/** Tensor-parallel layout of one linear (PyTorch DTensor Colwise / Rowwise). */
export type TpStyle = 'colwise' | 'rowwise' | 'colwise_replicate';

/** Cache-DiT `ParallelismConfig` (cache-dit.md §3.6) plus the model's TP/CP plans (§4.7/§4.8). */
export interface ParallelPlan {
  ulysses_size?: number | null;
  ring_size?: number | null;
  tp_size?: number | null;
  ulysses_anything?: boolean;
  ulysses_float8?: boolean;
  ulysses_async?: boolean;
  ring_rotate_method?: 'p2p' | 'allgather';
  ring_convert_to_fp32?: boolean;
  extra_parallel_modules?: ('text_encoder' | 'vae' | 'controlnet')[];
  /** module-name patterns (`transformer_blocks.*.attn.to_q`) -> TP style; heads divide by tp */
  tp?: Record<string, TpStyle>;
  /** the transformer's context-parallel plan (Cache-DiT CP plan, cache-dit.md §4.8) */
  cp?: CpPlan;
  /**
   * the controlnet component's CP plan (Cache-DiT CN-P, `extra_parallel_modules: ['controlnet']`): the
   * controlnet runs with the transformer's token split; its per-block residuals are `sharded` outputs
   * that feed the transformer's `residuals` inputs without a gather
   */
  controlnet_cp?: CpPlan;
  /** attention modules that Ulysses / ring wrap (DSL attention calls in these blocks) */
  attention?: 'all' | string[];
}

/**
 * A component's context-parallel plan (docs/architecture.md §3c). Entry splits (`split`) trace the rank
 * with local token counts; internal points split / gather tensors inside the forward (everything before
 * an internal split runs on full tensors on every rank, like Cache-DiT's `blocks.0` / `rope` hooks).
 */
export interface CpPlan {
  /** component inputs split on an axis at entry (the runtime splits full inputs in setInput) */
  split: Record<string, number>;
  /** outputs all-gathered on an axis after the forward */
  gather: Record<string, number>;
  /** plan dim of each split axis (entry, internal or residual split; FLUX: hidden_states -> imageTokens), else inferred by size */
  dims?: Record<string, string>;
  /** inputs whose axis concatenates several split dims in order (Qwen-Image's joint key mask: [text | image]) */
  joint?: Record<string, { axis: number; dims: string[] }>;
  /**
   * Internal split / gather points, by name: `<block>.hidden` / `<block>.encoder` (the stream entering the
   * first block of a block list, Cache-DiT `blocks.0` hidden_states), a component input (arrives full on
   * every rank, sliced inside the plan), a module (`proj_out`: the output of that linear / conv) or an IR
   * value name. Split: a plain local slice (UAA sizes: first ranks +1); gather: a `comm.all_gather`.
   */
  internal?: { split?: Record<string, number>; gather?: Record<string, number> };
  /** outputs that stay token-sharded on an axis (CN-P: a controlnet's per-block residuals, no gather) */
  sharded?: Record<string, number>;
  /** inputs fed from a context-parallel controlnet's `sharded` outputs: split on an axis like `split` */
  residuals?: Record<string, number>;
}

export type Target =
  | { kind: 'cpu'; isa?: 'avx2' | 'avx512' | 'generic' }
  | { kind: 'cuda'; arch: string }
  | { kind: 'ascend'; soc: string };

export type DType = 'float32' | 'bfloat16' | 'float16' | 'float8_e4m3fn';
