// Image-to-image vs diffusers' FluxImg2ImgPipeline (the FLUX.1 fixture) and ZImageImg2ImgPipeline (the Z-Image
// fixture; the size is the image's, rounded down to a multiple of 16), references made by
// test/parity/make-img2img-references.py: the preprocessed image exactly (PIL's Lanczos resize reproduced), the
// schedule from the first kept step exactly, the noised initial latents (the VAE encoder's posterior sample and
// the noise from one generator) within 1e-5 relative L2 (float32 convolutions summed in another order), the final
// latents within 1e-3 and the image within 2/255, as the text-to-image parity.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { vaeImageInput } from '../../runtime/image-input.ts';
import { readPng } from '../../runtime/image.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadFluxPipeline, loadZImagePipeline, type FluxPipeline } from '../../runtime/pipeline.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures');
type Run = { file: string; image: string; seed: number; steps_run: number; call: { prompt: string; height?: number; width?: number; num_inference_steps: number; strength: number; guidance_scale: number; max_sequence_length: number } };
const runsOf = (ref: string) => (JSON.parse(fs.readFileSync(path.join(ref, 'index.json'), 'utf8')) as { runs: Run[] }).runs;
const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);

const CASES = [
  { name: 'FLUX.1 vs FluxImg2ImgPipeline', dir: 'flux1-random', ref: 'flux1-random-img2img', load: loadFluxPipeline },
  { name: 'Z-Image vs ZImageImg2ImgPipeline', dir: 'z-image-random', ref: 'z-image-random-img2img', load: loadZImagePipeline },
] as const;

const log = (k: string, v: number) => console.log(`[img2img parity] ${k} = ${v.toExponential(3)}`);

for (const cs of CASES) {
  describe(`image-to-image: ${cs.name}`, () => {
    const REF = path.join(FIX, cs.ref);
    let pipe: any;
    beforeAll(async () => {
      pipe = await cs.load(path.join(FIX, cs.dir), { threads: 2, planProvider });
    });
    for (const run of runsOf(REF)) {
      const c = run.call;
      it(`${run.file}: from ${run.image}, strength ${c.strength}, ${c.num_inference_steps} steps`, async () => {
        const ref = openSafetensorsSync(path.join(REF, run.file));
        const want = ref.tensor('image_input');
        const [H, W] = [want.shape[2]!, want.shape[3]!];
        expect(Array.from(vaeImageInput(readPng(path.join(REF, run.image)), H, W))).toEqual(Array.from(want.data));
        const opts = {
          prompt: c.prompt,
          image: path.join(REF, run.image),
          strength: c.strength,
          ...(c.height !== undefined ? { height: c.height, width: c.width } : {}),
          steps: c.num_inference_steps,
          guidanceScale: c.guidance_scale,
          maxSequenceLength: c.max_sequence_length,
          seed: run.seed,
        };
        const q = pipe.spec.resolve(opts);
        expect([q.height, q.width]).toEqual([H, W]);
        const x0 = await pipe.spec.noise(q);
        const steps: number[] = [];
        const r = await pipe.generate({ ...opts, onStep: (s: { step: number }) => steps.push(s.step) });
        expect(r.steps).toBe(run.steps_run);
        expect(steps.length).toBe(run.steps_run);
        const start = c.num_inference_steps - run.steps_run;
        expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data.slice(start)));
        const e0 = relL2(x0, ref.tensor('initial_latents').data);
        const el = relL2(r.latents, ref.tensor('final_latents').data);
        const im = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
        log(`${cs.dir} ${run.file} initial latents relL2`, e0);
        log(`${cs.dir} ${run.file} final latents relL2`, el);
        log(`${cs.dir} ${run.file} image max abs (levels)`, im);
        expect(e0).toBeLessThan(1e-5);
        expect(el).toBeLessThan(1e-3);
        expect(im).toBeLessThanOrEqual(2);
      });
    }
  });
}

describe('image-to-image: bad inputs', () => {
  const REF = path.join(FIX, 'flux1-random-img2img');
  const index = { runs: runsOf(REF) };
  let pipe: FluxPipeline;
  beforeAll(async () => {
    pipe = await loadFluxPipeline(path.join(FIX, 'flux1-random'), { threads: 2, planProvider });
  });
  it('bad inputs name the flag: strength out of range, no steps left, a missing file, strength without an image', async () => {
    const base = { prompt: 'x', height: 128, width: 128, steps: 4, image: path.join(REF, index.runs[0]!.image) };
    await expect(pipe.generate({ ...base, strength: 1.5 })).rejects.toThrow(/--strength must be a number in \[0, 1\], got 1.5/);
    await expect(pipe.generate({ ...base, strength: 0 })).rejects.toThrow(/--strength 0 with 4 steps leaves 0 denoising steps/);
    await expect(pipe.generate({ ...base, image: '/nonexistent/x.png' })).rejects.toThrow(/--image: no such file: \/nonexistent\/x.png/);
    await expect(pipe.generate({ prompt: 'x', height: 128, width: 128, steps: 4, strength: 0.5 })).rejects.toThrow(/--strength is for image-to-image/);
  });
});
