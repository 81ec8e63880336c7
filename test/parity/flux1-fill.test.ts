// A FLUX.1-Fill directory (test/fixtures/flux1-fill-random, made by test/parity/make-flux1-fill-fixture.py:
// in_channels 384, the other components flux1-random's) vs diffusers' FluxFillPipeline: the binarized mask
// (PIL's grey conversion and Lanczos resize reproduced) and its 8x8 unshuffle exactly, the initial latents within
// 1e-5 relative L2, the masked image's latents within 1e-5 (float32 convolutions summed in another order), the
// final latents within 1e-3 and the image within 2/255, as the text-to-image parity; 2 ranks == 1 rank.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadFluxPipeline, type FluxPipeline } from '../../runtime/pipeline.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/flux1-fill-random');
const REF = path.join(DIR, 'reference');
const index = JSON.parse(fs.readFileSync(path.join(REF, 'index.json'), 'utf8')) as {
  runs: { file: string; image: string; mask: string; seed: number; steps_run: number; call: { prompt: string; height: number; width: number; num_inference_steps: number; strength?: number; guidance_scale: number; max_sequence_length: number } }[];
};
const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);
const parallelPlanProvider: ParallelPlanProvider = (c, _d, parallel, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel });

let pipe: FluxPipeline;
beforeAll(async () => {
  pipe = await loadFluxPipeline(DIR, { threads: 2, planProvider });
});

const log = (k: string, v: number) => console.log(`[flux1-fill parity] ${k} = ${v.toExponential(3)}`);
const optsOf = (run: (typeof index.runs)[number]) => {
  const c = run.call;
  return {
    prompt: c.prompt,
    image: path.join(REF, run.image),
    mask: path.join(REF, run.mask),
    height: c.height,
    width: c.width,
    steps: c.num_inference_steps,
    guidanceScale: c.guidance_scale,
    maxSequenceLength: c.max_sequence_length,
    seed: run.seed,
    ...(c.strength !== undefined ? { strength: c.strength } : {}),
  };
};

describe('FLUX.1-Fill directory vs diffusers FluxFillPipeline', () => {
  for (const run of index.runs) {
    it(`${run.file}: ${run.call.height}x${run.call.width}, strength ${run.call.strength ?? 1}, ${run.call.num_inference_steps} steps`, async () => {
      const ref = openSafetensorsSync(path.join(REF, run.file));
      const opts = optsOf(run);
      const q = pipe.spec.resolve(opts);
      expect(Array.from(q.fill!.mask)).toEqual(Array.from(ref.tensor('mask_input').data));
      const x0 = await pipe.spec.noise(q);
      await pipe.spec.prepareInputs(q);
      // cond per token: the masked image's latents (64), then the packed mask (256)
      const cond = q.fill!.cond!;
      const ml = ref.tensor('masked_image_latents_packed').data;
      const T = ml.length / 64;
      const lat = new Float32Array(T * 64);
      const mask = new Float32Array(T * 256);
      for (let t = 0; t < T; t++) {
        lat.set(cond.subarray(t * 320, t * 320 + 64), t * 64);
        mask.set(cond.subarray(t * 320 + 64, (t + 1) * 320), t * 256);
      }
      expect(Array.from(mask)).toEqual(Array.from(ref.tensor('mask_packed').data));
      const e0 = relL2(x0, ref.tensor('initial_latents').data);
      const em = relL2(lat, ml);
      const r = await pipe.generate(opts);
      expect(r.steps).toBe(run.steps_run);
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const im = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`${run.file} initial latents relL2`, e0);
      log(`${run.file} masked image latents relL2`, em);
      log(`${run.file} final latents relL2`, el);
      log(`${run.file} image max abs (levels)`, im);
      expect(e0).toBeLessThan(1e-5);
      expect(em).toBeLessThan(1e-5);
      expect(el).toBeLessThan(1e-3);
      expect(im).toBeLessThanOrEqual(2);
    });
  }

  it('2 ranks (Ulysses) == 1 rank', async () => {
    const opts = optsOf(index.runs[0]!);
    const one = await pipe.generate(opts);
    const two = await generateParallel('test/fixtures/flux1-fill-random', { ...opts, world: 2, threads: 1, planProvider, parallelPlanProvider });
    const e = relL2(two.latents, one.latents);
    log('2 ranks vs 1 rank latents relL2', e);
    expect(e).toBeLessThan(1e-5);
  });

  it('needs an image and a mask; a mask elsewhere is refused', async () => {
    const { image: _i, mask: _m, ...bare } = optsOf(index.runs[0]!);
    await expect(pipe.generate({ ...bare, image: optsOf(index.runs[0]!).image })).rejects.toThrow(/FluxFillPipeline inpaints: give --image and --mask/);
    const flux = await loadFluxPipeline(path.resolve(import.meta.dirname, '../fixtures/flux1-random'), { threads: 1, planProvider });
    await expect(flux.generate({ ...bare, image: optsOf(index.runs[0]!).image, mask: optsOf(index.runs[0]!).mask })).rejects.toThrow(/--mask: FluxPipeline does not inpaint/);
  });
});
