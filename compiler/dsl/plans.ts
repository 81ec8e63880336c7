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
  /**
   * context-parallel plan: which inputs split on which axis, which output gathers; `dims` names the plan
   * dim each split input's axis is (FLUX: hidden_states -> imageTokens), else it is inferred by size
   */
  cp?: {
    split: Record<string, number>;
    gather: Record<string, number>;
    dims?: Record<string, string>;
    /** inputs whose axis concatenates several split dims in order (Qwen-Image's joint key mask: [text | image]) */
    joint?: Record<string, { axis: number; dims: string[] }>;
  };
  /** attention modules that Ulysses / ring wrap (DSL attention calls in these blocks) */
  attention?: 'all' | string[];
}

export type Target =
  | { kind: 'cpu'; isa?: 'avx2' | 'avx512' | 'generic' }
  | { kind: 'cuda'; arch: string }
  | { kind: 'ascend'; soc: string };

export type DType = 'float32' | 'bfloat16' | 'float16' | 'float8_e4m3fn';
