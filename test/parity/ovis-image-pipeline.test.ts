// Parity of an Ovis-Image diffusers directory (test/fixtures/ovis-image-random: random weights at scaled-down
// sizes, laid out like AIDC-AI/Ovis-Image-7B, a bf16 sharded transformer with SwiGLU MLPs, Qwen3Model, FLUX.1's
// AutoencoderKL) with diffusers' OvisImagePipeline (references made by test/parity/make-ovis-image-fixture.py):
// the system prompt in the chat template tokenized identically, Qwen3's masked last hidden state without the
// template's first 28 rows within 1e-5, the seeded initial latents exact, sigmas and timesteps bit-exact, final
// latents within 1e-5 (CFG 5 on a non-square size; no CFG), the image within 1/255; 2 ranks == 1 rank; the
// transformer's parameter count at the released config as diffusers counts it.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileParallelPlans, compilePlan, compileRequest, requestOptions } from '../../compiler/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { maxAbsDiff, relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { loadOvisImagePipeline, PACKAGE_ROOT, type OvisImagePipeline } from '../../runtime/pipeline.ts';
import { generateParallel } from '../../runtime/pipeline-parallel.ts';
import type { Flux2Result } from '../../runtime/pipelines/flux2.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/ovis-image-random');
const log = (k: string, v: number) => console.log(`[ovis-image parity] ${k} = ${v.toExponential(3)}`);
const planProvider = (c: Parameters<typeof compileRequest>[0], _d: unknown, req: Parameters<typeof compileRequest>[1]) => compileRequest(c, req);

const RUNS = [
  { name: 'cfg_s4', prompt: 'a large red circle at the center on a black background', height: 48, width: 80, steps: 4, guidanceScale: 5, maxSequenceLength: 24, seed: 3 },
  { name: 'plain_s3', prompt: 'a blue square', height: 64, width: 64, steps: 3, guidanceScale: 1, maxSequenceLength: 16, seed: 5 },
];

describe('Ovis-Image released config', () => {
  it('6 dual + 27 single blocks (two Pattern_1 lists), SwiGLU MLPs; parameters as diffusers counts them', () => {
    const index = JSON.parse(fs.readFileSync(path.join(DIR, 'reference', 'index.json'), 'utf8')) as { released_transformer_params: number };
    const p = compilePlan('ovis-image', { component: 'transformer' });
    expect(p.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0)).toBe(index.released_transformer_params);
    expect(p.segments.filter((s) => s.blocks).map((s) => [s.list, s.pattern, s.blocks!.length])).toEqual([
      ['transformer_blocks', 1, 6],
      ['single_transformer_blocks', 1, 27],
    ]);
    expect(p.weights.find((w) => w.name === 'transformer_blocks.0.ff.net.0.proj.weight')!.shape).toEqual([2 * 4 * 3072, 3072]);
    expect(p.weights.find((w) => w.name === 'single_transformer_blocks.0.proj_mlp.weight')!.shape).toEqual([2 * 4 * 3072, 3072]);
    expect(p.weights.find((w) => w.name === 'context_embedder_norm.weight')!.shape).toEqual([2048]);
  });
});

describe.skipIf(!nativeAvailable())('Ovis-Image directory vs diffusers OvisImagePipeline', () => {
  let pipe: OvisImagePipeline;
  beforeAll(async () => {
    pipe = await loadOvisImagePipeline(DIR, { threads: 2, planProvider });
  });

  it.each(RUNS)('$name: tokens, prompt embeddings, initial latents, schedule, final latents, image', async (run) => {
    const ref = openSafetensorsSync(path.join(DIR, 'reference', `${run.name}.safetensors`));
    const { name: _n, ...opts } = run;
    const q = pipe.spec.resolve(opts);
    expect(q.cfgScale === null).toBe(run.guidanceScale <= 1);
    const pos = await pipe.spec.encode(q, [run.prompt]);
    expect(pos.inputIds[0]).toEqual(ref.ints('input_ids'));
    const pe = relL2(pos.embeds, ref.tensor('prompt_embeds').data);
    const ne = relL2((await pipe.spec.encode(q, [''])).embeds, ref.tensor('negative_prompt_embeds').data);
    log(`${run.name} prompt_embeds / negative relL2`, Math.max(pe, ne));
    expect(pe).toBeLessThan(1e-5);
    expect(ne).toBeLessThan(1e-5);
    expect(Array.from(pipe.spec.noise(q))).toEqual(Array.from(ref.tensor('initial_latents').data));
    const r = await pipe.generate(opts);
    expect(Array.from(r.schedule.sigmas)).toEqual(Array.from(ref.tensor('sigmas').data));
    expect(Array.from(r.schedule.timesteps)).toEqual(Array.from(ref.tensor('timesteps').data));
    const fe = relL2(r.latents, ref.tensor('final_latents').data);
    log(`${run.name} final latents relL2`, fe);
    expect(fe).toBeLessThan(1e-5);
    const d = maxAbsDiff(r.image, Uint8Array.from(ref.ints('image_uint8')));
    console.log(`[ovis-image parity] ${run.name} image max |diff| = ${d}/255`);
    expect(d).toBeLessThanOrEqual(1);
  });

  it.each(['ulysses', 'tp'] as const)('%s on 2 ranks with CFG (the SwiGLU halves split alike): latents within 1e-5 of 1 rank', async (parallel) => {
    const run = { prompt: RUNS[0]!.prompt, height: 48, width: 80, steps: 2, guidanceScale: 5, maxSequenceLength: 24, seed: 3 };
    const one = await pipe.generate(run);
    const r = await generateParallel<Flux2Result>(DIR, { ...run, world: 2, parallel, comm: 'shm', threads: 1, generatedDir: path.join(PACKAGE_ROOT, 'generated'), planProvider, parallelPlanProvider: (c, _d, p, req) => compileParallelPlans(req.model, { ...requestOptions(c, req), parallel: p }) });
    const e = relL2(r.latents, one.latents);
    console.log(`[ovis-image] ${parallel} world 2: latents relL2 ${e.toExponential(2)}`);
    expect(r.parallel.kind).toBe(parallel);
    expect(e).toBeLessThan(1e-5);
    expect(maxAbsDiff(r.image, one.image)).toBeLessThanOrEqual(1);
  });
});
