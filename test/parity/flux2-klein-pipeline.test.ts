// Parity of a FLUX.2-Klein diffusers directory (test/fixtures/flux2-klein-random: random weights at scaled-down
// sizes, laid out like black-forest-labs/FLUX.2-klein-base-4B, a bf16 sharded transformer, a 28-layer Qwen3,
// AutoencoderKLFlux2 with BatchNorm statistics) with diffusers' Flux2KleinPipeline (references made by
// test/parity/make-flux2-klein-fixture.py): chat-template tokens identical, the stacked Qwen3 hidden states
// (prompt and the empty negative prompt, padding rows included) within 1e-5, the seeded initial latents
// exact, sigmas and timesteps bit-exact, final latents within 1e-5 (CFG 4 on a non-square size; no CFG), the
// image within 1/255. Tolerances: the float32 bounds of the other pipelines' parity (same math, other
// summation orders).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileParallelPlans, compileRequest, requestOptions } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { loadFlux2KleinPipeline, PACKAGE_ROOT, type Flux2KleinPipeline } from '../../runtime/pipeline.ts';
import { generateParallel } from '../../runtime/pipeline-parallel.ts';
import type { Flux2Result } from '../../runtime/pipelines/flux2.ts';
import { nativeAvailable } from '../../runtime/native.ts';

export const KLEIN_DIR = path.resolve(import.meta.dirname, '../fixtures/flux2-klein-random');

let pipe: Flux2KleinPipeline;
beforeAll(async () => {
  pipe = await loadFlux2KleinPipeline(KLEIN_DIR, { threads: 2, planProvider: (c, _d, req) => compileRequest(c, req) });
});

const log = (k: string, v: number) => console.log(`[flux2-klein parity] ${k} = ${v.toExponential(3)}`);

const RUNS = [
  { name: 'cfg_s4', prompt: 'a large red circle at the center on a black background', height: 48, width: 80, steps: 4, guidanceScale: 4, maxSequenceLength: 40, seed: 3 },
  { name: 'plain_s3', prompt: 'a blue square', height: 64, width: 64, steps: 3, guidanceScale: 1, maxSequenceLength: 24, seed: 5 },
];

describe.skipIf(!nativeAvailable())('FLUX.2-Klein directory vs diffusers Flux2KleinPipeline', () => {
  it.each(RUNS)('$name: tokens, stacked Qwen3 hidden states, initial latents, schedule, final latents, image', async (run) => {
    const ref = openSafetensorsSync(path.join(KLEIN_DIR, 'reference', `${run.name}.safetensors`));
    const { name: _n, ...opts } = run;
    const q = pipe.spec.resolve(opts);
    expect(q.cfgScale === null).toBe(run.guidanceScale <= 1);
    const pos = await pipe.spec.encode(q, [run.prompt]);
    expect(pos.inputIds[0]).toEqual(ref.ints('input_ids'));
    const pe = relL2(pos.embeds, ref.tensor('prompt_embeds').data);
    const neg = await pipe.spec.encode(q, ['']);
    const ne = relL2(neg.embeds, ref.tensor('negative_prompt_embeds').data);
    log(`${run.name} prompt_embeds / negative relL2`, Math.max(pe, ne));
    expect(pe).toBeLessThan(1e-5);
    expect(ne).toBeLessThan(1e-5);
    expect(Array.from(pipe.spec.noise(q))).toEqual(Array.from(ref.tensor('initial_latents').data));

    const r = await pipe.generate(opts);
    expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
    expect(Array.from(r.schedule.timesteps)).toEqual(Array.from(ref.tensor('timesteps').data));
    const fe = relL2(await pipe.spec.vaeLatents(q, r.latents), ref.tensor('final_latents').data);
    log(`${run.name} final latents relL2`, fe);
    expect(fe).toBeLessThan(1e-5);
    const img = ref.tensor('image_uint8');
    const d = maxAbsDiff(r.image, Uint8Array.from(ref.ints('image_uint8')));
    console.log(`[flux2-klein parity] ${run.name} image max |diff| = ${d}/255 (${img.shape.join('x')})`);
    expect(d).toBeLessThanOrEqual(1);
  });
});

describe.skipIf(!nativeAvailable())('FLUX.2-Klein directory on 2 ranks == 1 rank', () => {
  const run = { prompt: RUNS[0]!.prompt, height: 48, width: 80, steps: 3, guidanceScale: 4, maxSequenceLength: 40, seed: 3 };
  it.each(['ulysses', 'tp'] as const)('%s with CFG (text split 20 + 20, image 120 + 120; heads 2 + 1): latents within 1e-5, image within 1/255', async (parallel) => {
    const one = await pipe.generate(run);
    const r = await generateParallel<Flux2Result>(KLEIN_DIR, { ...run, world: 2, parallel, comm: 'shm', threads: 1, generatedDir: path.join(PACKAGE_ROOT, 'generated'), planProvider: (c, _d, req) => compileRequest(c, req), parallelPlanProvider: (c, _d, p, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel: p }) });
    const e = relL2(r.latents, one.latents);
    console.log(`[flux2-klein] ${parallel} world 2: latents relL2 ${e.toExponential(2)}`);
    expect(r.parallel.kind).toBe(parallel);
    expect(e).toBeLessThan(1e-5);
    expect(maxAbsDiff(r.image, one.image)).toBeLessThanOrEqual(1);
  });
});

describe.skipIf(!nativeAvailable())('FLUX.2-Klein editing vs diffusers (two reference images)', () => {
  it('a 70x90 and a 64x64 image: cropped, encoded, normalized and packed as diffusers does; final latents and image', async () => {
    const ref = openSafetensorsSync(path.join(KLEIN_DIR, 'reference', 'edit2_s3.safetensors'));
    const images = ['ref-a.png', 'ref-b.png'].map((f) => path.join(KLEIN_DIR, 'reference', f));
    const opts = { prompt: 'make the circle blue', image: images, steps: 3, guidanceScale: 3, maxSequenceLength: 32, seed: 7 };
    const q = pipe.spec.resolve(opts);
    // the size from the first image (70 x 90 rounded down to 68 x 88), its tokens then the second image's
    expect([q.width, q.height, q.tokens, q.refTokens]).toEqual([68, 88, 374, 630]);
    await pipe.spec.prepareInputs(q);
    const le = relL2(q.refLatents!, ref.tensor('image_latents').data);
    log('edit2 reference-image latents relL2', le);
    expect(le).toBeLessThan(1e-5);
    expect(Array.from(q.refIds!)).toEqual(Array.from(ref.tensor('image_latent_ids').data));
    const r = await pipe.generate(opts);
    const fe = relL2(await pipe.spec.vaeLatents(q, r.latents), ref.tensor('final_latents').data);
    log('edit2 final latents relL2', fe);
    expect(fe).toBeLessThan(1e-5);
    expect(maxAbsDiff(r.image, Uint8Array.from(ref.ints('image_uint8')))).toBeLessThanOrEqual(1);
  });

  it('on 2 ranks (Ulysses: the latents and both images tokens, 374 + 630, split over the ranks): latents within 1e-5 of 1 rank', async () => {
    const images = ['ref-a.png', 'ref-b.png'].map((f) => path.join(KLEIN_DIR, 'reference', f));
    const opts = { prompt: 'make the circle blue', image: images, steps: 2, guidanceScale: 3, maxSequenceLength: 16, seed: 7 };
    const one = await pipe.generate(opts);
    const r = await generateParallel<Flux2Result>(KLEIN_DIR, { ...opts, world: 2, parallel: 'ulysses', comm: 'shm', threads: 1, generatedDir: path.join(PACKAGE_ROOT, 'generated'), planProvider: (c, _d, req) => compileRequest(c, req), parallelPlanProvider: (c, _d, p, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel: p }) });
    const e = relL2(r.latents, one.latents);
    console.log(`[flux2-klein] editing ulysses world 2: latents relL2 ${e.toExponential(2)}`);
    expect(e).toBeLessThan(1e-5);
  });
});
