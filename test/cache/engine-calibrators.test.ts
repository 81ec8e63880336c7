import { describe, expect, it } from 'vitest';
import { dbCacheConfig, dbPruneConfig, dmdConfig, focaConfig, taylorSeerConfig, type ForwardPattern } from '../../runtime/cache/index.ts';
import { runToy } from './helpers.ts';

const cache = dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 6, max_continuous_cached_steps: 3 });

describe('calibrators through the engine, every pattern', () => {
  for (const pattern of [0, 1, 2, 3, 4, 5] as ForwardPattern[]) {
    for (const [cal, tag] of [
      [taylorSeerConfig({ taylorseer_order: 2 }), 'T1O2'],
      [focaConfig(), 'FoCa'],
      [dmdConfig({ dmd_history: 5 }), 'DMDH5'],
      [taylorSeerConfig({ calibrator_cache_type: 'hidden_states' }), 'T1O1'],
    ] as const) {
      it(`pattern ${pattern} + ${tag}${cal.calibrator_cache_type === 'hidden_states' ? ' (hidden_states)' : ''}`, async () => {
        const { engine, outputs } = await runToy({ cache, calibrator: cal, steps: 20, pattern });
        const s = engine.summary()[0];
        expect(s.cached_steps).toEqual([6, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19]);
        expect(engine.strify().endsWith(`_${tag}_S11`)).toBe(true);
        for (const o of outputs) expect(o.h.every(Number.isFinite)).toBe(true);
      });
    }
  }
});

describe('DBPrune with a calibrator and separate CFG', () => {
  it('runs, per-branch stats', async () => {
    const { engine } = await runToy({
      cache: dbPruneConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 2, enable_separate_cfg: true }),
      calibrator: taylorSeerConfig(),
      steps: 6,
      callsPerStep: 2,
      pattern: 0,
    });
    const s = engine.summary()[0];
    expect(s.pruned_blocks).toEqual([0, 0, 6, 6, 6, 6]);
    expect(s.cfg_pruned_blocks).toEqual([0, 0, 6, 6, 6, 6]);
    expect(s.pruned_ratio).toBeCloseTo(24 / 48, 12);
    expect(engine.strify()).toBe('DBPrune_F1B1_W2I1M0MC0_R1.0_P50.0_T1O1_S4');
  });
});

describe('force refresh (MCC, reference §1.11)', () => {
  it("hint 4 'once' rebuilds the context at transformer step 3, keeps accumulated counters", async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 2, force_refresh_step_hint: 4 }),
      steps: 10,
    });
    const ctx = engine.context('transformer_blocks')!;
    expect(ctx.cacheConfig.force_refresh_step_hint).toBeNull();
    const s = engine.summary()[0];
    // calls 1-4: steps 0..3, cached 2,3; the 5th call sees transformer step 3 == hint-1 and refreshes
    expect(s.accumulated_executed_steps).toBe(10);
    // calls 5-10 run as steps 0..5 of the new context: warmup 0,1 then cached 2..5
    expect(s.cached_steps).toEqual([2, 3, 4, 5]);
    expect(s.accumulated_cached_steps).toBe(2 + 4);
  });
});
