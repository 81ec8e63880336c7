// A Wan 2.2 two-expert directory (test/fixtures/wan2.2-random) on 2 ranks == 1 rank: both experts' per-rank
// plans (Ulysses; TP with the fixture's 3 heads split 2 + 1), and DBCache with one context per expert caching
// the 1-rank steps on every rank.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { loadWanPipeline, type PlanProvider } from '../../runtime/pipeline.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import type { VideoGenerateOptions, VideoGenerateResult } from '../../runtime/pipelines/wan.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/wan2.2-random');
const planProvider: PlanProvider = (c, _d, req) => compileRequest(c, req);
const parallelPlanProvider: ParallelPlanProvider = (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel });
const BASE: VideoGenerateOptions = { prompt: 'a large red circle at the center on a black background', height: 48, width: 80, numFrames: 9, steps: 6, seed: 1, guidanceScale: 4, guidanceScale2: 3, maxSequenceLength: 24 };
const oneRank = async (o: VideoGenerateOptions) => (await loadWanPipeline(DIR, { threads: 1, planProvider })).generate(o);

describe.skipIf(!nativeAvailable())('Wan 2.2 (two experts) directory on 2 ranks == 1 rank', () => {
  for (const parallel of ['ulysses', 'tp'] as const) {
    it(`${parallel}: latents within 1e-5 relative L2, frames within 1/255`, async () => {
      const one = await oneRank(BASE);
      // 3 x 3 x 5 = 45 video tokens: Ulysses takes UAA's uneven split
      const r = await generateParallel<VideoGenerateResult>(DIR, { ...BASE, world: 2, parallel, ...(parallel === 'ulysses' ? { ulyssesAnything: true } : {}), comm: 'shm', threads: 1, planProvider, parallelPlanProvider });
      const e = relL2(r.latents, one.latents);
      console.log(`wan2.2 ${parallel} world 2: latents relL2 ${e.toExponential(2)}`);
      expect(e).toBeLessThan(1e-5);
      expect(maxAbsDiff(r.videos[0]!, one.videos[0]!)).toBeLessThanOrEqual(1);
    });
  }
  it('DBCache F1B0, one context per expert: the 1-rank cached steps of each expert on 2 ranks', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.06, max_warmup_steps: 1 }) };
    const opts = { ...BASE, steps: 12, cache };
    const one = await oneRank(opts);
    const r = await generateParallel<VideoGenerateResult>(DIR, { ...opts, world: 2, threads: 1, planProvider, parallelPlanProvider });
    const steps = (s: { cached_steps: number[] }[]) => s.map((x) => x.cached_steps);
    console.log(`wan2.2 cached world 2: ${JSON.stringify(steps(r.cache!.summary))} (1 rank ${JSON.stringify(steps(one.cache!.summary))})`);
    expect(one.cache!.summary).toHaveLength(2);
    expect(steps(one.cache!.summary).flat().length).toBeGreaterThan(0);
    expect(steps(r.cache!.summary)).toEqual(steps(one.cache!.summary));
    expect(relL2(r.latents, one.latents)).toBeLessThan(1e-5);
  });
});
