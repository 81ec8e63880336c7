// Image-to-image on the FLUX.1 fixture vs diffusers' FluxImg2ImgPipeline (references made by
// test/parity/make-flux1-img2img-references.py): the preprocessed image exactly (PIL's Lanczos resize
// reproduced), the schedule from the first kept step exactly, the VAE encoder's scaled latents within 1e-5
// relative L2 (float32 convolutions summed in another order), the noised initial latents within 1e-5, the final
// latents within 1e-3 and the image within 2/255, as the text-to-image parity.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { vaeImageInput } from '../../runtime/image-input.ts';
import { readPng } from '../../runtime/image.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadFluxPipeline, type FluxPipeline } from '../../runtime/pipeline.ts';

const FLUX1_DIR = path.resolve(import.meta.dirname, '../fixtures/flux1-random');
const REF = path.resolve(import.meta.dirname, '../fixtures/flux1-random-img2img');
const index = JSON.parse(fs.readFileSync(path.join(REF, 'index.json'), 'utf8')) as {
  runs: { file: string; image: string; seed: number; steps_run: number; call: { prompt: string; height: number; width: number; num_inference_steps: number; strength: number; guidance_scale: number; max_sequence_length: number } }[];
};

let pipe: FluxPipeline;
beforeAll(async () => {
  pipe = await loadFluxPipeline(FLUX1_DIR, { threads: 2, planProvider: (c, _d, req) => compileRequest(c, req) });
});

const log = (k: string, v: number) => console.log(`[flux1 img2img parity] ${k} = ${v.toExponential(3)}`);

describe('FLUX.1 image-to-image vs diffusers FluxImg2ImgPipeline', () => {
  for (const run of index.runs) {
    const c = run.call;
    it(`${run.file}: ${c.height}x${c.width} from a ${run.image} input, strength ${c.strength}, ${c.num_inference_steps} steps`, async () => {
      const ref = openSafetensorsSync(path.join(REF, run.file));
      const img = readPng(path.join(REF, run.image));
      expect(Array.from(vaeImageInput(img, c.height, c.width))).toEqual(Array.from(ref.tensor('image_input').data));

      const opts = {
        prompt: c.prompt,
        image: path.join(REF, run.image),
        strength: c.strength,
        height: c.height,
        width: c.width,
        steps: c.num_inference_steps,
        guidanceScale: c.guidance_scale,
        maxSequenceLength: c.max_sequence_length,
        seed: run.seed,
      };
      // the noised start: the encoder's posterior sample and the latents' noise from one generator
      const x0 = await pipe.spec.noise(pipe.spec.resolve(opts));
      const steps: number[] = [];
      const r = await pipe.generate({ ...opts, onStep: (s) => steps.push(s.step) });
      expect(r.steps).toBe(run.steps_run);
      expect(steps.length).toBe(run.steps_run);
      const start = c.num_inference_steps - run.steps_run;
      expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data.slice(start)));

      const e0 = relL2(x0, ref.tensor('initial_latents').data);
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const im = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`${run.file} initial latents relL2`, e0);
      log(`${run.file} final latents relL2`, el);
      log(`${run.file} image max abs (levels)`, im);
      expect(e0).toBeLessThan(1e-5);
      expect(el).toBeLessThan(1e-3);
      expect(im).toBeLessThanOrEqual(2);
    });
  }

  it('bad inputs name the flag: strength out of range, no steps left, a missing file, strength without an image', async () => {
    const base = { prompt: 'x', height: 128, width: 128, steps: 4, image: path.join(REF, index.runs[0]!.image) };
    await expect(pipe.generate({ ...base, strength: 1.5 })).rejects.toThrow(/--strength must be a number in \[0, 1\], got 1.5/);
    await expect(pipe.generate({ ...base, strength: 0 })).rejects.toThrow(/--strength 0 with 4 steps leaves 0 denoising steps/);
    await expect(pipe.generate({ ...base, image: '/nonexistent/x.png' })).rejects.toThrow(/--image: no such file: \/nonexistent\/x.png/);
    await expect(pipe.generate({ prompt: 'x', height: 128, width: 128, steps: 4, strength: 0.5 })).rejects.toThrow(/--strength is for image-to-image/);
  });
});
