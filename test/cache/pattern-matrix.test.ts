// Forward patterns 0..5 on small models built with the DSL, compiled and run on the native executor with
// the cache engine (NativeBlockListRunner + cache kernels) over a 12-step toy "denoise loop" (the input
// drifts slowly from step to step): threshold 0 == uncached bit for bit; a positive threshold caches steps,
// and the cached run is deterministic.
import { beforeAll, describe, expect, it } from 'vitest';
import { patternModel, twoListModel } from './fixtures/pattern-models.ts';
import { compileDetailed, registerModel } from '../../compiler/index.ts';
import { native } from '../../runtime/native.ts';
import type { Plan } from '../../runtime/plan.ts';
import { TransformerCacheSession } from '../../runtime/pipeline-cache.ts';
import { dbCacheConfig, dbPruneConfig, dmdConfig, focaConfig, taylorSeerConfig, type CacheConfig, type CalibratorConfig } from '../../runtime/cache/config.ts';
import { randomInputs, randomWeights } from '../helpers/random.ts';
import { notRunnable } from '../helpers/run-plan.ts';

const PATTERNS = [0, 1, 2, 3, 4, 5] as const;
const plans = new Map<number, Plan>();
beforeAll(() => {
  for (const p of PATTERNS) {
    const m = patternModel(p);
    registerModel(m.name, m);
    plans.set(p, compileDetailed(m.name, { component: 'transformer', dims: { batch: 2 } }).plan);
  }
});

/** 12 forwards with input x * (1 + 0.01 s); returns every output of every step (concatenated) */
async function loop(plan: Plan, cache: CacheConfig | null, calibrator: CalibratorConfig | null = null) {
  const w = randomWeights(plan, 1);
  const ins = randomInputs(plan, 2);
  const exec = new native.Executor(JSON.stringify(plan), { threads: 2 });
  for (const wt of plan.weights) exec.bindWeight(wt.name, w.get(wt.name)!);
  const session = cache ? new TransformerCacheSession(native, { cache, calibrator }, { steps: 12, separateCfg: false }) : null;
  const outs: number[] = [];
  for (let s = 0; s < 12; s++) {
    for (const i of plan.inputs) exec.setInput(i.name, ins[i.name]!.map((v) => Math.fround(v * (1 + 0.01 * s))));
    if (session) await session.forward(plan, exec);
    else for (const seg of plan.segments) await exec.run(seg.name);
    for (const o of plan.outputs) {
      const y = new Float32Array(o.shape.reduce((a, b) => a * b, 1));
      exec.getOutput(o.name, y);
      outs.push(...y);
    }
  }
  return { out: Float32Array.from(outs), result: session?.result() ?? null };
}

describe.each(PATTERNS.map((p) => [p]))('forward pattern %i (DSL model, native, 5 blocks)', (p) => {
  it('compiles to one block-list segment with the pattern and io; runs natively', () => {
    const plan = plans.get(p)!;
    const seg = plan.segments.find((s) => s.blocks)!;
    expect(seg.pattern).toBe(p);
    expect(seg.blocks!.length).toBe(5);
    expect(seg.io!.encoder !== undefined).toBe(p !== 3);
    expect(notRunnable(plan)).toBeNull();
  });

  it('threshold 0 (DBCache F1B0, F2B1, DBPrune) == uncached bit for bit', async () => {
    const plan = plans.get(p)!;
    const ref = await loop(plan, null);
    for (const cache of [
      dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0, max_warmup_steps: 0 }),
      dbCacheConfig({ Fn_compute_blocks: 2, Bn_compute_blocks: 1, residual_diff_threshold: 0, max_warmup_steps: 2 }),
      dbPruneConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0, max_warmup_steps: 0 }),
    ]) {
      const r = await loop(plan, cache);
      expect(Buffer.from(r.out.buffer).equals(Buffer.from(ref.out.buffer)), JSON.stringify(cache)).toBe(true);
    }
  });

  it('a positive threshold caches steps deterministically (DBCache, + TaylorSeer, DBPrune)', async () => {
    const plan = plans.get(p)!;
    const ref = await loop(plan, null);
    for (const [cache, cal] of [
      [dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }), null],
      [dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }), taylorSeerConfig()],
      [dbPruneConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }), null],
    ] as const) {
      const a = await loop(plan, cache, cal);
      const b = await loop(plan, cache, cal);
      const s = a.result!.summary[0]!;
      expect(s.cached_steps.length, a.result!.tag).toBeGreaterThan(0);
      expect(b.result!.summary).toEqual(a.result!.summary);
      expect(Buffer.from(a.out.buffer).equals(Buffer.from(b.out.buffer))).toBe(true);
      expect(Buffer.from(a.out.buffer).equals(Buffer.from(ref.out.buffer))).toBe(false);
    }
  });
});

describe('NativeBlockListRunner (cache kernels, arena views) == ExecutorBlockListRunner (host bridge)', () => {
  it.each(PATTERNS.map((p) => [p]))('pattern %i: same decisions, same outputs bit for bit, diffs within 1e-12', async (p) => {
    const { CacheEngine, ExecutorBlockListRunner, NativeBlockListRunner } = await import('../../runtime/cache/index.ts');
    const plan = plans.get(p)!;
    const seg = plan.segments.find((s) => s.blocks)!;
    const run = async (kind: 'native' | 'host', cache: CacheConfig, cal: CalibratorConfig | null) => {
      const w = randomWeights(plan, 1);
      const ins = randomInputs(plan, 2);
      const exec = new native.Executor(JSON.stringify(plan), { threads: 2 });
      for (const wt of plan.weights) exec.bindWeight(wt.name, w.get(wt.name)!);
      const runner = kind === 'native' ? new NativeBlockListRunner(exec, native, plan, seg) : new ExecutorBlockListRunner(exec, plan, seg);
      const engine = new CacheEngine({ lists: [{ name: seg.name, runner }], cache, calibrator: cal });
      const outs: number[] = [];
      for (let s = 0; s < 12; s++) {
        for (const i of plan.inputs) exec.setInput(i.name, ins[i.name]!.map((v) => Math.fround(v * (1 + 0.01 * s))));
        for (const sg of plan.segments) {
          if (sg === seg) await engine.runList(seg.name);
          else await exec.run(sg.name);
        }
        for (const o of plan.outputs) {
          const y = new Float32Array(o.shape.reduce((a, b) => a * b, 1));
          exec.getOutput(o.name, y);
          outs.push(...y);
        }
      }
      return { out: Float32Array.from(outs), summary: engine.summary()[0]! };
    };
    for (const [cache, cal] of [
      [dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }), null],
      [dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }), taylorSeerConfig({ taylorseer_order: 2 })],
      // calibrators on NativeTensorOps (native runner) vs hostOps (host bridge); W4 so DMD fits 4 snapshots
      [dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 4 }), focaConfig()],
      [dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 4 }), dmdConfig({ dmd_history: 5 })],
      [dbPruneConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }), null],
    ] as const) {
      const a = await run('native', cache, cal);
      const b = await run('host', cache, cal);
      expect(a.summary.cached_steps).toEqual(b.summary.cached_steps);
      expect(a.summary.pruned_blocks).toEqual(b.summary.pruned_blocks);
      expect(Buffer.from(a.out.buffer).equals(Buffer.from(b.out.buffer))).toBe(true);
      for (const [k, v] of Object.entries(a.summary.residual_diffs)) {
        const u = (b.summary.residual_diffs as Record<string, number | number[]>)[k]!;
        const xs = Array.isArray(v) ? v : [v];
        const ys = Array.isArray(u) ? u : [u];
        xs.forEach((x, j) => expect(Math.abs(x - ys[j]!)).toBeLessThanOrEqual(1e-12 * Math.abs(ys[j]!) + 1e-15));
      }
    }
  });
});

describe('two block lists in one plan (P1 list, a mid segment, P3 list): one context per list, ParamsModifier', () => {
  it('threshold 0 == uncached bit for bit; per-list Fn/threshold overrides show in each list\'s tag and decisions', async () => {
    const m = twoListModel();
    registerModel(m.name, m);
    const plan = compileDetailed(m.name, { component: 'transformer', dims: { batch: 1 } }).plan;
    expect(plan.segments.filter((s) => s.blocks).map((s) => [s.name, s.pattern])).toEqual([['blocks:double', 1], ['blocks:single', 3]]);
    const ref = await loop(plan, null);
    const z = await loop(plan, dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0, max_warmup_steps: 0 }));
    expect(Buffer.from(z.out.buffer).equals(Buffer.from(ref.out.buffer))).toBe(true);
    expect(z.result!.summary.map((s) => s.name)).toEqual(['blocks:double', 'blocks:single']);

    const w = randomWeights(plan, 1);
    const ins = randomInputs(plan, 2);
    const exec = new native.Executor(JSON.stringify(plan), { threads: 2 });
    for (const wt of plan.weights) exec.bindWeight(wt.name, w.get(wt.name)!);
    const session = new TransformerCacheSession(
      native,
      {
        cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 2 }),
        modifiers: { 'blocks:single': { cache_config: { Fn_compute_blocks: 2, Bn_compute_blocks: 1, residual_diff_threshold: 0 } } },
      },
      { steps: 12, separateCfg: false },
    );
    for (let s = 0; s < 12; s++) {
      for (const i of plan.inputs) exec.setInput(i.name, ins[i.name]!.map((v) => Math.fround(v * (1 + 0.01 * s))));
      await session.forward(plan, exec);
    }
    const [d, sg] = session.result().summary;
    expect(d!.tag).toMatch(/^DBCache_F1B0_W2I1M0MC0_R0\.5_CFG0_T0O0_S\d+$/);
    expect(d!.cached_steps.length).toBeGreaterThan(0);
    expect(sg!.tag).toBe('DBCache_F2B1_W2I1M0MC0_R0.0_CFG0_T0O0');
    expect(sg!.cached_steps).toEqual([]);
    // Fn + Bn of one list larger than that list: the error names the list
    const bad = new TransformerCacheSession(native, { cache: dbCacheConfig({ Fn_compute_blocks: 3, Bn_compute_blocks: 1 }) }, { steps: 4, separateCfg: false });
    expect(() => bad.prepare(plan, exec)).toThrow(/3 blocks.*blocks:double/);
  });
});
