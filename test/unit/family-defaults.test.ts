// Cache-DiT's per-family defaults as the model files declare them (cache-dit.md §6 and its block adapters):
// the block lists and their forward patterns, separate CFG, and `inspect --json`'s parameter counts.
import { describe, expect, it } from 'vitest';
import { inspectModelJson, listModels } from '../../compiler/index.ts';
import { getModel } from '../../compiler/registry.ts';

const cacheOf = (m: string) => getModel(m).cache!;

describe('Cache-DiT defaults per family, from the model files', () => {
  it('block lists, patterns and separate CFG', () => {
    // FLUX.1: both block lists as one cached list, Pattern_1, CFG not separate (FluxPipeline batches none: guidance is embedded)
    for (const m of ['flux1-dev', 'tiny-flux']) {
      expect(cacheOf(m).lists).toEqual([{ name: 'transformer_blocks', blocks: ['transformer_blocks', 'single_transformer_blocks'], pattern: 1 }]);
      expect(cacheOf(m).has_separate_cfg).toBe(false);
    }
    for (const m of ['qwen-image', 'qwen-image-2512']) expect(cacheOf(m)).toMatchObject({ lists: [{ name: 'transformer_blocks', pattern: 1 }], has_separate_cfg: true });
    for (const m of ['wan2.1-t2v-1.3b', 'wan2.1-t2v-14b', 'wan2.2-t2v-a14b']) expect(cacheOf(m)).toMatchObject({ lists: [{ name: 'blocks', pattern: 2 }], has_separate_cfg: true });
    expect(cacheOf('z-image-turbo').lists).toEqual([{ name: 'layers', blocks: ['layers'], pattern: 3 }]);
    // FLUX.2 (dev, Klein): two lists [Pattern_1, Pattern_3], each its own context, CFG not separate (Cache-DiT's Flux adapter)
    for (const m of ['flux2-dev', 'flux2-klein-4b', 'flux2-klein-9b']) {
      expect(cacheOf(m)).toMatchObject({ lists: [{ name: 'transformer_blocks', pattern: 1 }, { name: 'single_transformer_blocks', pattern: 3 }], has_separate_cfg: false });
    }
    // Ovis-Image, LongCat-Image: two Pattern_1 lists, separate CFG (their adapters say has_separate_cfg)
    for (const m of ['ovis-image', 'longcat-image', 'longcat-image-edit']) {
      expect(cacheOf(m)).toMatchObject({ lists: [{ name: 'transformer_blocks', pattern: 1 }, { name: 'single_transformer_blocks', pattern: 1 }], has_separate_cfg: true });
    }
  });

  it('inspect --json: params per component for every registered model', () => {
    for (const m of listModels()) {
      const j = inspectModelJson(m) as { params: Record<string, number> };
      for (const [c, n] of Object.entries(j.params)) expect(n, `${m} ${c}`).toBeGreaterThan(0);
    }
    // sum(p.numel() for p in <diffusers class>(**config).parameters()) for each released config
    const tf = (m: string) => (inspectModelJson(m) as { params: Record<string, number> }).params.transformer;
    expect(tf('z-image-turbo')).toBe(6154908736);
    expect(tf('flux1-dev')).toBe(11901408320);
    // FLUX.1-schnell: no guidance embedding (2 linears: 256 -> 3072 -> 3072)
    expect(tf('flux1-schnell')).toBe(11891178560);
    // FLUX.1-Fill: x_embedder takes 384 channels (320 more inputs x 3072)
    expect(tf('flux1-fill')).toBe(11901408320 + 320 * 3072);
    // AutoencoderKL of FLUX.1: decoder + encoder = diffusers' 83,819,683
    const vae = (inspectModelJson('flux1-dev') as { params: Record<string, number> }).params;
    expect(vae.vae! + vae.vae_encoder!).toBe(83819683);
    // AutoencoderKLFlux2 (FLUX.2's, 32 latent channels, both quant convs): diffusers' 84,046,115 (its BatchNorm
    // statistics are buffers, not parameters)
    const vae2 = (inspectModelJson('flux2-klein-4b') as { params: Record<string, number> }).params;
    expect([vae2.vae, vae2.vae_encoder]).toEqual([49620259, 34425856]);
    expect(vae2.vae! + vae2.vae_encoder!).toBe(84046115);
  });
});
