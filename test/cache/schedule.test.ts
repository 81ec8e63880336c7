import { describe, expect, it } from 'vitest';
import { dbCacheConfig, stepsMask } from '../../runtime/cache/index.ts';
import { range, runToy } from './helpers.ts';

const F1 = { Fn_compute_blocks: 1, Bn_compute_blocks: 0 };

describe('DBCache decision schedule (reference §1.5, verified examples)', () => {
  it('W=4, MC=3, threshold high, 20 steps -> runs of 3 cached, one forced compute', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 4, max_continuous_cached_steps: 3, residual_diff_threshold: 1.0 }),
      steps: 20,
    });
    const s = engine.summary()[0];
    expect(s.cached_steps).toEqual([4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18]);
    // threshold >= 1 records -1 for every evaluated step (sentinel), never probes
    expect(Object.values(s.residual_diffs).every((d) => d === -1)).toBe(true);
  });

  it('W=4, MC=2 -> [4,5,7,8,10,11,13,14,16,17,19] (counter quirk)', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 4, max_continuous_cached_steps: 2, residual_diff_threshold: 1.0 }),
      steps: 20,
    });
    expect(engine.summary()[0].cached_steps).toEqual([4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19]);
  });

  it('W=4, I=2 -> only steps 0 and 2 are forced: cached [1,3,4,...,19]', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 4, warmup_interval: 2, residual_diff_threshold: 1.0 }),
      steps: 20,
    });
    expect(engine.summary()[0].cached_steps).toEqual([1, 3, ...range(4, 20)]);
  });

  it('max_cached_steps=5 -> [4..8] then compute', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 4, max_cached_steps: 5, residual_diff_threshold: 1.0 }),
      steps: 20,
    });
    expect(engine.summary()[0].cached_steps).toEqual([4, 5, 6, 7, 8]);
  });

  it('threshold 0 -> nothing cached, nothing recorded', async () => {
    const { engine, runner } = await runToy({ cache: dbCacheConfig({ ...F1, max_warmup_steps: 4, residual_diff_threshold: 0 }), steps: 20 });
    const s = engine.summary()[0];
    expect(s.cached_steps).toEqual([]);
    expect(s.residual_diffs).toEqual({});
    expect(runner.probes).toBe(0);
  });

  it('worked similarity example: diffs 0.0196, 0.0392, 0.0588 vs the last COMPUTED step (thr 0.05, W=2)', async () => {
    const { engine, runner } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 2, residual_diff_threshold: 0.05 }),
      steps: 10,
      eps: 0.02,
    });
    const s = engine.summary()[0];
    const d = s.residual_diffs as Record<string, number>;
    expect(d['2']).toBeCloseTo(0.02 / 1.02, 5);
    expect(d['3']).toBeCloseTo(0.04 / 1.02, 5);
    expect(d['4']).toBeCloseTo(0.06 / 1.02, 5);
    expect(d['5']).toBeCloseTo(0.02 / 1.08, 5);
    expect(s.cached_steps).toEqual([2, 3, 5, 6, 8, 9]);
    // one probe (one small host read) per evaluated step, none in warmup
    expect(runner.probes).toBe(8);
    expect(Object.keys(d)).toEqual(['2', '3', '4', '5', '6', '7', '8', '9']);
  });

  it('accumulated diff cap stops caching once the sum of positive diffs reaches it', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 2, residual_diff_threshold: 0.05, max_accumulated_residual_diff_threshold: 0.05 }),
      steps: 10,
    });
    // step 2 (0.0196) and 3 (0.0392) are recorded; sum 0.0588 >= 0.05 -> no more caching, no more diffs
    const s = engine.summary()[0];
    expect(s.cached_steps).toEqual([2, 3]);
    expect(Object.keys(s.residual_diffs)).toEqual(['2', '3']);
  });
});

describe('SCM (steps computation mask), reference §1.9', () => {
  const mask = stepsMask({ policy: 'fast', totalSteps: 20 });
  it('T=20 fast, W=8, dynamic thr 0.5 -> warmup truncated to 6, cached [6,8..18]', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 8, residual_diff_threshold: 0.5, steps_computation_mask: mask, num_inference_steps: 20 }),
      steps: 20,
    });
    const s = engine.summary()[0];
    expect(engine.context('transformer_blocks')!.warmupSteps).toEqual([0, 1, 2, 3, 4, 5]);
    expect(s.cached_steps).toEqual([6, ...range(8, 19)]);
    expect(Object.keys(s.residual_diffs).length).toBe(12);
  });
  it('static policy: same steps, no diffs recorded, no probes', async () => {
    const { engine, runner } = await runToy({
      cache: dbCacheConfig({
        ...F1, max_warmup_steps: 8, residual_diff_threshold: 0.5, steps_computation_mask: mask,
        steps_computation_policy: 'static', num_inference_steps: 20,
      }),
      steps: 20,
    });
    const s = engine.summary()[0];
    expect(s.cached_steps).toEqual([6, ...range(8, 19)]);
    expect(s.residual_diffs).toEqual({});
    expect(runner.probes).toBe(0);
  });
  it('dynamic with thr 1e-4 caches nothing', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 8, residual_diff_threshold: 1e-4, steps_computation_mask: mask, num_inference_steps: 20 }),
      steps: 20,
    });
    expect(engine.summary()[0].cached_steps).toEqual([]);
  });
});

describe('run tag and summary', () => {
  it('strify tags like Cache-DiT', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 8, max_continuous_cached_steps: 3, residual_diff_threshold: 0.24, enable_separate_cfg: false }),
      steps: 28,
    });
    const s = engine.summary()[0];
    expect(engine.strify()).toBe(`DBCache_F1B0_W8I1M0MC3_R0.24_CFG0_T0O0_S${s.accumulated_cached_steps}`);
    expect(s.accumulated_executed_steps).toBe(28);
    expect(s.accumulated_transformer_executed_steps).toBe(28);
    expect(s.diff_stats).not.toBeNull();
    expect(s.diff_stats!.min).toBeLessThanOrEqual(s.diff_stats!.P50);
  });
  it('no cached steps -> no _S suffix; SCM/N suffixes', async () => {
    const mask = stepsMask({ policy: 'fast', totalSteps: 8 });
    const { engine } = await runToy({
      cache: dbCacheConfig({ ...F1, max_warmup_steps: 8, residual_diff_threshold: 0, steps_computation_mask: mask, num_inference_steps: 8 }),
      steps: 8,
    });
    expect(engine.strify()).toBe('DBCache_F1B0_W8I1M0MC0_R0.0_SCM11101001_dynamic_N8_T0O0');
  });
});
