// A FLUX.1 diffusers directory (test/fixtures/flux1-random) on 2 ranks == 1 rank: Ulysses and TP, true
// CFG, TE-P (CLIP and T5 tensor-parallel), and DBCache caching the 1-rank steps. Same multi-rank path as tiny-flux (runtime/pipeline-parallel.ts),
// with the directory's configs in the per-rank compile requests and the guidance embedding on every rank.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import { loadFluxPipeline, type GenerateOptions, type PlanProvider } from '../../runtime/pipeline.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/flux1-random');
const planProvider: PlanProvider = (c, _d, req) => compileRequest(c, req);
const parallelPlanProvider: ParallelPlanProvider = (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel });
const BASE: GenerateOptions = { prompt: 'a large red circle at the center on a black background', height: 128, width: 96, steps: 6, seed: 5, maxSequenceLength: 32 };

describe.skipIf(!nativeAvailable())('FLUX.1 directory on 2 ranks == 1 rank', () => {
  for (const [label, extra, opts] of [
    ['ulysses', { parallel: 'ulysses' }, {}],
    ['tp', { parallel: 'tp' }, {}],
    ['ulysses + true CFG', { parallel: 'ulysses' }, { negativePrompt: 'blue', trueCfgScale: 4 }],
    ['tp + TE-P (CLIP and T5 tensor-parallel)', { parallel: 'tp', parallelText: true }, {}],
  ] as const) {
    it(`${label}: latents within 1e-5 relative L2`, async () => {
      const one = await (await loadFluxPipeline(DIR, { threads: 1, planProvider })).generate({ ...BASE, ...opts });
      const r = await generateParallel(DIR, { ...BASE, ...opts, world: 2, comm: 'shm', threads: 1, planProvider, parallelPlanProvider, ...extra });
      const e = relL2(r.latents, one.latents);
      console.log(`flux1 ${label} world 2: latents relL2 ${e.toExponential(2)}`);
      expect(r.parallel.kind).toBe(extra.parallel);
      expect(e).toBeLessThan(1e-5);
    });
  }
  it('DBCache F1B0 on 2 ranks caches the 1-rank steps', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.3, max_warmup_steps: 2 }) };
    const opts = { ...BASE, steps: 10, cache };
    const one = await (await loadFluxPipeline(DIR, { threads: 1, planProvider })).generate(opts);
    const r = await generateParallel(DIR, { ...opts, world: 2, threads: 1, planProvider, parallelPlanProvider });
    console.log(`flux1 cached world 2: ${JSON.stringify(r.cache!.summary[0]!.cached_steps)} (1 rank ${JSON.stringify(one.cache!.summary[0]!.cached_steps)})`);
    expect(one.cache!.summary[0]!.cached_steps.length).toBeGreaterThan(0);
    expect(r.cache!.summary[0]!.cached_steps).toEqual(one.cache!.summary[0]!.cached_steps);
    expect(relL2(r.latents, one.latents)).toBeLessThan(1e-5);
  });
});
