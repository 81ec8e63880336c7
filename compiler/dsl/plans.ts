// Plan types a model file declares: cache policy (Cache-DiT DBCacheConfig names and defaults),
// parallel plan (Cache-DiT ParallelismConfig + per-model TP/CP plans) and compile target.
// Lowering of ParallelPlan / Target is implemented by later issues; the types are fixed now.

/** Cache-DiT `CacheType` */
export type CacheType = 'DBCache' | 'DBPrune' | 'NONE';

/** Cache-DiT `DBCacheConfig` (= BasicCacheConfig), field names and code defaults (cache-dit.md §3.5). */
export interface DBCacheConfig {
  cache_type: CacheType;
  Fn_compute_blocks: number;
  Bn_compute_blocks: number;
  residual_diff_threshold: number;
  max_accumulated_residual_diff_threshold: number | null;
  max_warmup_steps: number;
  warmup_interval: number;
  max_cached_steps: number;
  max_continuous_cached_steps: number;
  enable_separate_cfg: boolean | null;
  cfg_compute_first: boolean;
  cfg_diff_compute_separate: boolean;
  num_inference_steps: number | null;
  steps_computation_mask: number[] | null;
  steps_computation_policy: 'dynamic' | 'static';
  force_refresh_step_hint: number | null;
  force_refresh_step_policy: 'once' | 'repeat';
}

export const DEFAULT_DBCACHE_CONFIG: Readonly<DBCacheConfig> = Object.freeze({
  cache_type: 'DBCache',
  Fn_compute_blocks: 8,
  Bn_compute_blocks: 0,
  residual_diff_threshold: 0.08,
  max_accumulated_residual_diff_threshold: null,
  max_warmup_steps: 8,
  warmup_interval: 1,
  max_cached_steps: -1,
  max_continuous_cached_steps: -1,
  enable_separate_cfg: null,
  cfg_compute_first: false,
  cfg_diff_compute_separate: true,
  num_inference_steps: null,
  steps_computation_mask: null,
  steps_computation_policy: 'dynamic',
  force_refresh_step_hint: null,
  force_refresh_step_policy: 'once',
} satisfies DBCacheConfig);

/** Cache-DiT calibrators (TaylorSeer / FoCa / DMD), cache-dit.md §1.8 */
export interface CalibratorConfig {
  calibrator_type: 'taylorseer' | 'foca' | 'dmd';
  enable_calibrator: boolean;
  enable_encoder_calibrator: boolean;
  calibrator_cache_type: 'residual' | 'hidden_states';
  taylorseer_order?: number;
}

/** What a model declares about caching: its cached block lists and default policy. */
export interface CachePlan {
  /**
   * Cached block lists, each one Cache-DiT context: `blocks` are the DSL block prefixes merged into
   * the list in order (FLUX.1: `['transformer_blocks', 'single_transformer_blocks']`, one list).
   */
  lists: { name: string; blocks: string[]; pattern: number }[];
  /** defaults the pipeline starts from (merged over DEFAULT_DBCACHE_CONFIG) */
  config?: Partial<DBCacheConfig>;
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
  /** context-parallel plan: which inputs split on which axis, which output gathers */
  cp?: { split: Record<string, number>; gather: Record<string, number> };
  /** attention modules that Ulysses / ring wrap (DSL attention calls in these blocks) */
  attention?: 'all' | string[];
}

export type Target =
  | { kind: 'cpu'; isa?: 'avx2' | 'avx512' | 'generic' }
  | { kind: 'cuda'; arch: string }
  | { kind: 'ascend'; soc: string };

export type DType = 'float32' | 'bfloat16' | 'float16' | 'float8_e4m3fn';
