import { describe, expect, it } from 'vitest';
import {
  CacheEngine,
  ToyBlockListRunner,
  dbCacheConfig,
  mixToyBlocks,
  randToyBlocks,
  linearToyBlocks,
  patternOutputs,
  taylorSeerConfig,
  type ForwardPattern,
  type ToyBlock,
} from '../../runtime/cache/index.ts';
import { HN, baseInput, runToy, stepInput } from './helpers.ts';

const PATTERNS: ForwardPattern[] = [0, 1, 2, 3, 4, 5];

async function uncachedOutputs(pattern: ForwardPattern, blocks: ToyBlock[], steps: number) {
  const en = pattern >= 4 ? HN / 2 : 12;
  const r = new ToyBlockListRunner({ pattern, blocks, hiddenNumel: HN, encoderNumel: pattern === 3 ? 0 : en });
  const base = baseInput(HN);
  const ebase = baseInput(en, 2);
  const out = [];
  for (let s = 0; s < steps; s++) out.push(await r.uncached(stepInput(base, s, 0.02), pattern <= 2 ? stepInput(ebase, s, 0.02) : null));
  return out;
}

describe('forward patterns 0..5', () => {
  for (const pattern of PATTERNS) {
    it(`pattern ${pattern}: threshold 0 reproduces the uncached output bit-exactly (F2B2)`, async () => {
      const blocks = mixToyBlocks(8, pattern, 7);
      const ref = await uncachedOutputs(pattern, blocks, 12);
      const { outputs, engine } = await runToy({
        cache: dbCacheConfig({ Fn_compute_blocks: 2, Bn_compute_blocks: 2, residual_diff_threshold: 0, max_warmup_steps: 2 }),
        steps: 12,
        pattern,
        blocks,
      });
      expect(engine.summary()[0].cached_steps).toEqual([]);
      outputs.forEach((o, s) => {
        expect(Buffer.from(o.h.buffer).equals(Buffer.from(ref[s].h.buffer))).toBe(true);
        if (ref[s].e) expect(Buffer.from(o.e!.buffer).equals(Buffer.from(ref[s].e!.buffer))).toBe(true);
      });
    });

    for (const Bn of [0, 2]) {
      it(`pattern ${pattern}, Bn=${Bn}: a hit is (Fn output + stored middle residual) then Bn blocks`, async () => {
        const N = 8;
        const Fn = 2;
        const blocks = mixToyBlocks(N, pattern, 11);
        const en = pattern >= 4 ? HN / 2 : 12;
        const mk = (bs: ToyBlock[]) => new ToyBlockListRunner({ pattern, blocks: bs, hiddenNumel: HN, encoderNumel: pattern === 3 ? 0 : en });
        const F = mk(blocks.slice(0, Fn));
        const M = mk(blocks.slice(Fn, N - Bn));
        const B = mk(blocks.slice(N - Bn));
        const base = baseInput(HN);
        const ebase = baseInput(en, 2);
        const inp = (s: number) => [stepInput(base, s, 0.02), pattern <= 2 ? stepInput(ebase, s, 0.02) : null] as const;
        // step 1 = last computed step (W=2): residuals of the middle blocks
        const f1 = await F.uncached(...inp(1));
        M.setInputs(f1.h, f1.e);
        const m1 = await M.uncached(f1.h, f1.e);
        const R = m1.h.map((x, i) => Math.fround(x - f1.h[i]));
        const E = m1.e && f1.e ? m1.e.map((x, i) => Math.fround(x - f1.e![i])) : null;
        const { outputs, engine } = await runToy({
          cache: dbCacheConfig({ Fn_compute_blocks: Fn, Bn_compute_blocks: Bn, residual_diff_threshold: 1, max_warmup_steps: 2 }),
          steps: 4,
          pattern,
          blocks,
        });
        expect(engine.summary()[0].cached_steps).toEqual([2, 3]);
        for (const s of [2, 3]) {
          const f = await F.uncached(...inp(s));
          const h = f.h.map((x, i) => Math.fround(x + R[i]));
          const e = f.e && E && pattern !== 2 ? f.e.map((x, i) => Math.fround(x + E[i])) : f.e;
          const exp = Bn ? await B.uncached(h, e) : { h, e };
          expect(Array.from(outputs[s].h)).toEqual(Array.from(exp.h));
          if (pattern !== 3) expect(Array.from(outputs[s].e!)).toEqual(Array.from(exp.e!));
        }
      });
    }

    it(`pattern ${pattern}: threshold >= 1 returns the pattern's outputs in order`, async () => {
      const { outputs } = await runToy({ cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 1 }), steps: 3, pattern });
      const o = outputs[2];
      const res = patternOutputs(pattern, o.h, o.e);
      if (pattern === 2 || pattern === 3) expect(res).toBe(o.h);
      else expect(res).toEqual(pattern === 0 || pattern === 4 ? [o.h, o.e] : [o.e, o.h]);
    });
  }
});

describe('determinism', () => {
  it('decisions and outputs are identical across two runs (RandTransformerBlock-like fixtures)', async () => {
    const run = () =>
      runToy({
        cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.3, max_warmup_steps: 4, max_continuous_cached_steps: 3 }),
        steps: 30,
        pattern: 0,
        blocks: randToyBlocks(16, 0, 42),
      });
    const a = await run();
    const b = await run();
    expect(a.engine.summary()).toEqual(b.engine.summary());
    a.outputs.forEach((o, i) => expect(Array.from(o.h)).toEqual(Array.from(b.outputs[i].h)));
  });
});

describe('CFG handling (reference §1.6)', () => {
  it('separate CFG: two calls per step, separate stats and _cfg buffers', async () => {
    const { engine, runner } = await runToy({
      cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 4, max_continuous_cached_steps: 3, enable_separate_cfg: true }),
      steps: 20,
      callsPerStep: 2,
    });
    const s = engine.summary()[0];
    expect(s.cached_steps).toEqual([4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18]);
    expect(s.cfg_cached_steps).toEqual(s.cached_steps);
    expect(s.accumulated_executed_steps).toBe(20);
    expect(s.accumulated_transformer_executed_steps).toBe(40);
    expect(runner.has('Fn_buffer')).toBe(true);
    expect(runner.has('Fn_buffer_cfg')).toBe(true);
    expect(runner.has('Bn_buffer_cfg')).toBe(true);
    expect(engine.strify()).toBe('DBCache_F1B0_W4I1M0MC3_R1.0_CFG1_T0O0_S12');
  });
  it('cfg_diff_compute_separate=false: the CFG call reuses the non-CFG diff (no probe)', async () => {
    const sep = await runToy({
      cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.05, max_warmup_steps: 2, enable_separate_cfg: true }),
      steps: 10,
      callsPerStep: 2,
    });
    const reuse = await runToy({
      cache: dbCacheConfig({
        Fn_compute_blocks: 1, residual_diff_threshold: 0.05, max_warmup_steps: 2, enable_separate_cfg: true, cfg_diff_compute_separate: false,
      }),
      steps: 10,
      callsPerStep: 2,
    });
    const s = reuse.engine.summary()[0];
    expect(s.cfg_residual_diffs).toEqual(s.residual_diffs);
    expect(reuse.runner.probes).toBeLessThan(sep.runner.probes);
  });
  it('cfg_compute_first flips the branches (with cfg_diff_compute_separate=false)', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({
        Fn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 2, enable_separate_cfg: true,
        cfg_compute_first: true, cfg_diff_compute_separate: false,
      }),
      steps: 6,
      callsPerStep: 2,
    });
    const ctx = engine.context('transformer_blocks')!;
    expect(ctx.getCurrentStep()).toBe(5);
    expect(engine.summary()[0].cfg_cached_steps).toEqual([2, 3, 4, 5]);
  });
});

describe('request-level context', () => {
  it('refreshContext({numInferenceSteps}) adds _N and restarts the stats', async () => {
    const { engine, runner } = await runToy({
      cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2, enable_separate_cfg: false }),
      steps: 3,
    });
    engine.refreshContext({ numInferenceSteps: 6 });
    const base = baseInput(HN);
    const ebase = baseInput(12, 2);
    for (let s = 0; s < 6; s++) {
      runner.setInputs(stepInput(base, s, 0.02), stepInput(ebase, s, 0.02));
      await engine.runList('transformer_blocks');
    }
    expect(engine.strify()).toBe('DBCache_F1B0_W2I1M0MC0_R0.5_N6_CFG0_T0O0_S4');
    expect(engine.summary()[0].cached_steps).toEqual([2, 3, 4, 5]);
  });
  it('auto-refresh with num_inference_steps is one forward late (QUIRK: labels 10,0,1,..)', async () => {
    const { engine } = await runToy({
      cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2, num_inference_steps: 10 }),
      steps: 11,
    });
    expect(engine.context('transformer_blocks')!.getCurrentStep()).toBe(10);
    await engine.runList(0);
    expect(engine.context('transformer_blocks')!.getCurrentStep()).toBe(0);
  });
  it('refresh with a policy-name mask expands it for the new step count', async () => {
    const { engine } = await runToy({ cache: dbCacheConfig({ Fn_compute_blocks: 1 }), steps: 1 });
    engine.refreshContext({ numInferenceSteps: 28, cache: { steps_computation_mask: 'fast' } });
    expect(engine.context('transformer_blocks')!.cacheConfig.steps_computation_mask!.join('')).toBe('1111110100010000100000100001');
  });
});

describe('multiple block lists and ParamsModifier', () => {
  it('each list has its own context and Fn/Bn', async () => {
    const a = new ToyBlockListRunner({ pattern: 1, blocks: linearToyBlocks(6, 1), hiddenNumel: HN, encoderNumel: 12 });
    const b = new ToyBlockListRunner({ pattern: 3, blocks: linearToyBlocks(10, 3), hiddenNumel: HN });
    const engine = new CacheEngine({
      lists: [
        { name: 'transformer_blocks', runner: a },
        { name: 'single_transformer_blocks', runner: b, modifier: { cache_config: { residual_diff_threshold: 1, Fn_compute_blocks: 2 } } },
      ],
      cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0, max_warmup_steps: 2 }),
    });
    const base = baseInput(HN);
    for (let s = 0; s < 6; s++) {
      a.setInputs(stepInput(base, s, 0.02), baseInput(12, 2));
      await engine.runList(0);
      b.setInputs(a.hidden);
      await engine.runList(1);
    }
    const [sa, sb] = engine.summary();
    expect(sa.cached_steps).toEqual([]);
    expect(sb.cached_steps).toEqual([2, 3, 4, 5]);
    expect(engine.context('single_transformer_blocks')!.cacheConfig.Fn_compute_blocks).toBe(2);
  });
});

describe('calibrators in the engine', () => {
  it('TaylorSeer order 1 on a linear trajectory beats plain residual reuse', async () => {
    const cache = dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 1, max_warmup_steps: 6, max_continuous_cached_steps: 3 });
    const plain = await runToy({ cache, steps: 14 });
    const ts = await runToy({ cache, steps: 14, calibrator: taylorSeerConfig({ taylorseer_order: 1 }) });
    const ref = await uncachedOutputs(1, linearToyBlocks(8, 1), 14);
    const err = (o: { h: Float32Array }[]) =>
      o.reduce((acc, x, s) => acc + x.h.reduce((a, v, i) => a + Math.abs(v - ref[s].h[i]), 0), 0);
    expect(err(ts.outputs)).toBeLessThan(err(plain.outputs) * 0.01);
    expect(ts.engine.strify()).toMatch(/_T1O1_S\d+$/);
  });
});

describe('cache off', () => {
  it("cache null / 'NONE' runs every block, tag NONE", async () => {
    const { engine, runner } = await runToy({ cache: null, steps: 3 });
    expect(runner.blocksRun).toBe(24);
    expect(engine.strify()).toBe('NONE');
  });
});
