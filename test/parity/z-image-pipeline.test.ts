// Parity of a Z-Image diffusers directory (test/fixtures/z-image-random: random weights at scaled-down sizes,
// laid out like Tongyi-MAI/Z-Image-Turbo, sharded Qwen3 and transformer) with diffusers' ZImagePipeline:
// chat-template tokens identical (prompt and the empty negative prompt), Qwen3's hidden_states[-2] and the
// step-0 transformer output (cond and uncond, before the pipeline negates it) within 1e-4 relative L2, sigmas
// and timesteps bit-exact, final latents within 1e-3 with CFG 5 (`pos + 5 (pos - neg)`), the image within
// 2/255 per channel (reference/README.md there).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadZImagePipeline, type ZImagePipeline } from '../../runtime/pipeline.ts';
import { brokenCopies, editJson } from '../helpers/broken-dir.ts';

export const Z_IMAGE_DIR = path.resolve(import.meta.dirname, '../fixtures/z-image-random');
const PROMPT = 'a large red circle at the center on a black background';
const LONG =
  'a large red circle at the center on a black background, with a thin blue square in the upper left corner and a small green triangle near the bottom edge, flat colors, no shadows';

let pipe: ZImagePipeline;
beforeAll(async () => {
  pipe = await loadZImagePipeline(Z_IMAGE_DIR, { threads: 2, planProvider: (c, _d, req) => compileRequest(c, req) });
});

const log = (k: string, v: number) => console.log(`[z-image parity] ${k} = ${v.toExponential(3)}`);

describe('Z-Image directory vs diffusers ZImagePipeline', () => {
  for (const steps of [4, 8]) {
    const ref = openSafetensorsSync(path.join(Z_IMAGE_DIR, 'reference', `golden_0_s${steps}.safetensors`));
    it(`${steps} steps, CFG 5 with the empty negative prompt: tokens, embeddings, step-0 transformer, sigmas, final latents, image`, async () => {
      const pos = await pipe.spec.encodePrompt([PROMPT]);
      const neg = await pipe.spec.encodePrompt(['']);
      // the reference ids are padded to 512 with the pad token: ours are the unpadded prefix
      const ids = ref.ints('input_ids');
      const nids = ref.ints('negative_input_ids');
      expect(pos.inputIds[0]).toEqual(ids.slice(0, ref.ints('attention_mask').reduce((a, b) => a + b, 0)));
      expect(neg.inputIds[0]).toEqual(nids.slice(0, ref.ints('negative_attention_mask').reduce((a, b) => a + b, 0)));
      const want = ref.tensor('prompt_embeds').data;
      const nwant = ref.tensor('negative_prompt_embeds').data;
      const pe = relL2(pos.embeds.subarray(0, want.length), want);
      const ne = relL2(neg.embeds.subarray(0, nwant.length), nwant);
      log(`s${steps} prompt_embeds relL2`, pe);
      log(`s${steps} negative_prompt_embeds relL2`, ne);
      expect(pe).toBeLessThan(1e-4);
      expect(ne).toBeLessThan(1e-4);

      const q = pipe.spec.resolve({ prompt: PROMPT, height: 128, width: 128, steps });
      const x0 = ref.tensor('initial_latents').data;
      const t0 = ref.tensor('transformer_timestep_step0').data[0]!;
      const v = await pipe.spec.transformerOnce(q, x0, pos, t0);
      const u = await pipe.spec.transformerOnce(q, x0, neg, t0);
      const ev = relL2(v, ref.tensor('transformer_out_step0').data);
      const eu = relL2(u, ref.tensor('transformer_out_uncond_step0').data);
      log(`s${steps} step-0 transformer cond / uncond relL2`, Math.max(ev, eu));
      expect(ev).toBeLessThan(1e-4);
      expect(eu).toBeLessThan(1e-4);

      const r = await pipe.generate({ prompt: PROMPT, height: 128, width: 128, steps, guidanceScale: 5, latents: x0 });
      expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
      expect(Array.from(r.schedule.timesteps)).toEqual(Array.from(ref.tensor('timesteps').data));
      expect(r.latentsShape).toEqual([1, 16, 16, 16]);
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const img = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`s${steps} final latents relL2`, el);
      log(`s${steps} image max abs (levels)`, img);
      expect(el).toBeLessThan(1e-3);
      expect(img).toBeLessThanOrEqual(2);
    });
  }

  // made here by test/parity/make-z-image-references.py with diffusers' ZImagePipeline
  for (const [file, o] of [
    ['nonsquare_cfg_s4', { prompt: LONG, negativePrompt: 'blurry, noisy', height: 96, width: 160, steps: 4, guidanceScale: 4 }],
    ['turbo_s3', { prompt: PROMPT, height: 128, width: 96, steps: 3, guidanceScale: 0 }],
  ] as const) {
    it(`${file}: ${o.width}x${o.height} (image tokens padded to 64${file.startsWith('nonsquare') ? ', a 64-row caption, CFG 4 with a negative prompt' : ', guidance 0'}): sigmas, final latents, image`, async () => {
      const ref = openSafetensorsSync(path.join(import.meta.dirname, '../fixtures/z-image-random-extra', `${file}.safetensors`));
      const r = await pipe.generate({ ...o, latents: ref.tensor('initial_latents').data });
      expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const img = maxAbsDiff(r.image, ref.tensor('image_uint8').data);
      log(`${file} final latents relL2`, el);
      log(`${file} image max abs (levels)`, img);
      expect(el).toBeLessThan(1e-3);
      expect(img).toBeLessThanOrEqual(2);
    });
  }

  it('guidance_scale 0 (Z-Image-Turbo) runs one forward per step; a size off the 16 grid and latents of the wrong shape are clear errors', async () => {
    let forwards = 0;
    const r = await pipe.generate({ prompt: PROMPT, height: 64, width: 96, steps: 2, guidanceScale: 0, seed: 1, onStep: () => forwards++ });
    expect(forwards).toBe(2);
    expect(r.latentsShape).toEqual([1, 16, 8, 12]);
    // 4 x 6 = 24 image tokens: padded to 32 (x_pad_token rows, dropped from the output)
    expect(r.image.length).toBe(64 * 96 * 3);
    await expect(pipe.generate({ prompt: PROMPT, height: 72, width: 64 })).rejects.toThrow(/--height must be a positive multiple of 16/);
    await expect(pipe.generate({ prompt: PROMPT, height: 64, width: 64, latents: new Float32Array(5) })).rejects.toThrow(/latents must have shape \[1, 16, 8, 8\]/);
  });

  it('a broken directory names the file and the field', async () => {
    const broken = brokenCopies(Z_IMAGE_DIR, 'ditforge-zdir-');
    const load = (dir: string) => loadZImagePipeline(dir, { threads: 1, planProvider: (c, _d, req) => compileRequest(c, req) });
    await expect(load(broken((d) => editJson(path.join(d, 'transformer/config.json'), (c) => void (c.cap_feat_dim = 96))))).rejects.toThrow(/transformer\/config\.json: cap_feat_dim 96 differs from the text encoder's hidden_size 80/);
    await expect(load(broken((d) => editJson(path.join(d, 'vae/config.json'), (c) => void (c.scaling_factor = 'big'))))).rejects.toThrow(/vae\/config\.json: field "scaling_factor" must be a number/);
    const siglip = broken((d) => editJson(path.join(d, 'transformer/config.json'), (c) => void (c.siglip_feat_dim = 32)));
    await expect((await load(siglip)).generate({ prompt: PROMPT, height: 64, width: 64, steps: 1 })).rejects.toThrow(/siglip_feat_dim is set \(Z-Image Omni\)/);
  });
});
