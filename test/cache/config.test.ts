import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CacheEngine,
  ToyBlockListRunner,
  calibratorFromFlags,
  dbCacheConfig,
  dbPruneConfig,
  dmdConfig,
  focaConfig,
  linearToyBlocks,
  loadCacheConfigYaml,
  pyFloatRepr,
  pyRound,
  npPercentile,
  stepsMask,
  strifyCacheConfig,
  strifyCalibrator,
  taylorSeerConfig,
  validateCacheConfig,
  applyParamsModifier,
} from '../../runtime/cache/index.ts';

const EXAMPLE = `cache_config:
  max_warmup_steps: 8
  warmup_interval: 2
  max_cached_steps: -1
  max_continuous_cached_steps: 2
  Fn_compute_blocks: 1
  Bn_compute_blocks: 0
  num_inference_steps: 28
  steps_computation_mask: fast
  residual_diff_threshold: 0.12
  enable_taylorseer: true
  taylorseer_order: 1
parallelism_config:
  ulysses_size: 2
  parallel_kwargs:
    attention_backend: native
    extra_parallel_modules: ["text_encoder", "vae"]
`;

describe('defaults (Cache-DiT code defaults, §3.5)', () => {
  it('DBCacheConfig', () => {
    const c = dbCacheConfig();
    expect(c).toMatchObject({
      cache_type: 'DBCache', Fn_compute_blocks: 8, Bn_compute_blocks: 0, residual_diff_threshold: 0.08,
      max_accumulated_residual_diff_threshold: null, max_warmup_steps: 8, warmup_interval: 1, max_cached_steps: -1,
      max_continuous_cached_steps: -1, enable_separate_cfg: null, cfg_compute_first: false, cfg_diff_compute_separate: true,
      num_inference_steps: null, steps_computation_mask: null, steps_computation_policy: 'dynamic',
      force_refresh_step_hint: null, force_refresh_step_policy: 'once',
    });
    expect(strifyCacheConfig(c)).toBe('DBCache_F8B0_W8I1M0MC0_R0.08');
  });
  it('DBPruneConfig and calibrators', () => {
    expect(dbPruneConfig()).toMatchObject({
      cache_type: 'DBPrune', enable_dynamic_prune_threshold: false, max_dynamic_prune_threshold: null,
      dynamic_prune_threshold_relax_ratio: 1.25, non_prune_block_ids: [], force_reduce_calibrator_vram: false,
    });
    expect(taylorSeerConfig()).toMatchObject({ enable_calibrator: true, enable_encoder_calibrator: true, taylorseer_order: 1 });
    expect(focaConfig()).toMatchObject({ enable_calibrator: true, enable_encoder_calibrator: true });
    expect(dmdConfig()).toMatchObject({ dmd_history: 6, dmd_rank: 0, dmd_ridge: 1e-8, dmd_svd_precision: 'medium' });
  });
});

describe('tags', () => {
  it('config tag suffixes', () => {
    const mask = stepsMask({ policy: 'fast', totalSteps: 28 });
    expect(
      strifyCacheConfig(dbCacheConfig({
        Fn_compute_blocks: 1, max_continuous_cached_steps: 3, residual_diff_threshold: 0.24, steps_computation_mask: mask,
        num_inference_steps: 28, force_refresh_step_hint: 50, force_refresh_step_policy: 'repeat', enable_separate_cfg: true,
      })),
    ).toBe(`DBCache_F1B0_W8I1M0MC3_R0.24_SCM${mask.join('')}_dynamic_N28_FR50_repeat_CFG1`);
    expect(strifyCacheConfig(dbPruneConfig({ num_inference_steps: 28, enable_separate_cfg: false }))).toBe('DBPrune_F8B0_W8I1M0MC0_R0.08');
  });
  it('calibrator tags', () => {
    expect(strifyCalibrator(null)).toBe('T0O0');
    expect(strifyCalibrator(taylorSeerConfig())).toBe('T1O1');
    expect(strifyCalibrator(taylorSeerConfig({ taylorseer_order: 2 }))).toBe('T1O2');
    expect(strifyCalibrator(focaConfig())).toBe('FoCa');
    expect(strifyCalibrator(dmdConfig())).toBe('DMDH6');
    expect(strifyCalibrator(dmdConfig({ dmd_history: 5, dmd_svd_precision: 'low' }))).toBe('DMDH5l');
  });
  it('python float formatting', () => {
    expect([0.24, 0.5, 1, 1e-4, 1e-5, 0.12, 1e16, 42.5].map(pyFloatRepr)).toEqual([
      '0.24', '0.5', '1.0', '0.0001', '1e-05', '0.12', '1e+16', '42.5',
    ]);
    expect(pyRound(0.425 * 100, 2)).toBe(42.5);
    expect(pyRound(0.125, 2)).toBe(0.12); // ties to even on the exact value
    expect(pyRound(2.675, 2)).toBe(2.67); // exact binary value is below the tie
    expect(npPercentile([1, 2, 3, 4], 25)).toBe(1.75);
    expect(npPercentile([0.1, 0.5, 0.2], 95)).toBeCloseTo(0.47, 12);
  });
});

describe('YAML (Cache-DiT tests/api/config.yaml)', () => {
  it('loads the example with steps_computation_mask: fast expanded', () => {
    const r = loadCacheConfigYaml(EXAMPLE);
    expect(r.cache_config).toMatchObject({
      cache_type: 'DBCache', max_warmup_steps: 8, warmup_interval: 2, max_cached_steps: -1, max_continuous_cached_steps: 2,
      Fn_compute_blocks: 1, Bn_compute_blocks: 0, num_inference_steps: 28, residual_diff_threshold: 0.12,
    });
    expect(r.cache_config!.steps_computation_mask!.join('')).toBe('1111110100010000100000100001');
    // loader quirk: encoder calibrator defaults to false
    expect(r.calibrator_config).toMatchObject({ calibrator_type: 'taylorseer', enable_calibrator: true, enable_encoder_calibrator: false, taylorseer_order: 1 });
    expect(r.parallelism_config).toMatchObject({ ulysses_size: 2 });
    expect(strifyCacheConfig(r.cache_config!)).toBe('DBCache_F1B0_W8I2M0MC2_R0.12_SCM1111110100010000100000100001_dynamic_N28');
  });
  it('loads from a file path, flat legacy files, DBPrune and DMD keys', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachecfg-'));
    const p = join(dir, 'cache.yaml');
    writeFileSync(p, EXAMPLE);
    expect(loadCacheConfigYaml(p).cache_config!.Fn_compute_blocks).toBe(1);
    const flat = loadCacheConfigYaml('Fn_compute_blocks: 4\nresidual_diff_threshold: 0.2\nenable_dmd: true\ndmd_history: 5\n');
    expect(flat.cache_config!.Fn_compute_blocks).toBe(4);
    expect(flat.calibrator_config).toMatchObject({ calibrator_type: 'dmd', dmd_history: 5, enable_encoder_calibrator: true });
    const pr = loadCacheConfigYaml('cache_config:\n  cache_type: DBPrune\n  non_prune_block_ids: [3]\n  enable_dynamic_prune_threshold: true\n');
    expect(pr.cache_config).toMatchObject({ cache_type: 'DBPrune', non_prune_block_ids: [3], enable_dynamic_prune_threshold: true });
    expect(loadCacheConfigYaml('parallelism_config:\n  ulysses_size: 2\n').cache_config).toBeNull();
  });
});

describe('bad options give clear errors naming the option', () => {
  it('taylorseer together with foca', () => {
    expect(() => calibratorFromFlags({ taylorseer: true, foca: true })).toThrow(/--taylorseer and --foca are mutually exclusive/);
    expect(() => loadCacheConfigYaml('cache_config:\n  enable_taylorseer: true\n  enable_foca: true\n')).toThrow(/mutually exclusive/);
  });
  it('Fn + Bn larger than the block list', () => {
    const runner = new ToyBlockListRunner({ pattern: 3, blocks: linearToyBlocks(4, 3), hiddenNumel: 8 });
    expect(() => new CacheEngine({ lists: [{ name: 'blocks', runner }], cache: dbCacheConfig({ Fn_compute_blocks: 3, Bn_compute_blocks: 2 }) })).toThrow(
      /Fn_compute_blocks \+ Bn_compute_blocks \(--Fn 3 \+ --Bn 2\) is larger than the block list \(4 blocks\) \(block list 'blocks'\)/,
    );
  });
  it('Fn < 1, warmup interval 0, bad policy, cfg contradiction', () => {
    expect(() => validateCacheConfig(dbCacheConfig({ Fn_compute_blocks: 0 }))).toThrow(/Fn_compute_blocks \(--Fn\) must be an integer >= 1/);
    expect(() => validateCacheConfig(dbCacheConfig({ warmup_interval: 0 }))).toThrow(/warmup_interval \(--wi\)/);
    expect(() => validateCacheConfig(dbCacheConfig({ steps_computation_policy: 'lazy' as never }))).toThrow(/steps_computation_policy/);
    expect(() => validateCacheConfig(dbCacheConfig({ enable_separate_cfg: true, cfg_compute_first: true }))).toThrow(/cfg_compute_first/);
  });
  it('a steps mask of the wrong length', () => {
    expect(() =>
      validateCacheConfig(dbCacheConfig({ num_inference_steps: 20, steps_computation_mask: stepsMask({ policy: 'fast', totalSteps: 28 }) })),
    ).toThrow(/steps_computation_mask: length 28 does not match num_inference_steps 20/);
    expect(() => validateCacheConfig(dbCacheConfig({ steps_computation_mask: [1, 2, 0] }))).toThrow(/entry 1 is 2/);
  });
  it('YAML: unknown key, policy mask without steps, prune keys on DBCache, bad calibrator values', () => {
    expect(() => loadCacheConfigYaml('cache_config:\n  Fn_compute_block: 1\n')).toThrow(/unknown option 'Fn_compute_block'/);
    expect(() => loadCacheConfigYaml('cache_config:\n  steps_computation_mask: fast\n')).toThrow(/'num_inference_steps' must be set/);
    expect(() => loadCacheConfigYaml('cache_config:\n  non_prune_block_ids: [1]\n')).toThrow(/only valid with cache_type: DBPrune/);
    expect(() => loadCacheConfigYaml('cache_config:\n  enable_dmd: true\n  dmd_svd_precision: ultra\n')).toThrow(/dmd_svd_precision/);
    expect(() => loadCacheConfigYaml('cache_config:\n  cache_type: Turbo\n')).toThrow(/cache_type: unsupported value 'Turbo'/);
    expect(() => loadCacheConfigYaml('cache_config: [1, 2]\n')).toThrow(/expected a mapping/);
  });
  it('--order without --taylorseer', () => {
    expect(() => calibratorFromFlags({ order: 2 })).toThrow(/--order requires --taylorseer/);
  });
});

describe('ParamsModifier', () => {
  it('only given fields override; calibrator replace / disable / keep', () => {
    const base = dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.12 });
    const cal = taylorSeerConfig();
    const a = applyParamsModifier(base, cal, { cache_config: { residual_diff_threshold: 0.36 } });
    expect(a.cache).toMatchObject({ Fn_compute_blocks: 1, residual_diff_threshold: 0.36 });
    expect(a.calibrator).toEqual(cal);
    expect(applyParamsModifier(base, cal, { calibrator_config: null }).calibrator).toBeNull();
    expect(applyParamsModifier(base, null, { calibrator_config: focaConfig() }).calibrator!.calibrator_type).toBe('foca');
  });
});

import { cacheConfigFromCli } from '../../runtime/cache/index.ts';
describe('CLI flags (Cache-DiT generate defaults)', () => {
  it('--cache uses CLI defaults F1B0 R0.12 W8 MC3', () => {
    const r = cacheConfigFromCli({ cache: true, enableSeparateCfg: false });
    expect(strifyCacheConfig(r.cache_config!)).toBe('DBCache_F1B0_W8I1M0MC3_R0.12_CFG0');
    expect(r.calibrator_config).toBeNull();
  });
  it('--scm f --steps 28 --taylorseer --order 2; --dbprune', () => {
    const r = cacheConfigFromCli({ cache: true, scm: 'f', steps: 28, taylorseer: true, order: 2 });
    expect(r.cache_config!.steps_computation_mask!.join('')).toBe('1111110100010000100000100001');
    expect(strifyCalibrator(r.calibrator_config)).toBe('T1O2');
    expect(cacheConfigFromCli({ dbprune: true }).cache_config!.cache_type).toBe('DBPrune');
  });
  it('errors', () => {
    expect(() => cacheConfigFromCli({ taylorseer: true })).toThrow(/require --cache/);
    expect(() => cacheConfigFromCli({ cache: true, scm: 'f' })).toThrow(/--steps/);
    expect(() => cacheConfigFromCli({ cache: true, Fn: 0 })).toThrow(/--Fn/);
    expect(() => cacheConfigFromCli({ cache: true, dmd: true, foca: true })).toThrow(/--foca and --dmd are mutually exclusive/);
  });
});
