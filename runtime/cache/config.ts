// Cache configuration with Cache-DiT's field names and code defaults (reference §3.5, §1.8, §1.10),
// per-list overrides (ParamsModifier), validation with errors naming the option, the YAML loader
// (Cache-DiT `load_configs` keys, §3.7) and the config part of the run tag (`strify`).

import { readFileSync, existsSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { pyFloatRepr } from './pyfmt.ts';
import { stepsMask, validateStepsMask, type MaskPolicy } from './steps-mask.ts';

export type CacheType = 'DBCache' | 'DBPrune' | 'NONE';

/** Cache-DiT `BasicCacheConfig` (= `DBCacheConfig`). */
export interface BasicCacheConfig {
  cache_type: CacheType;
  /** front blocks always computed (>= 1) */
  Fn_compute_blocks: number;
  /** back blocks always computed (>= 0) */
  Bn_compute_blocks: number;
  /** `<= 0` never caches, `>= 1` always "similar" (records -1) */
  residual_diff_threshold: number;
  /** stop caching once the sum of positive diffs reaches it (null/<=0 = off) */
  max_accumulated_residual_diff_threshold: number | null;
  /** steps `range(0, W, I)` always compute */
  max_warmup_steps: number;
  warmup_interval: number;
  /** -1 = unlimited */
  max_cached_steps: number;
  /** -1 = unlimited */
  max_continuous_cached_steps: number;
  /** null = auto (decided by the caller: true for pipelines that call the transformer twice per step) */
  enable_separate_cfg: boolean | null;
  cfg_compute_first: boolean;
  cfg_diff_compute_separate: boolean;
  num_inference_steps: number | null;
  steps_computation_mask: number[] | null;
  steps_computation_policy: 'dynamic' | 'static';
  force_refresh_step_hint: number | null;
  force_refresh_step_policy: 'once' | 'repeat';
}

export interface DBCacheConfig extends BasicCacheConfig {
  cache_type: 'DBCache' | 'NONE';
}

/** Cache-DiT `DBPruneConfig`. */
export interface DBPruneConfig extends BasicCacheConfig {
  cache_type: 'DBPrune';
  enable_dynamic_prune_threshold: boolean;
  /** null -> 2 x residual_diff_threshold */
  max_dynamic_prune_threshold: number | null;
  dynamic_prune_threshold_relax_ratio: number;
  non_prune_block_ids: number[];
  /** accepted for compatibility; downsampled Fn buffers are not implemented (see report) */
  force_reduce_calibrator_vram: boolean;
}

export type CacheConfig = DBCacheConfig | DBPruneConfig;

export const BASIC_CACHE_DEFAULTS: Readonly<BasicCacheConfig> = Object.freeze({
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
} as BasicCacheConfig);

const PRUNE_EXTRA_DEFAULTS = {
  enable_dynamic_prune_threshold: false,
  max_dynamic_prune_threshold: null,
  dynamic_prune_threshold_relax_ratio: 1.25,
  non_prune_block_ids: [] as number[],
  force_reduce_calibrator_vram: false,
};

const BASIC_KEYS = Object.keys(BASIC_CACHE_DEFAULTS) as (keyof BasicCacheConfig)[];
const PRUNE_KEYS = Object.keys(PRUNE_EXTRA_DEFAULTS);

function dropUndefined<T extends object>(o: Partial<T> | undefined): Partial<T> {
  const out: Partial<T> = {};
  if (!o) return out;
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** `DBCacheConfig(**overrides)` with Cache-DiT's code defaults. */
export function dbCacheConfig(overrides: Partial<DBCacheConfig> = {}): DBCacheConfig {
  const cfg = { ...BASIC_CACHE_DEFAULTS, ...dropUndefined(overrides) } as DBCacheConfig;
  if (cfg.cache_type === ('DBPrune' as CacheType)) throw new Error("cache_type: use dbPruneConfig() for 'DBPrune'");
  // a copy of a list (anything else is left for validateCacheConfig to name)
  if (Array.isArray(cfg.steps_computation_mask)) cfg.steps_computation_mask = [...cfg.steps_computation_mask];
  return cfg;
}

/** `DBPruneConfig(**overrides)` with Cache-DiT's code defaults. */
export function dbPruneConfig(overrides: Partial<DBPruneConfig> = {}): DBPruneConfig {
  const cfg = {
    ...BASIC_CACHE_DEFAULTS,
    ...PRUNE_EXTRA_DEFAULTS,
    ...dropUndefined(overrides),
    cache_type: 'DBPrune',
  } as DBPruneConfig;
  cfg.non_prune_block_ids = [...cfg.non_prune_block_ids];
  // a copy of a list (anything else is left for validateCacheConfig to name)
  if (Array.isArray(cfg.steps_computation_mask)) cfg.steps_computation_mask = [...cfg.steps_computation_mask];
  return cfg;
}

export function isPruneConfig(cfg: BasicCacheConfig): cfg is DBPruneConfig {
  return cfg.cache_type === 'DBPrune';
}

// ---------------------------------------------------------------------------------------------
// Calibrators

export type CalibratorType = 'taylorseer' | 'foca' | 'dmd';
export type CalibratorCacheType = 'residual' | 'hidden_states';

interface CalibratorConfigBase {
  enable_calibrator: boolean;
  enable_encoder_calibrator: boolean;
  calibrator_type: CalibratorType;
  calibrator_cache_type: CalibratorCacheType;
  calibrator_kwargs: Record<string, unknown>;
}

export interface TaylorSeerCalibratorConfig extends CalibratorConfigBase {
  calibrator_type: 'taylorseer';
  taylorseer_order: number;
}

export interface FoCaCalibratorConfig extends CalibratorConfigBase {
  calibrator_type: 'foca';
}

export interface DMDCalibratorConfig extends CalibratorConfigBase {
  calibrator_type: 'dmd';
  dmd_history: number;
  dmd_rank: number;
  dmd_ridge: number;
  dmd_svd_precision: 'low' | 'medium' | 'high';
}

export type CalibratorConfig = TaylorSeerCalibratorConfig | FoCaCalibratorConfig | DMDCalibratorConfig;

/** A calibrator config: Cache-DiT's shared class defaults (both streams on, residual), the type's own defaults, overrides. */
function calibratorConfig<T extends CalibratorConfig>(type: T['calibrator_type'], own: Omit<T, keyof CalibratorConfigBase>, o: Partial<T>): T {
  const base = { enable_calibrator: true, enable_encoder_calibrator: true, calibrator_cache_type: 'residual', calibrator_kwargs: {} };
  return { ...base, ...own, ...dropUndefined(o), calibrator_type: type } as T;
}

/** Cache-DiT `TaylorSeerCalibratorConfig()` defaults: both streams on, order 1. */
export function taylorSeerConfig(o: Partial<TaylorSeerCalibratorConfig> = {}): TaylorSeerCalibratorConfig {
  return calibratorConfig<TaylorSeerCalibratorConfig>('taylorseer', { taylorseer_order: 1 }, o);
}

/** Cache-DiT `FoCaCalibratorConfig()` code defaults (encoder on in code; the YAML loader turns it off). */
export function focaConfig(o: Partial<FoCaCalibratorConfig> = {}): FoCaCalibratorConfig {
  return calibratorConfig<FoCaCalibratorConfig>('foca', {}, o);
}

/** Cache-DiT `DMDCalibratorConfig()` defaults. */
export function dmdConfig(o: Partial<DMDCalibratorConfig> = {}): DMDCalibratorConfig {
  return calibratorConfig<DMDCalibratorConfig>('dmd', { dmd_history: 6, dmd_rank: 0, dmd_ridge: 1e-8, dmd_svd_precision: 'medium' }, o);
}

/** Calibrator tag: TaylorSeer `T1O{order}` (order 0: `NONE`), FoCa `FoCa`, DMD `DMDH{h}[l|h]`, none `T0O0`. */
export function strifyCalibrator(cal: CalibratorConfig | null | undefined): string {
  if (!cal) return 'T0O0';
  switch (cal.calibrator_type) {
    case 'taylorseer':
      return cal.taylorseer_order ? `T1O${cal.taylorseer_order}` : 'NONE';
    case 'foca':
      return 'FoCa';
    case 'dmd':
      return `DMDH${cal.dmd_history}${cal.dmd_svd_precision === 'low' ? 'l' : cal.dmd_svd_precision === 'high' ? 'h' : ''}`;
  }
}

/**
 * CLI-style calibrator selection (`--taylorseer --order N`, `--foca`, `--dmd --dmd-history H --dmd-svd P`).
 * The three are mutually exclusive, as in Cache-DiT.
 */
export function calibratorFromFlags(
  f: Pick<CacheCliFlags, 'taylorseer' | 'order' | 'foca' | 'dmd' | 'dmdHistory' | 'dmdSvd'>,
): CalibratorConfig | null {
  const on = [f.taylorseer ? '--taylorseer' : '', f.foca ? '--foca' : '', f.dmd ? '--dmd' : ''].filter(Boolean);
  if (on.length > 1) throw new Error(`${on.join(' and ')} are mutually exclusive calibrators; choose one`);
  let cal: CalibratorConfig | null = null;
  if (f.taylorseer) cal = taylorSeerConfig({ taylorseer_order: f.order ?? 1 });
  else if (f.foca) cal = focaConfig();
  else if (f.dmd) cal = dmdConfig({ dmd_history: f.dmdHistory ?? 6, dmd_svd_precision: f.dmdSvd ?? 'medium' });
  else if (f.order !== undefined && f.order !== 1) throw new Error('--order requires --taylorseer');
  if (cal) validateCalibratorConfig(cal);
  return cal;
}

// ---------------------------------------------------------------------------------------------
// ParamsModifier: per-block-list overrides (Cache-DiT `ParamsModifier(cache_config=DBCacheConfig().reset(...))`).

export interface ParamsModifier {
  /** only the given (non-null/undefined) fields override the base config */
  cache_config?: Partial<DBCacheConfig> | Partial<DBPruneConfig>;
  /** undefined keeps the base calibrator; null disables it for this list; a config replaces it */
  calibrator_config?: CalibratorConfig | null;
}

/** Merge a modifier onto a base config (Cache-DiT `update()` skips None values). */
export function applyParamsModifier(
  base: CacheConfig,
  baseCalibrator: CalibratorConfig | null,
  modifier?: ParamsModifier,
): { cache: CacheConfig; calibrator: CalibratorConfig | null } {
  if (!modifier) return { cache: cloneCacheConfig(base), calibrator: baseCalibrator ? { ...baseCalibrator } : null };
  const over: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(modifier.cache_config ?? {})) if (v !== null && v !== undefined) over[k] = v;
  const merged = { ...cloneCacheConfig(base), ...over } as CacheConfig;
  const cache = merged.cache_type === 'DBPrune' ? dbPruneConfig(merged as DBPruneConfig) : dbCacheConfig(merged as DBCacheConfig);
  const calibrator =
    modifier.calibrator_config === undefined
      ? baseCalibrator
        ? { ...baseCalibrator }
        : null
      : modifier.calibrator_config;
  return { cache, calibrator };
}

export function cloneCacheConfig<T extends CacheConfig>(c: T): T {
  const out = { ...c };
  if (c.steps_computation_mask) out.steps_computation_mask = [...c.steps_computation_mask];
  if (isPruneConfig(c)) (out as DBPruneConfig).non_prune_block_ids = [...c.non_prune_block_ids];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Validation

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

/**
 * Validate a cache config. `numBlocks` (the block list length) enables the Fn/Bn range checks.
 * Every error names the offending option.
 */
export function validateCacheConfig(cfg: CacheConfig, opts: { numBlocks?: number; listName?: string } = {}): void {
  const where = opts.listName ? ` (block list '${opts.listName}')` : '';
  const fail = (msg: string): never => {
    throw new Error(`${msg}${where}`);
  };
  if (!['DBCache', 'DBPrune', 'NONE'].includes(cfg.cache_type)) fail(`cache_type: unknown '${cfg.cache_type}'`);
  if (!isInt(cfg.Fn_compute_blocks) || cfg.Fn_compute_blocks < 1) {
    fail(`Fn_compute_blocks (--Fn) must be an integer >= 1, got ${cfg.Fn_compute_blocks}`);
  }
  if (!isInt(cfg.Bn_compute_blocks) || cfg.Bn_compute_blocks < 0) {
    fail(`Bn_compute_blocks (--Bn) must be an integer >= 0, got ${cfg.Bn_compute_blocks}`);
  }
  if (opts.numBlocks !== undefined && cfg.Fn_compute_blocks + cfg.Bn_compute_blocks > opts.numBlocks) {
    fail(
      `Fn_compute_blocks + Bn_compute_blocks (--Fn ${cfg.Fn_compute_blocks} + --Bn ${cfg.Bn_compute_blocks}) ` +
        `is larger than the block list (${opts.numBlocks} blocks)`,
    );
  }
  if (typeof cfg.residual_diff_threshold !== 'number' || Number.isNaN(cfg.residual_diff_threshold)) {
    fail(`residual_diff_threshold (--rdt) must be a number, got ${cfg.residual_diff_threshold}`);
  }
  const mar = cfg.max_accumulated_residual_diff_threshold;
  if (mar !== null && (typeof mar !== 'number' || Number.isNaN(mar))) {
    fail(`max_accumulated_residual_diff_threshold must be a number or null, got ${mar}`);
  }
  if (!isInt(cfg.max_warmup_steps) || cfg.max_warmup_steps < 0) {
    fail(`max_warmup_steps (--ws) must be an integer >= 0, got ${cfg.max_warmup_steps}`);
  }
  if (!isInt(cfg.warmup_interval) || cfg.warmup_interval < 1) {
    fail(`warmup_interval (--wi) must be an integer >= 1, got ${cfg.warmup_interval}`);
  }
  if (!isInt(cfg.max_cached_steps)) fail(`max_cached_steps (--mc) must be an integer (-1 = unlimited), got ${cfg.max_cached_steps}`);
  if (!isInt(cfg.max_continuous_cached_steps)) {
    fail(`max_continuous_cached_steps (--mcc) must be an integer (-1 = unlimited), got ${cfg.max_continuous_cached_steps}`);
  }
  if (cfg.num_inference_steps !== null && (!isInt(cfg.num_inference_steps) || cfg.num_inference_steps < 1)) {
    fail(`num_inference_steps must be a positive integer, got ${cfg.num_inference_steps}`);
  }
  if (cfg.steps_computation_mask !== null) {
    try {
      validateStepsMask(cfg.steps_computation_mask, cfg.num_inference_steps);
    } catch (e) {
      fail(`${(e as Error).message} (--steps-mask/--scm)`);
    }
  }
  if (cfg.steps_computation_policy !== 'dynamic' && cfg.steps_computation_policy !== 'static') {
    fail(`steps_computation_policy must be 'dynamic' or 'static', got '${cfg.steps_computation_policy}'`);
  }
  // exact types, as Cache-DiT's dataclasses annotate them: no string or number taken for a boolean
  if (cfg.enable_separate_cfg !== null && typeof cfg.enable_separate_cfg !== 'boolean') fail(`enable_separate_cfg must be true, false or null, got ${JSON.stringify(cfg.enable_separate_cfg)}`);
  for (const k of ['cfg_compute_first', 'cfg_diff_compute_separate'] as const) if (typeof cfg[k] !== 'boolean') fail(`${k} must be true or false, got ${JSON.stringify(cfg[k])}`);
  if (cfg.enable_separate_cfg && cfg.cfg_diff_compute_separate && cfg.cfg_compute_first) {
    fail('cfg_compute_first must be false when enable_separate_cfg and cfg_diff_compute_separate are true');
  }
  if (cfg.force_refresh_step_hint !== null && (!isInt(cfg.force_refresh_step_hint) || cfg.force_refresh_step_hint < 1)) {
    fail(`force_refresh_step_hint must be a positive integer or null, got ${cfg.force_refresh_step_hint}`);
  }
  if (cfg.force_refresh_step_policy !== 'once' && cfg.force_refresh_step_policy !== 'repeat') {
    fail(`force_refresh_step_policy must be 'once' or 'repeat', got '${cfg.force_refresh_step_policy}'`);
  }
  if (isPruneConfig(cfg)) {
    if (!Array.isArray(cfg.non_prune_block_ids) || !cfg.non_prune_block_ids.every((i) => isInt(i) && i >= 0)) {
      fail(`non_prune_block_ids must be a list of block indices >= 0, got ${JSON.stringify(cfg.non_prune_block_ids)}`);
    }
    if (!(cfg.dynamic_prune_threshold_relax_ratio > 0)) {
      fail(`dynamic_prune_threshold_relax_ratio must be > 0, got ${cfg.dynamic_prune_threshold_relax_ratio}`);
    }
    const mx = cfg.max_dynamic_prune_threshold;
    if (mx !== null && (typeof mx !== 'number' || Number.isNaN(mx))) {
      fail(`max_dynamic_prune_threshold must be a number or null, got ${mx}`);
    }
  }
}

export function validateCalibratorConfig(cal: CalibratorConfig): void {
  if (cal.calibrator_cache_type !== 'residual' && cal.calibrator_cache_type !== 'hidden_states') {
    throw new Error(`calibrator_cache_type must be 'residual' or 'hidden_states', got '${cal.calibrator_cache_type}'`);
  }
  if (cal.calibrator_type === 'taylorseer') {
    if (!isInt(cal.taylorseer_order) || cal.taylorseer_order < 0) {
      throw new Error(`taylorseer_order (--order) must be an integer >= 0, got ${cal.taylorseer_order}`);
    }
  } else if (cal.calibrator_type === 'dmd') {
    if (!isInt(cal.dmd_history) || cal.dmd_history < 1) {
      throw new Error(`dmd_history (--dmd-history) must be an integer >= 1, got ${cal.dmd_history}`);
    }
    if (!isInt(cal.dmd_rank) || cal.dmd_rank < 0) throw new Error(`dmd_rank must be an integer >= 0, got ${cal.dmd_rank}`);
    if (!(cal.dmd_ridge >= 0)) throw new Error(`dmd_ridge must be >= 0, got ${cal.dmd_ridge}`);
    if (!['low', 'medium', 'high'].includes(cal.dmd_svd_precision)) {
      throw new Error(`dmd_svd_precision (--dmd-svd) must be low|medium|high, got '${cal.dmd_svd_precision}'`);
    }
  } else if (cal.calibrator_type !== 'foca') {
    throw new Error(`calibrator_type must be taylorseer|foca|dmd, got '${(cal as { calibrator_type: string }).calibrator_type}'`);
  }
}

// ---------------------------------------------------------------------------------------------
// strify (config part of the tag)

/**
 * `BasicCacheConfig.strify()`: `DBCache_F{Fn}B{Bn}_W{W}I{I}M{max(0,M)}MC{max(0,MC)}_R{thr}` +
 * `_SCM{mask}_{policy}` + `_N{steps}` + `_FR{hint}_{policy}` + `_CFG{0|1}` (each only when set).
 * `DBPruneConfig.strify()` overrides it with the base part only (no suffixes), as in Cache-DiT.
 */
export function strifyCacheConfig(cfg: CacheConfig): string {
  if (cfg.cache_type === 'NONE') return 'NONE';
  let s =
    `${cfg.cache_type}_F${cfg.Fn_compute_blocks}B${cfg.Bn_compute_blocks}_` +
    `W${cfg.max_warmup_steps}I${cfg.warmup_interval}` +
    `M${Math.max(0, cfg.max_cached_steps)}MC${Math.max(0, cfg.max_continuous_cached_steps)}_` +
    `R${pyFloatRepr(cfg.residual_diff_threshold)}`;
  if (isPruneConfig(cfg)) return s;
  if (cfg.steps_computation_mask !== null) {
    s += `_SCM${cfg.steps_computation_mask.join('')}_${cfg.steps_computation_policy}`;
  }
  if (cfg.num_inference_steps !== null) s += `_N${cfg.num_inference_steps}`;
  if (cfg.force_refresh_step_hint !== null) s += `_FR${cfg.force_refresh_step_hint}_${cfg.force_refresh_step_policy}`;
  if (cfg.enable_separate_cfg !== null) s += `_CFG${cfg.enable_separate_cfg ? 1 : 0}`;
  return s;
}

// ---------------------------------------------------------------------------------------------
// YAML / dict loader (Cache-DiT `load_configs` / `load_cache_config`)

export interface LoadedConfigs {
  cache_config: CacheConfig | null;
  calibrator_config: CalibratorConfig | null;
  /** passed through untouched (parallelism is not this module's concern) */
  parallelism_config: Record<string, unknown> | null;
  attention_backend: string | null;
  quantize_config: Record<string, unknown> | null;
}

const CALIBRATOR_KEYS = new Set([
  'enable_taylorseer', 'enable_encoder_taylorseer', 'taylorseer_cache_type', 'taylorseer_order',
  'enable_dmd', 'enable_encoder_dmd', 'calibrator_cache_type', 'dmd_history', 'dmd_rank', 'dmd_ridge',
  'dmd_svd_precision', 'enable_foca', 'enable_encoder_foca',
]);

/** Cache-DiT `CacheType` string parsing. */
export function parseCacheType(v: unknown): CacheType {
  const s = String(v).trim().toUpperCase().replace(/-/g, '_');
  if (['DB', 'DBCACHE', 'DB_CACHE', 'DUAL_BLOCK_CACHE', 'DUALBLOCKCACHE'].includes(s)) return 'DBCache';
  if (['DBP', 'DBPRUNE', 'DB_PRUNE', 'DYNAMIC_BLOCK_PRUNE', 'DYNAMICBLOCKPRUNE'].includes(s)) return 'DBPrune';
  if (['NONE', 'NC', 'NO_CACHE', 'NOCACHE'].includes(s)) return 'NONE';
  throw new Error(`cache_type: unsupported value '${v}' (expected DBCache | DBPrune | NONE)`);
}

/**
 * The calibrators `load_cache_options_from_dict` knows: switch key, encoder switch and its LOADER default
 * (QUIRK, Cache-DiT: TaylorSeer / FoCa default the encoder calibrator to False, the config classes to True),
 * cache-type key, and the type's own keys.
 */
const LOADED_CALIBRATORS: {
  on: string;
  make: (o: Partial<CalibratorConfig>) => CalibratorConfig;
  encoder: string;
  encoderDefault: boolean;
  cacheType: string;
  keys: string[];
}[] = [
  { on: 'enable_taylorseer', make: taylorSeerConfig as never, encoder: 'enable_encoder_taylorseer', encoderDefault: false, cacheType: 'taylorseer_cache_type', keys: ['taylorseer_order'] },
  { on: 'enable_dmd', make: dmdConfig as never, encoder: 'enable_encoder_dmd', encoderDefault: true, cacheType: 'calibrator_cache_type', keys: ['dmd_history', 'dmd_rank', 'dmd_ridge', 'dmd_svd_precision'] },
  { on: 'enable_foca', make: focaConfig as never, encoder: 'enable_encoder_foca', encoderDefault: false, cacheType: 'calibrator_cache_type', keys: [] },
];

/**
 * `load_cache_options_from_dict`: one flat cache-options mapping -> (cache_config, calibrator_config).
 * Unknown keys are rejected with an error naming them (Cache-DiT silently ignores them, which hid
 * mistakes such as issue #370).
 */
export function loadCacheOptions(kwargs: Record<string, unknown>): {
  cache_config: CacheConfig;
  calibrator_config: CalibratorConfig | null;
} {
  const kw = { ...kwargs };
  const get = <T>(k: string, d: T): T => (kw[k] === undefined || kw[k] === null ? d : (kw[k] as T));
  for (const c of LOADED_CALIBRATORS) {
    for (const k of [c.on, c.encoder]) if (kw[k] !== undefined && kw[k] !== null && typeof kw[k] !== 'boolean') throw new Error(`cache_config: ${k} must be true or false, got ${JSON.stringify(kw[k])}`);
  }
  const on = LOADED_CALIBRATORS.filter((c) => kw[c.on] === true);
  if (on.length > 1) {
    throw new Error('`enable_taylorseer`, `enable_dmd`, and `enable_foca` are mutually exclusive. Please set only one of them to true.');
  }
  let calibrator: CalibratorConfig | null = null;
  if (on.length) {
    const c = on[0];
    // the type's own keys: absent / null -> the config class default
    const own = Object.fromEntries(c.keys.map((k) => [k, get(k, undefined)]));
    calibrator = c.make({
      enable_calibrator: true,
      enable_encoder_calibrator: get(c.encoder, c.encoderDefault),
      calibrator_cache_type: get(c.cacheType, 'residual'),
      ...own,
    });
  }
  if (calibrator) validateCalibratorConfig(calibrator);

  const cacheType = kw.cache_type === undefined ? 'DBCache' : parseCacheType(kw.cache_type);
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(kw)) {
    if (CALIBRATOR_KEYS.has(k) || k === 'cache_type') continue;
    if ((BASIC_KEYS as string[]).includes(k)) {
      if (v !== null && v !== undefined) fields[k] = v;
    } else if (PRUNE_KEYS.includes(k)) {
      if (cacheType !== 'DBPrune') throw new Error(`cache_config: '${k}' is only valid with cache_type: DBPrune`);
      if (v !== null && v !== undefined) fields[k] = v;
    } else {
      throw new Error(`cache_config: unknown option '${k}'`);
    }
  }
  if (typeof fields.steps_computation_mask === 'string') {
    const steps = fields.num_inference_steps;
    if (typeof steps !== 'number') {
      throw new Error("steps_computation_mask: to expand a policy string, 'num_inference_steps' must be set in cache_config");
    }
    fields.steps_computation_mask = stepsMask({ totalSteps: steps, policy: fields.steps_computation_mask as MaskPolicy });
  }
  const cache_config =
    cacheType === 'DBPrune'
      ? dbPruneConfig(fields as Partial<DBPruneConfig>)
      : dbCacheConfig({ ...(fields as Partial<DBCacheConfig>), cache_type: cacheType });
  validateCacheConfig(cache_config);
  return { cache_config, calibrator_config: calibrator };
}

/**
 * Load Cache-DiT YAML (text, or a path to a .yaml/.yml file) or an already parsed object.
 * Nested form (`cache_config:` + other sections) and the legacy flat form are both accepted.
 */
export function loadCacheConfigYaml(textOrPath: string | Record<string, unknown>): LoadedConfigs {
  let doc: unknown;
  if (typeof textOrPath === 'string') {
    let text = textOrPath;
    if (!text.includes('\n') && /\.ya?ml$/i.test(text.trim())) {
      const p = text.trim();
      if (!existsSync(p)) throw new Error(`Configuration file not found: ${p}`);
      text = readFileSync(p, 'utf8');
    }
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new Error(`YAML file parsing error: ${(e as Error).message}`);
    }
  } else {
    doc = structuredClone(textOrPath);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new Error('cache config: expected a mapping at the top level of the YAML document');
  }
  const d = doc as Record<string, unknown>;
  const out: LoadedConfigs = {
    cache_config: null,
    calibrator_config: null,
    parallelism_config: (d.parallelism_config as Record<string, unknown>) ?? null,
    attention_backend: d.attention_backend === undefined ? null : String(d.attention_backend),
    quantize_config: (d.quantize_config as Record<string, unknown>) ?? null,
  };
  if (!('cache_config' in d)) {
    if ('parallelism_config' in d || 'attention_backend' in d || 'quantize_config' in d) return out;
    const r = loadCacheOptions(d); // legacy flat file
    out.cache_config = r.cache_config;
    out.calibrator_config = r.calibrator_config;
    return out;
  }
  const cc = d.cache_config;
  if (cc === null || typeof cc !== 'object' || Array.isArray(cc)) throw new Error('cache_config: expected a mapping');
  const r = loadCacheOptions(cc as Record<string, unknown>);
  out.cache_config = r.cache_config;
  out.calibrator_config = r.calibrator_config;
  return out;
}

// ---------------------------------------------------------------------------------------------
// CLI (Cache-DiT `generate` flags, reference §5.2): defaults differ from the library defaults.

export interface CacheCliFlags {
  cache?: boolean;
  Fn?: number;
  Bn?: number;
  rdt?: number;
  ws?: number;
  wi?: number;
  mc?: number;
  mcc?: number;
  taylorseer?: boolean;
  order?: number;
  foca?: boolean;
  dmd?: boolean;
  dmdHistory?: number;
  dmdSvd?: 'low' | 'medium' | 'high';
  /** `--scm s|m|f|u|slow|medium|fast|ultra` (implies --steps-mask) */
  scm?: MaskPolicy;
  /** `--steps-mask` without `--scm` uses steps_mask's default policy ('medium') */
  stepsMask?: boolean;
  /** static or dynamic policy for the mask's 0-steps (default dynamic) */
  scmPolicy?: 'dynamic' | 'static';
  dbprune?: boolean;
  /** number of inference steps (mask length) */
  steps?: number;
  /** `--config FILE`: YAML that overrides the flags */
  config?: string;
  enableSeparateCfg?: boolean | null;
}

/** CLI defaults of Cache-DiT's generate: `--Fn 1 --Bn 0 --rdt 0.12 --ws 8 --wi 1 --mc -1 --mcc 3 --order 1`. */
export const CLI_DEFAULTS = Object.freeze({ Fn: 1, Bn: 0, rdt: 0.12, ws: 8, wi: 1, mc: -1, mcc: 3, order: 1 });

/** Build (cache_config, calibrator_config) from CLI flags; null cache when --cache/--dbprune/--config are absent. */
export function cacheConfigFromCli(f: CacheCliFlags): { cache_config: CacheConfig | null; calibrator_config: CalibratorConfig | null } {
  if (f.config) {
    const r = loadCacheConfigYaml(f.config);
    return { cache_config: r.cache_config, calibrator_config: r.calibrator_config };
  }
  const calibrator = calibratorFromFlags(f);
  if (!f.cache && !f.dbprune) {
    if (calibrator || f.scm || f.stepsMask) throw new Error('--taylorseer/--foca/--dmd/--scm/--steps-mask require --cache (or --dbprune)');
    return { cache_config: null, calibrator_config: null };
  }
  let mask: number[] | null = null;
  if (f.scm || f.stepsMask) {
    if (!f.steps) throw new Error('--scm/--steps-mask need the number of inference steps (--steps)');
    mask = stepsMask({ totalSteps: f.steps, policy: f.scm ?? 'medium' });
  }
  const base: Partial<BasicCacheConfig> = {
    Fn_compute_blocks: f.Fn ?? CLI_DEFAULTS.Fn,
    Bn_compute_blocks: f.Bn ?? CLI_DEFAULTS.Bn,
    residual_diff_threshold: f.rdt ?? CLI_DEFAULTS.rdt,
    max_warmup_steps: f.ws ?? CLI_DEFAULTS.ws,
    warmup_interval: f.wi ?? CLI_DEFAULTS.wi,
    max_cached_steps: f.mc ?? CLI_DEFAULTS.mc,
    max_continuous_cached_steps: f.mcc ?? CLI_DEFAULTS.mcc,
    steps_computation_mask: mask,
    steps_computation_policy: f.scmPolicy ?? 'dynamic',
    enable_separate_cfg: f.enableSeparateCfg ?? null,
    num_inference_steps: mask ? f.steps! : null,
  };
  const cache_config = f.dbprune ? dbPruneConfig(base as Partial<DBPruneConfig>) : dbCacheConfig(base as Partial<DBCacheConfig>);
  validateCacheConfig(cache_config);
  return { cache_config, calibrator_config: calibrator };
}
