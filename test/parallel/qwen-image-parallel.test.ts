// A Qwen-Image diffusers directory (test/fixtures/qwen-image-random) on 2 ranks == 1 rank: Ulysses (image
// and text tokens split at entry, the joint mask split per stream) and TP (heads and the MLP hidden), with
// true CFG (the prompt and the negative prompt encode to different lengths: a per-rank plan for each).
// Every rank is the one Pipeline with its transformer plans on rank executors.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { loadQwenImagePipeline, PACKAGE_ROOT, type PlanProvider } from '../../runtime/pipeline.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import type { QwenImageGenerateOptions, QwenImageResult } from '../../runtime/pipelines/qwen-image.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/qwen-image-random');
const generatedDir = path.join(PACKAGE_ROOT, 'generated');
const planProvider: PlanProvider = (c, _d, req) => compileRequest(c, req);
const parallelPlanProvider: ParallelPlanProvider = (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel });
const BASE: QwenImageGenerateOptions = { prompt: 'a large red circle at the center on a black background', negativePrompt: ' ', height: 128, width: 128, steps: 4, seed: 2 };

describe.skipIf(!nativeAvailable())('Qwen-Image directory on 2 ranks == 1 rank', () => {
  for (const parallel of ['ulysses', 'tp'] as const) {
    it(`${parallel}, true CFG: latents within 1e-5 relative L2, image within 1/255`, async () => {
      const one = await (await loadQwenImagePipeline(DIR, { threads: 1, generatedDir, planProvider })).generate(BASE);
      const r = await generateParallel<QwenImageResult>(DIR, { ...BASE, world: 2, parallel, comm: 'shm', threads: 1, generatedDir, planProvider, parallelPlanProvider });
      const e = relL2(r.latents, one.latents);
      console.log(`qwen-image ${parallel} world 2: latents relL2 ${e.toExponential(2)}`);
      expect(r.parallel.kind).toBe(parallel);
      expect(e).toBeLessThan(1e-5);
      expect(maxAbsDiff(r.image, one.image)).toBeLessThanOrEqual(1);
    });
  }
  it('TE-P (--parallel-text): Qwen2.5-VL tensor-parallel on 2 ranks (GQA: 2 heads, 1 kv head each) beside TP; latents within 1e-5', async () => {
    const one = await (await loadQwenImagePipeline(DIR, { threads: 1, generatedDir, planProvider })).generate(BASE);
    const r = await generateParallel<QwenImageResult>(DIR, { ...BASE, world: 2, parallel: 'tp', parallelText: true, comm: 'shm', threads: 1, generatedDir, planProvider, parallelPlanProvider });
    const e = relL2(r.latents, one.latents);
    console.log(`qwen-image tp + TE-P world 2: latents relL2 ${e.toExponential(2)}`);
    expect(e).toBeLessThan(1e-5);
    expect(maxAbsDiff(r.image, one.image)).toBeLessThanOrEqual(1);
  });
});
