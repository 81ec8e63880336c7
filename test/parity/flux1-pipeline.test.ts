// Parity of a FLUX.1 diffusers directory (test/fixtures/flux1-random: random weights at scaled-down sizes,
// laid out like black-forest-labs/FLUX.1-dev, sharded bf16 transformer) with diffusers' FluxPipeline:
// tokens identical, text encoders and the step-0 transformer output within 1e-4 relative L2, final latents
// within 1e-3, the decoded image within 2/255 per channel (the references: reference/README.md there).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadFluxPipeline, type FluxPipeline } from '../../runtime/pipeline.ts';
import { transformerTimestep } from '../../runtime/scheduler.ts';

export const FLUX1_DIR = path.resolve(import.meta.dirname, '../fixtures/flux1-random');
const PROMPT = 'a large red circle at the center on a black background';

let pipe: FluxPipeline;
beforeAll(async () => {
  pipe = await loadFluxPipeline(FLUX1_DIR, { threads: 2, planProvider: (c, _d, req) => compileRequest(c, req) });
});

const log = (k: string, v: number) => console.log(`[flux1 parity] ${k} = ${v.toExponential(3)}`);

describe('FLUX.1 directory vs diffusers FluxPipeline', () => {
  for (const steps of [4, 8]) {
    const ref = openSafetensorsSync(path.join(FLUX1_DIR, 'reference', `golden_0_s${steps}.safetensors`));
    it(`${steps} steps: tokens, text encoders, step-0 transformer, final latents, image`, async () => {
      const text = await pipe.spec.encodePrompt([PROMPT], 128, 128, 32);
      expect(text.clipInputIds![0]).toEqual(ref.ints('clip_input_ids'));
      expect(text.inputIds[0]).toEqual(ref.ints('t5_input_ids'));
      const pe = relL2(text.encoderHiddenStates, ref.tensor('prompt_embeds').data);
      const pp = relL2(text.pooledProjections, ref.tensor('pooled_prompt_embeds').data);
      log(`s${steps} prompt_embeds relL2`, pe);
      log(`s${steps} pooled_prompt_embeds relL2`, pp);
      expect(pe).toBeLessThan(1e-4);
      expect(pp).toBeLessThan(1e-4);

      const r = await pipe.generate({ prompt: PROMPT, height: 128, width: 128, steps, guidanceScale: 3.5, maxSequenceLength: 32, latents: ref.tensor('initial_latents').data });
      expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
      expect(transformerTimestep(r.schedule, 0)).toBe(ref.tensor('transformer_timestep_step0').data[0]);
      const v0 = await pipe.spec.transformer({
        hiddenStates: ref.tensor('initial_latents').data,
        encoderHiddenStates: ref.tensor('prompt_embeds').data,
        pooledProjections: ref.tensor('pooled_prompt_embeds').data,
        timestep: ref.tensor('transformer_timestep_step0').data,
        guidance: ref.tensor('guidance').data,
        batch: 1,
        height: 128,
        width: 128,
        textTokens: 32,
      });
      const e0 = relL2(v0, ref.tensor('transformer_out_step0').data);
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const img = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`s${steps} transformer step 0 relL2`, e0);
      log(`s${steps} final latents relL2`, el);
      log(`s${steps} image max abs (levels)`, img);
      expect(e0).toBeLessThan(1e-4);
      expect(el).toBeLessThan(1e-3);
      expect(img).toBeLessThanOrEqual(2);
    });
  }
});

// more diffusers references made by test/parity/make-flux1-references.py (test/fixtures/flux1-random-extra)
const EXTRA = path.resolve(import.meta.dirname, '../fixtures/flux1-random-extra');
describe('FLUX.1 directory vs diffusers FluxPipeline: true CFG, non-square', () => {
  for (const [file, opts] of [
    ['cfg_s4', { height: 128, width: 128, negativePrompt: 'blue', trueCfgScale: 4 }],
    ['nonsquare_s4', { height: 96, width: 160 }],
  ] as const) {
    it(`${file}: text embeddings, final latents within 1e-3, image within 2/255`, async () => {
      const ref = openSafetensorsSync(path.join(EXTRA, `${file}.safetensors`));
      const r = await pipe.generate({ prompt: PROMPT, steps: 4, guidanceScale: 3.5, maxSequenceLength: 32, latents: ref.tensor('initial_latents').data, ...opts });
      expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const img = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`${file} final latents relL2`, el);
      log(`${file} image max abs (levels)`, img);
      expect(el).toBeLessThan(1e-3);
      expect(img).toBeLessThanOrEqual(2);
    });
  }
});
