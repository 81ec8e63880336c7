// Parity of a Wan 2.2 A14B-style directory (test/fixtures/wan2.2-random: the Wan 2.1 fixture's tokenizer,
// UMT5, VAE and transformer plus a second expert `transformer_2` and boundary_ratio 0.875, made with diffusers'
// own classes by test/parity/make-wan22-fixture.py) with diffusers' WanPipeline: the high-noise expert runs
// the steps with t >= 875, transformer_2 the rest with guidance_scale_2; final latents within 1e-3, frames
// within 2/255; caching keeps one context per expert (Cache-DiT refreshes each with its own step count).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRequest } from '../../compiler/index.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadWanPipeline, type WanPipeline } from '../../runtime/pipeline.ts';
import { brokenCopies, editJson } from '../helpers/broken-dir.ts';

export const WAN22_DIR = path.resolve(import.meta.dirname, '../fixtures/wan2.2-random');
const PROMPT = 'a large red circle at the center on a black background';
const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);

let pipe: WanPipeline;
beforeAll(async () => {
  pipe = await loadWanPipeline(WAN22_DIR, { threads: 2, planProvider });
});

const log = (k: string, v: number) => console.log(`[wan2.2 parity] ${k} = ${v.toExponential(3)}`);

describe('Wan 2.2 (two experts) directory vs diffusers WanPipeline', () => {
  for (const [file, o, experts] of [
    ['golden_s4', { height: 64, width: 64, numFrames: 5, steps: 4, guidanceScale: 5, guidanceScale2: 3 }, [0, 0, 1, 1]],
    ['golden_s6', { height: 48, width: 80, numFrames: 9, steps: 6, guidanceScale: 4 }, [0, 0, 1, 1, 1, 1]],
  ] as const) {
    it(`${file}: ${o.numFrames} frames of ${o.width}x${o.height}, experts per step ${JSON.stringify(experts)}: final latents, frames`, async () => {
      const ref = openSafetensorsSync(path.join(WAN22_DIR, 'reference', `${file}.safetensors`));
      expect(pipe.spec.resolve({ prompt: PROMPT, ...o }).experts).toEqual(experts);
      const r = await pipe.generate({ prompt: PROMPT, ...o, latents: ref.tensor('initial_latents').data });
      expect(Array.from(r.timesteps)).toEqual(Array.from(ref.tensor('timesteps').data));
      const el = relL2(r.latents, ref.tensor('final_latents').data);
      const img = maxAbsDiff(r.videos[0]!, ref.tensor('video_uint8').data);
      log(`${file} final latents relL2`, el);
      log(`${file} frames max abs (levels)`, img);
      expect(el).toBeLessThan(1e-3);
      expect(img).toBeLessThanOrEqual(2);
    });
  }

  it('DBCache: one cache context per expert, each over its own steps (Cache-DiT summary: transformer, then transformer_2)', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0, max_warmup_steps: 1 }) };
    const base = { prompt: PROMPT, height: 48, width: 80, numFrames: 9, steps: 6, guidanceScale: 4, seed: 1 };
    const plain = await pipe.generate(base);
    const r = await pipe.generate({ ...base, cache });
    // rdt 0 caches nothing: the same latents as without caching
    expect(relL2(r.latents, plain.latents)).toBe(0);
    const s = r.cache!.summary;
    expect(s).toHaveLength(2);
    // t = 999, 937 run the high-noise expert; 857 .. 376 the low-noise one
    expect(s.map((x) => x.accumulated_executed_steps)).toEqual([2, 4]);
  });

  it('a boundary without a second expert, a second expert without a boundary, or --guidance-scale-2 on Wan 2.1 are clear errors', async () => {
    const broken = brokenCopies(WAN22_DIR, 'ditforge-wan22-');
    const load = (dir: string) => loadWanPipeline(dir, { threads: 1, planProvider });
    await expect(load(broken((d) => editJson(path.join(d, 'model_index.json'), (c) => void delete c.boundary_ratio)))).rejects.toThrow(/model_index\.json: a transformer_2 needs "boundary_ratio" in \(0, 1\)/);
    await expect(load(broken((d) => editJson(path.join(d, 'model_index.json'), (c) => void delete c.transformer_2)))).rejects.toThrow(/"boundary_ratio" 0\.875 without a transformer_2 component/);
    await expect(load(broken((d) => editJson(path.join(d, 'model_index.json'), (c) => void (c.transformer_2 = ['diffusers', 'FluxTransformer2DModel']))))).rejects.toThrow(/transformer_2 class FluxTransformer2DModel is not supported by WanPipeline/);
    const wan21 = await loadWanPipeline(path.resolve(import.meta.dirname, '../fixtures/wan2.1-random'), { threads: 1, planProvider });
    await expect(wan21.generate({ prompt: PROMPT, height: 64, width: 64, numFrames: 5, steps: 1, guidanceScale2: 2 })).rejects.toThrow(/--guidance-scale-2 is for Wan 2.2 directories/);
  });
});
