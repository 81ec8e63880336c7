import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { packLatents, unpackLatents, imageIds, textIds, latentGeometry, latentsToVaeSpace } from '../../runtime/latents.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference');
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('latent packing and ids', () => {
  it('pack follows torch view(B,C,H/2,2,W/2,2).permute(0,2,4,1,3,5)', () => {
    const B = 2, C = 3, H = 4, W = 6;
    const lat = Float32Array.from({ length: B * C * H * W }, (_, i) => i);
    const p = packLatents(lat, B, C, H, W);
    const h2 = H / 2, w2 = W / 2;
    for (let b = 0; b < B; b++)
      for (let y = 0; y < h2; y++)
        for (let x = 0; x < w2; x++)
          for (let c = 0; c < C; c++)
            for (let dy = 0; dy < 2; dy++)
              for (let dx = 0; dx < 2; dx++)
                expect(p[(b * h2 * w2 + y * w2 + x) * C * 4 + c * 4 + dy * 2 + dx]).toBe(lat[((b * C + c) * H + 2 * y + dy) * W + 2 * x + dx]);
  });

  it('unpack is the exact inverse of pack (and vice versa)', () => {
    const B = 2, C = 4, H = 8, W = 10;
    const lat = Float32Array.from({ length: B * C * H * W }, () => Math.random());
    expect(bits(unpackLatents(packLatents(lat, B, C, H, W), B, C, H, W))).toEqual(bits(lat));
    expect(bits(packLatents(unpackLatents(lat, B, C, H, W), B, C, H, W))).toEqual(bits(lat));
  });

  it('rejects odd sizes and wrong lengths', () => {
    expect(() => packLatents(new Float32Array(12), 1, 1, 3, 4)).toThrow(/even/);
    expect(() => packLatents(new Float32Array(10), 1, 1, 2, 4)).toThrow(/expected 8/);
  });

  it('img_ids / txt_ids match the references', () => {
    const f = openSafetensorsSync(path.join(FIX, 'prompt0.safetensors'));
    expect(Array.from(imageIds(4, 4))).toEqual(Array.from(f.tensor('img_ids').data));
    expect(Array.from(textIds(12))).toEqual(Array.from(f.tensor('txt_ids').data));
    const ids = imageIds(2, 3);
    expect(Array.from(ids)).toEqual([0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 1, 0, 0, 1, 1, 0, 1, 2]);
  });

  it('geometry: 32x32 -> 8x8 latents -> 16 tokens of 16 channels; 64x48 -> 192 tokens', () => {
    expect(latentGeometry(32, 32, 4, 4)).toMatchObject({ latentHeight: 8, latentWidth: 8, tokens: 16, packedChannels: 16 });
    expect(latentGeometry(64, 48, 4, 4)).toMatchObject({ latentHeight: 16, latentWidth: 12, tokens: 48 });
  });

  it('final_latents -> VAE space is bit-exact vs final_latents_unpacked_vae_space', () => {
    for (const k of [0, 1, 2]) {
      const f = openSafetensorsSync(path.join(FIX, `prompt${k}.safetensors`));
      const z = latentsToVaeSpace(f.tensor('final_latents').data, 1, 4, 8, 8, 0.8753, -0.0509);
      expect(bits(z)).toEqual(bits(f.tensor('final_latents_unpacked_vae_space').data));
    }
  });
});
