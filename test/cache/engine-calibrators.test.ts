import { describe, expect, it } from 'vitest';
import {
  NativeTensorOps,
  ToyBlockListRunner,
  dbCacheConfig,
  dbPruneConfig,
  dmdConfig,
  focaConfig,
  mixToyBlocks,
  taylorSeerConfig,
  type ForwardPattern,
  type ToyRunnerOptions,
} from '../../runtime/cache/index.ts';
import { native } from '../../runtime/native.ts';
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

/** the toy reference runner with the calibrators on the native cache kernels instead of hostOps (launches logged) */
class NativeOpsToyRunner extends ToyBlockListRunner {
  override readonly ops: NativeTensorOps;
  readonly launches: { name: string; i: number[] }[] = [];
  constructor(o: ToyRunnerOptions) {
    super(o);
    this.ops = new NativeTensorOps({
      runKernel: (name, t, i, f) => {
        this.launches.push({ name, i });
        native.runKernel(name, t, i, f);
      },
    });
  }
}

describe('calibrators on the native cache kernels == host calibrators, bit for bit, through the engine', () => {
  const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
  const W4 = dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 4, max_continuous_cached_steps: 3 });
  // 10 uniform computes: DMD H9 fits 9 snapshots = 8 forecast terms (2 forecast_f64 launches) and 9-long Gram rows
  const W10 = dbCacheConfig({ ...W4, max_warmup_steps: 10 });
  for (const pattern of [0, 1, 2, 3, 4, 5] as ForwardPattern[]) {
    for (const [cal, tag, cache, launch] of [
      [taylorSeerConfig({ taylorseer_order: 2 }), 'TaylorSeer O2', W4, 'taylor_diff'],
      [taylorSeerConfig({ taylorseer_order: 7 }), 'TaylorSeer O7 (8 terms: chained forecast launches)', W10, 'forecast'],
      [focaConfig(), 'FoCa', W4, 'foca_forecast'],
      [dmdConfig({ dmd_history: 5 }), 'DMD H5', W4, 'dmd_gram'],
      [dmdConfig({ dmd_history: 9 }), 'DMD H9 (chained forecast_f64, Gram in tiles)', W10, 'forecast_f64'],
    ] as const) {
      it(`pattern ${pattern} + ${tag}, batch 2, 24 steps`, async () => {
        const blocks = mixToyBlocks(6, pattern, 3);
        // segments of 4100 (> the 4096 reduction chunk) on the hidden stream
        const base = { pattern, blocks, hiddenNumel: 8200, encoderNumel: pattern === 3 ? 0 : pattern >= 4 ? 4100 : 1030, batch: 2 };
        const nr = new NativeOpsToyRunner(base);
        const [host, nat] = await Promise.all(
          [new ToyBlockListRunner(base), nr].map((runner) => runToy({ cache, calibrator: cal, steps: 24, pattern, runner, eps: 0.03 })),
        );
        expect(nat.engine.summary()[0].cached_steps).toEqual(host.engine.summary()[0].cached_steps);
        expect(host.engine.summary()[0].cached_steps.length).toBeGreaterThan(8);
        for (let i = 0; i < host.outputs.length; i++) {
          expect(bits(nat.outputs[i].h), `step ${i} hidden`).toBe(bits(host.outputs[i].h));
          if (host.outputs[i].e) expect(bits(nat.outputs[i].e!), `step ${i} encoder`).toBe(bits(host.outputs[i].e!));
        }
        // the path under test really ran: chained launches where the tag says so
        const mine = nr.launches.filter((l) => l.name === launch);
        expect(mine.length, launch).toBeGreaterThan(0);
        if (launch === 'forecast') expect(mine.some((l) => l.i[1] === 6) && mine.some((l) => l.i[1] === 3)).toBe(true); // 6 + (1 + 2)
        if (launch === 'forecast_f64') {
          expect(mine.some((l) => l.i[3] === 1) && mine.some((l) => l.i[3] === 2)).toBe(true); // start + finish launches
          expect(nr.launches.some((l) => l.name === 'dmd_gram' && l.i[3] > 0)).toBe(true); // 9 snapshots: Gram in tiles
        }
      });
    }
  }
});
