// Parity of a Wan 2.1 diffusers directory (test/fixtures/wan2.1-random: random weights at scaled-down
// sizes, laid out like Wan-AI/Wan2.1-T2V-1.3B-Diffusers, sharded transformer and UMT5) with diffusers'
// WanPipeline: tokens identical, UMT5 prompt embeddings and the step-0 transformer output within 1e-4
// relative L2, the UniPC sigmas bit-exact, final latents within 1e-3, decoded frames within 2/255 per
// channel (the references: reference/README.md there; CFG 5.0 with the empty negative prompt).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadWanPipeline, type WanPipeline } from '../../runtime/pipeline.ts';
import { promptClean } from '../../runtime/pipelines/wan.ts';

export const WAN21_DIR = path.resolve(import.meta.dirname, '../fixtures/wan2.1-random');
const GENERATED = path.resolve(import.meta.dirname, '../../generated');
const PROMPT = 'a large red circle at the center on a black background';

let pipe: WanPipeline;
beforeAll(async () => {
  pipe = await loadWanPipeline(WAN21_DIR, { threads: 2, generatedDir: GENERATED, planProvider: (c, _d, req) => compileRequest(c, req) });
});

const log = (k: string, v: number) => console.log(`[wan2.1 parity] ${k} = ${v.toExponential(3)}`);

describe('Wan 2.1 directory vs diffusers WanPipeline', () => {
  for (const steps of [4, 8]) {
    const ref = openSafetensorsSync(path.join(WAN21_DIR, 'reference', `golden_0_s${steps}.safetensors`));
    it(`${steps} steps: tokens, UMT5, step-0 transformer, UniPC schedule, final latents, frames`, async () => {
      const pos = await pipe.spec.encodePrompt([PROMPT], 512);
      const neg = await pipe.spec.encodePrompt([''], 512);
      expect(pos.inputIds[0]).toEqual(ref.ints('input_ids'));
      expect(neg.inputIds[0]).toEqual(ref.ints('negative_input_ids'));
      const pe = relL2(pos.embeds, ref.tensor('prompt_embeds').data);
      const ne = relL2(neg.embeds, ref.tensor('negative_prompt_embeds').data);
      log(`s${steps} prompt_embeds relL2`, pe);
      log(`s${steps} negative_prompt_embeds relL2`, ne);
      expect(pe).toBeLessThan(1e-4);
      expect(ne).toBeLessThan(1e-4);

      const r = await pipe.generate({ prompt: PROMPT, height: 64, width: 64, numFrames: 5, steps, latents: ref.tensor('initial_latents').data });
      expect(Array.from(r.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
      expect(Array.from(r.timesteps)).toEqual(ref.ints('timesteps'));
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const vid = maxAbsDiff(r.videos[0]!, ref.tensor('video_uint8').data);
      log(`s${steps} final latents relL2`, el);
      log(`s${steps} frames max abs (levels)`, vid);
      expect(el).toBeLessThan(1e-3);
      expect(vid).toBeLessThanOrEqual(2);
      expect(r.videos[0]!.length).toBe(5 * 64 * 64 * 3);
    });
  }

  it('step-0 transformer output (cond and uncond) within 1e-4', async () => {
    const ref = openSafetensorsSync(path.join(WAN21_DIR, 'reference', 'golden_0_s4.safetensors'));
    for (const [emb, out] of [['prompt_embeds', 'transformer_out_step0'], ['negative_prompt_embeds', 'transformer_out_uncond_step0']] as const) {
      const v = await pipe.spec.transformerOnce({
        hiddenStates: ref.tensor('initial_latents').data,
        encoderHiddenStates: ref.tensor(emb).data,
        timestep: Float32Array.from(ref.ints('transformer_timestep_step0')),
        batch: 1,
        height: 64,
        width: 64,
        numFrames: 5,
        textTokens: 512,
      });
      const e = relL2(v, ref.tensor(out).data);
      log(`${out} relL2`, e);
      expect(e).toBeLessThan(1e-4);
    }
  });

  it('VAE decode of the final latents within 2/255', async () => {
    const ref = openSafetensorsSync(path.join(WAN21_DIR, 'reference', 'golden_0_s8.safetensors'));
    const frames = await pipe.spec.decodeVideo(ref.tensor('final_latents_vae_input').data, 2, 64, 64);
    expect(frames.map((f) => f.length / (3 * 64 * 64))).toEqual([1, 4]);
    const want = ref.tensor('video').data; // [1, F, H, W, 3] in [0, 1]
    let worst = 0;
    frames.flatMap((f) => Array.from({ length: f.length / (3 * 4096) }, (_, t) => f.subarray(t * 3 * 4096, (t + 1) * 3 * 4096))).forEach((fr, t) => {
      for (let c = 0; c < 3; c++) for (let p = 0; p < 4096; p++) worst = Math.max(worst, Math.abs(Math.min(1, Math.max(0, fr[c * 4096 + p]! / 2 + 0.5)) - want[(t * 4096 + p) * 3 + c]!));
    });
    log('vae frames max abs ([0, 1])', worst);
    expect(worst).toBeLessThan(2 / 255);
  });

  it('prompt_clean: html.unescape twice, whitespace collapsed, stripped', () => {
    expect(promptClean('  a &amp;amp; b\n\t c &#x41;&#66;  ')).toBe('a & b c AB');
  });
});
