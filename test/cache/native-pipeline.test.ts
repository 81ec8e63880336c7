// Caching on the real tiny-flux pipeline (compiled plan, native executor, cache kernels):
// threshold 0 == uncached bit for bit, a cached run caches steps and stays close, decisions are
// deterministic, TaylorSeer / FoCa / DMD / DBPrune / SCM runs work, true CFG keeps separate stats per branch.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadFluxPipeline, type GenerateResult, type FluxPipeline } from '../../runtime/pipeline.ts';
import { dbCacheConfig, dbPruneConfig, dmdConfig, focaConfig, taylorSeerConfig, type DBCacheConfig } from '../../runtime/cache/config.ts';
import { stepsMask } from '../../runtime/cache/steps-mask.ts';
import { psnr, ssimRgb } from '../../runtime/metrics.ts';

const PROMPT = 'a large red circle at the center on a black background';
let pipe: FluxPipeline;
let base: GenerateResult;
const F1B0_R012_W4_MC3 = () => dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.12, max_warmup_steps: 4, max_continuous_cached_steps: 3 });

function bitEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

beforeAll(async () => {
  pipe = await loadFluxPipeline('tiny-flux', { threads: 2 });
  base = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0 });
}, 60_000);

describe('tiny-flux with the cache engine', () => {
  it('threshold 0 (and cache_type NONE) reproduce the uncached latents bit for bit', async () => {
    for (const cache of [dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0 }), dbCacheConfig({ Fn_compute_blocks: 2, Bn_compute_blocks: 2, residual_diff_threshold: 0, max_warmup_steps: 0 }), dbCacheConfig({ cache_type: 'NONE' })]) {
      const r = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, cache: { cache } });
      expect(bitEqual(r.latents, base.latents)).toBe(true);
      if (cache.cache_type !== 'NONE') expect(r.cache!.summary[0]!.cached_steps).toEqual([]);
    }
  });

  it('F1B0 R0.12 W4 MC3 at 28 steps: caches MC-limited runs, one probe per non-warmup step, close to uncached', async () => {
    const r = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, cache: { cache: F1B0_R012_W4_MC3() } });
    const s = r.cache!.summary[0]!;
    expect(s.cached_steps.length).toBeGreaterThanOrEqual(10);
    expect(s.cached_steps[0]).toBe(4);
    // MC3: never more than 3 consecutive cached steps
    let run = 1;
    for (let i = 1; i < s.cached_steps.length; i++) {
      run = s.cached_steps[i] === s.cached_steps[i - 1]! + 1 ? run + 1 : 1;
      expect(run).toBeLessThanOrEqual(3);
    }
    expect(r.cache!.probes).toBeLessThanOrEqual(28 - 4);
    expect(r.cache!.tag).toBe(`DBCache_F1B0_W4I1M0MC3_R0.12_CFG0_T0O0_S${s.cached_steps.length}`);
    const p = psnr(r.image, base.image, 255);
    const q = ssimRgb(r.image, base.image, r.width, r.height);
    console.log(`tiny-flux 28 steps F1B0 R0.12 W4 MC3: cached ${s.cached_steps.length}/28, PSNR ${p.toFixed(2)} dB, SSIM ${q.toFixed(4)}`);
    expect(p).toBeGreaterThan(30);
    expect(q).toBeGreaterThan(0.95);
    expect(bitEqual(r.latents, base.latents)).toBe(false);
  });

  it('decisions, diffs and latents are identical across two runs', async () => {
    const a = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 3, cache: { cache: F1B0_R012_W4_MC3() } });
    const b = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 3, cache: { cache: F1B0_R012_W4_MC3() } });
    expect(b.cache!.summary).toEqual(a.cache!.summary);
    expect(bitEqual(a.latents, b.latents)).toBe(true);
  });

  it('TaylorSeer, FoCa, DMD (calibrator kernels) and SCM ultra + TaylorSeer run and stay close', async () => {
    for (const [label, opts] of [
      ['taylorseer', { cache: F1B0_R012_W4_MC3(), calibrator: taylorSeerConfig({ taylorseer_order: 1 }) }],
      ['taylorseer o2', { cache: F1B0_R012_W4_MC3(), calibrator: taylorSeerConfig({ taylorseer_order: 2 }) }],
      ['foca', { cache: F1B0_R012_W4_MC3(), calibrator: focaConfig() }],
      ['dmd', { cache: F1B0_R012_W4_MC3(), calibrator: dmdConfig() }],
      ['scm ultra + ts', {
        cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.12, max_warmup_steps: 8, max_continuous_cached_steps: 3, steps_computation_mask: stepsMask({ totalSteps: 28, policy: 'ultra' }), steps_computation_policy: 'dynamic' }),
        calibrator: taylorSeerConfig(),
      }],
    ] as const) {
      const r = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, cache: opts });
      const s = r.cache!.summary[0]!;
      expect(s.cached_steps.length, label).toBeGreaterThan(5);
      const p = psnr(r.image, base.image, 255);
      console.log(`tiny-flux 28 steps ${label}: ${r.cache!.tag}, PSNR ${p.toFixed(2)} dB`);
      expect(p, label).toBeGreaterThan(25);
    }
  });

  it('DBPrune: prunes blocks, tag carries the pruned ratio, threshold 0 is exact', async () => {
    const r = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, cache: { cache: dbPruneConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 1, residual_diff_threshold: 0.12, max_warmup_steps: 4 }) } });
    const s = r.cache!.summary[0]!;
    expect(s.pruned_ratio!).toBeGreaterThan(0);
    expect(s.pruned_blocks.every((n) => n <= 4)).toBe(true); // never the first Fn / last Bn
    expect(r.cache!.tag).toMatch(/^DBPrune_F1B1_W4I1M0MC0_R0\.12_P[\d.]+_T0O0_S\d+$/);
    expect(psnr(r.image, base.image, 255)).toBeGreaterThan(25);
    const z = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, cache: { cache: dbPruneConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0 }) } });
    expect(bitEqual(z.latents, base.latents)).toBe(true);
  });

  it("reference decision schedules on the real plan (rdt >= 1: always similar): W4 MC3 / MC2, max cached 5, W4 I2, SCM static", async () => {
    const cached = async (o: Partial<DBCacheConfig>, steps = 20) =>
      (await pipe.generate({ prompt: PROMPT, steps, seed: 0, cache: { cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 1.0, ...o }) } })).cache!.summary[0]!.cached_steps;
    expect(await cached({ max_warmup_steps: 4, max_continuous_cached_steps: 3 })).toEqual([4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18]);
    expect(await cached({ max_warmup_steps: 4, max_continuous_cached_steps: 2 })).toEqual([4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19]);
    expect(await cached({ max_warmup_steps: 4, max_cached_steps: 5 })).toEqual([4, 5, 6, 7, 8]);
    expect((await cached({ max_warmup_steps: 4, warmup_interval: 2 })).slice(0, 4)).toEqual([1, 3, 4, 5]);
    // SCM fast T=20, W8 truncated to the 6 leading ones; static caches every 0-step without a diff
    const mask = stepsMask({ totalSteps: 20, policy: 'fast' });
    const st = await pipe.generate({ prompt: PROMPT, steps: 20, seed: 0, cache: { cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0.5, max_warmup_steps: 8, steps_computation_mask: mask, steps_computation_policy: 'static' }) } });
    expect(st.cache!.summary[0]!.cached_steps).toEqual([6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
    expect(st.cache!.summary[0]!.residual_diffs).toEqual({});
  });

  it('Fn + Bn larger than the block list is a clear error naming the options', async () => {
    await expect(pipe.generate({ prompt: PROMPT, steps: 4, cache: { cache: dbCacheConfig({ Fn_compute_blocks: 4, Bn_compute_blocks: 3 }) } })).rejects.toThrow(/Fn.*Bn.*6 blocks/);
  });
});

describe('true CFG (FluxPipeline negative_prompt + true_cfg_scale)', () => {
  const NEG = 'a small blue square';
  it('scale 1 or no negative prompt = no CFG; CFG changes the image; separate cfg stats per branch; rdt 0 exact', async () => {
    const same = await pipe.generate({ prompt: PROMPT, steps: 8, seed: 0, negativePrompt: NEG, guidanceScale: 1 });
    const plain = await pipe.generate({ prompt: PROMPT, steps: 8, seed: 0 });
    expect(bitEqual(same.latents, plain.latents)).toBe(true);
    const cfg = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, negativePrompt: NEG, guidanceScale: 4 });
    expect(bitEqual(cfg.latents.subarray(0, 256), base.latents.subarray(0, 256))).toBe(false);
    const exact = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, negativePrompt: NEG, guidanceScale: 4, cache: { cache: dbCacheConfig({ Fn_compute_blocks: 1, residual_diff_threshold: 0 }) } });
    expect(bitEqual(exact.latents, cfg.latents)).toBe(true);
    const c = await pipe.generate({ prompt: PROMPT, steps: 28, seed: 0, negativePrompt: NEG, guidanceScale: 4, cache: { cache: F1B0_R012_W4_MC3() } });
    const s = c.cache!.summary[0]!;
    expect(c.cache!.tag).toMatch(/_CFG1_/);
    expect(s.accumulated_executed_steps).toBe(28);
    expect(s.accumulated_transformer_executed_steps).toBe(56);
    expect(s.cached_steps.length).toBeGreaterThan(0);
    expect(s.cfg_cached_steps.length).toBeGreaterThan(0);
    expect(Object.keys(s.cfg_residual_diffs).length).toBeGreaterThan(0);
    const p = psnr(c.image, cfg.image, 255);
    console.log(`tiny-flux 28 steps true CFG 4.0 + F1B0 R0.12 W4 MC3: cached ${s.cached_steps.length} + cfg ${s.cfg_cached_steps.length}, PSNR ${p.toFixed(2)} dB`);
    expect(p).toBeGreaterThan(25);
  });
});
