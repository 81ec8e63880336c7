// A Wan 2.1 diffusers directory (test/fixtures/wan2.1-random) on several ranks == 1 rank: Ulysses (the
// fixture's 3 heads over 2 ranks: UAA's uneven head split), ring, TP (3 heads on 2 ranks: 2 + 1; 3 ranks: one
// head each), with CFG on
// every rank (cond then uncond), TE-P (UMT5 tensor-parallel), and DBCache caching the 1-rank steps. Every rank is the one-rank
// Pipeline with its transformer plan on a ParallelExecutor (runtime/pipeline-parallel.ts).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { loadWanPipeline, PACKAGE_ROOT, type PlanProvider } from '../../runtime/pipeline.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import type { VideoGenerateOptions, VideoGenerateResult } from '../../runtime/pipelines/wan.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/wan2.1-random');
const generatedDir = path.join(PACKAGE_ROOT, 'generated');
const planProvider: PlanProvider = (c, _d, req) => compileRequest(c, req);
const parallelPlanProvider: ParallelPlanProvider = (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel });
const BASE: VideoGenerateOptions = { prompt: 'a large red circle at the center on a black background', height: 64, width: 64, numFrames: 5, steps: 5, seed: 3, maxSequenceLength: 24 };
const oneRank = async (o: VideoGenerateOptions) => (await loadWanPipeline(DIR, { threads: 1, generatedDir, planProvider })).generate(o);

describe.skipIf(!nativeAvailable())('Wan 2.1 directory on N ranks == 1 rank', () => {
  for (const [label, world, parallel] of [
    ['ulysses (UAA: 3 heads on 2 ranks)', 2, 'ulysses'],
    ['ring', 2, 'ring'],
    ['tp (3 heads on 2 ranks: 2 + 1)', 2, 'tp'],
    ['tp (3 ranks, one head each)', 3, 'tp'],
  ] as const) {
    it(`${label}: latents within 1e-5 relative L2, frames within 1/255`, async () => {
      const one = await oneRank(BASE);
      const r = await generateParallel<VideoGenerateResult>(DIR, { ...BASE, world, parallel, comm: 'shm', threads: 1, generatedDir, planProvider, parallelPlanProvider });
      const e = relL2(r.latents, one.latents);
      console.log(`wan2.1 ${label} world ${world}: latents relL2 ${e.toExponential(2)}`);
      expect(r.parallel.kind).toBe(parallel);
      expect(e).toBeLessThan(1e-5);
      expect(maxAbsDiff(r.videos[0]!, one.videos[0]!)).toBeLessThanOrEqual(1);
      expect(r.ranks.map((x) => x.bytesPerStep > 0)).toEqual(new Array(world).fill(true));
    });
  }
  it('TE-P (--parallel-text): UMT5 tensor-parallel on 2 ranks (2 heads each) beside Ulysses; latents within 1e-5', async () => {
    const one = await oneRank(BASE);
    const r = await generateParallel<VideoGenerateResult>(DIR, { ...BASE, world: 2, parallel: 'ulysses', parallelText: true, comm: 'shm', threads: 1, generatedDir, planProvider, parallelPlanProvider });
    const e = relL2(r.latents, one.latents);
    console.log(`wan2.1 ulysses + TE-P world 2: latents relL2 ${e.toExponential(2)}`);
    expect(e).toBeLessThan(1e-5);
    expect(maxAbsDiff(r.videos[0]!, one.videos[0]!)).toBeLessThanOrEqual(1);
  });
  it('DBCache F1B0 on 2 ranks caches the 1-rank steps (separate CFG contexts)', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.2, max_warmup_steps: 2 }) };
    const opts = { ...BASE, steps: 10, cache };
    const one = await oneRank(opts);
    const r = await generateParallel<VideoGenerateResult>(DIR, { ...opts, world: 2, threads: 1, generatedDir, planProvider, parallelPlanProvider });
    const s1 = one.cache!.summary[0]!;
    console.log(`wan2.1 cached world 2: ${JSON.stringify(r.cache!.summary[0]!.cached_steps)} / cfg ${JSON.stringify(r.cache!.summary[0]!.cfg_cached_steps)} (1 rank ${JSON.stringify(s1.cached_steps)} / ${JSON.stringify(s1.cfg_cached_steps)})`);
    // 0.2 caches some steps but not all (1 rank: cond [2,3,4,6,7,8], uncond [2,3,4,6,7,9])
    expect(s1.cached_steps.length).toBeGreaterThan(0);
    expect(s1.cached_steps.length).toBeLessThan(8);
    expect(r.cache!.summary[0]!.cached_steps).toEqual(s1.cached_steps);
    expect(r.cache!.summary[0]!.cfg_cached_steps).toEqual(s1.cfg_cached_steps);
    expect(r.ranks.map((x) => x.cachedSteps)).toEqual([s1.cached_steps, s1.cached_steps]);
    expect(relL2(r.latents, one.latents)).toBeLessThan(1e-5);
  });
});
