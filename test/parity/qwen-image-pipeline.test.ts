// Parity of a Qwen-Image diffusers directory (test/fixtures/qwen-image-random: random weights at scaled-down
// sizes, laid out like Qwen/Qwen-Image, sharded transformer and Qwen2.5-VL) with diffusers' QwenImagePipeline:
// tokens identical, prompt embeddings (template prefix dropped) and the step-0 transformer output within 1e-4
// relative L2, sigmas bit-exact (dynamic shift stretched to shift_terminal), final latents within 1e-3 with
// true CFG and its norm rescale, the image within 2/255 per channel (reference/README.md there).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadQwenImagePipeline, type QwenImagePipeline } from '../../runtime/pipeline.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/qwen-image-random');
const GENERATED = path.resolve(import.meta.dirname, '../../generated');
const PROMPT = 'a large red circle at the center on a black background';

let pipe: QwenImagePipeline;
beforeAll(async () => {
  pipe = await loadQwenImagePipeline(DIR, { threads: 2, generatedDir: GENERATED, planProvider: (c, _d, req) => compileRequest(c, req) });
});

const log = (k: string, v: number) => console.log(`[qwen-image parity] ${k} = ${v.toExponential(3)}`);

describe('Qwen-Image directory vs diffusers QwenImagePipeline', () => {
  for (const steps of [4, 8]) {
    const ref = openSafetensorsSync(path.join(DIR, 'reference', `golden_0_s${steps}.safetensors`));
    it(`${steps} steps, true CFG 4 with negative prompt " ": tokens, embeddings, sigmas, final latents, image`, async () => {
      const pos = await pipe.spec.encodePrompt([PROMPT]);
      const neg = await pipe.spec.encodePrompt([' ']);
      expect(pos.inputIds[0]).toEqual(ref.ints('input_ids'));
      expect(neg.inputIds[0]).toEqual(ref.ints('negative_input_ids'));
      const pe = relL2(pos.embeds, ref.tensor('prompt_embeds').data);
      const ne = relL2(neg.embeds, ref.tensor('negative_prompt_embeds').data);
      log(`s${steps} prompt_embeds relL2`, pe);
      log(`s${steps} negative_prompt_embeds relL2`, ne);
      expect(pe).toBeLessThan(1e-4);
      expect(ne).toBeLessThan(1e-4);
      const r = await pipe.generate({ prompt: PROMPT, negativePrompt: ' ', height: 128, width: 128, steps, latents: ref.tensor('initial_latents').data });
      expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
      expect(Array.from(r.schedule.timesteps)).toEqual(Array.from(ref.tensor('timesteps').data));
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const img = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`s${steps} final latents relL2`, el);
      log(`s${steps} image max abs (levels)`, img);
      expect(el).toBeLessThan(1e-3);
      expect(img).toBeLessThanOrEqual(2);
    });
  }
});
