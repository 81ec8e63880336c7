// Multi-rank text-to-image (runtime/pipeline-parallel.ts) over shm worker threads and mpirun processes:
// the whole FluxPipeline loop (text encoder, Ulysses transformer, Euler, VAE on rank 0) == the 1-rank run.
import { describe, expect, it } from 'vitest';
import { compileParallelPlans } from '../../compiler/index.ts';
import { mpiAvailable } from '../../runtime/comm/mpi.ts';
import { psnr, relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { generateParallel, parallelRequest, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import { componentDims, loadFluxPipeline } from '../../runtime/pipeline.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';

const provider: ParallelPlanProvider = (component, dims, parallel) => compileParallelPlans('tiny-flux', { component, dims: componentDims(component, dims), parallel });
const PROMPT = 'a large red circle at the center on a black background';
const STEPS = 8;

describe('parallelRequest: Cache-DiT --parallel spellings', () => {
  it('sizes from the world size; auto UAA without --parallel; unsupported kinds are user errors', () => {
    expect(parallelRequest({ world: 3 })).toEqual({ ulysses_size: 3, ulysses_anything: 'auto' });
    expect(parallelRequest({ world: 2, parallel: 'ulysses', ulyssesFloat8: true, ulyssesAsync: true, parallelVae: true })).toEqual({
      ulysses_size: 2,
      ulysses_anything: false,
      ulysses_float8: true,
      ulysses_async: true,
      extra_parallel_modules: ['vae'],
    });
    expect(parallelRequest({ world: 4, parallel: 'usp' })).toEqual({ ulysses_size: 2, ring_size: 2, ulysses_anything: false });
    expect(parallelRequest({ world: 2, parallel: 'ring' })).toEqual({ ring_size: 2, ulysses_anything: false });
    expect(parallelRequest({ world: 4, parallel: 'ulysses_tp', ulyssesAsync: true })).toEqual({ ulysses_size: 2, tp_size: 2, ulysses_anything: false, ulysses_async: true });
    expect(() => parallelRequest({ world: 2, parallel: 'ring', ulyssesAnything: true })).toThrow(/cannot be combined/);
    expect(() => parallelRequest({ world: 4, parallel: 'usp', ulyssesAsync: true })).toThrow(/--ulysses-async cannot be combined with --parallel usp/);
    expect(() => parallelRequest({ world: 3, parallel: 'ulysses_tp' })).toThrow(/needs an even world size >= 4/);
  });
});

describe.skipIf(!nativeAvailable())('generate on N ranks == 1 rank (tiny-flux)', () => {
  let ref: Awaited<ReturnType<Awaited<ReturnType<typeof loadFluxPipeline>>['generate']>> | undefined;
  const reference = async () => (ref ??= await (await loadFluxPipeline('tiny-flux', { threads: 1 })).generate({ prompt: PROMPT, steps: STEPS, seed: 3 }));

  for (const [world, extra] of [
    [2, {}],
    [3, {}],
    [4, { ulyssesAsync: true }],
  ] as const) {
    it(`shm, world ${world}${'ulyssesAsync' in extra ? ' async' : ''}: latents within 1e-5, same PNG pixels`, async () => {
      const want = await reference();
      const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world, comm: 'shm', threads: 1, parallelPlanProvider: provider, ...extra });
      const e = relL2(r.latents, want.latents);
      console.log(`shm world ${world}: latents relL2 ${e.toExponential(2)}, UAA ${r.parallel.anything}, bytes/step/rank ${r.ranks.map((x) => Math.round(x.bytesPerStep)).join(' ')}`);
      expect(e).toBeLessThan(1e-5);
      expect(r.parallel.anything).toBe(world === 3); // 16 image / 12 text tokens, 4 heads: only 3 needs UAA
      expect(psnr(r.decoded, want.decoded)).toBeGreaterThan(60);
    });
  }

  it('shm, --parallel ring (world 2) and usp (world 4): latents within 1e-5', async () => {
    const want = await reference();
    for (const [world, parallel] of [
      [2, 'ring'],
      [4, 'usp'],
    ] as const) {
      const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world, parallel, threads: 1, parallelPlanProvider: provider });
      const e = relL2(r.latents, want.latents);
      console.log(`shm ${parallel} world ${world}: latents relL2 ${e.toExponential(2)}`);
      expect(r.parallel.kind).toBe(parallel);
      expect(e).toBeLessThan(1e-5);
    }
  });

  it('cache (DBCache F1B0) on 3 ranks: probe sums all-reduced, the 1-rank cached steps, latents within 1e-5', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.2, max_warmup_steps: 2 }) };
    const steps = 12;
    const one = await (await loadFluxPipeline('tiny-flux', { threads: 1 })).generate({ prompt: PROMPT, steps, seed: 3, cache });
    const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps, seed: 3, world: 3, threads: 1, parallelPlanProvider: provider, cache });
    const e = relL2(r.latents, one.latents);
    console.log(`cached shm world 3: cached steps ${JSON.stringify(r.cache!.summary[0]!.cached_steps)} (1 rank ${JSON.stringify(one.cache!.summary[0]!.cached_steps)}), latents relL2 ${e.toExponential(2)}, tag ${r.cache!.tag}`);
    expect(one.cache!.summary[0]!.cached_steps.length).toBeGreaterThan(0);
    expect(r.cache!.summary[0]!.cached_steps).toEqual(one.cache!.summary[0]!.cached_steps);
    expect(r.cache!.tag).toBe(one.cache!.tag);
    expect(e).toBeLessThan(1e-5);
  });

  it('shm, world 2, FP8 all-to-all: decoded image PSNR >= 35 dB, about half the bytes', async () => {
    const want = await reference();
    const base = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 2, threads: 1, parallelPlanProvider: provider });
    const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 2, threads: 1, ulyssesFloat8: true, parallelPlanProvider: provider });
    const p = psnr(r.decoded, want.decoded, 2);
    console.log(`shm world 2 fp8: decoded PSNR ${p.toFixed(1)} dB (peak 2), bytes/step ${Math.round(r.ranks[0]!.bytesPerStep)} vs ${Math.round(base.ranks[0]!.bytesPerStep)} fp32`);
    expect(p).toBeGreaterThanOrEqual(35);
    expect(r.ranks[0]!.bytesPerStep).toBeLessThan(0.75 * base.ranks[0]!.bytesPerStep);
  });

  it('a rank that dies mid-denoise: the others fail within bounded time, naming it', async () => {
    const t0 = performance.now();
    await expect(
      generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 3, threads: 1, parallelPlanProvider: provider, faultInjection: { rank: 1, step: 2 } }),
    ).rejects.toThrow(/rank 1\b.*(exit|died|failed)|(exit|died|failed).*rank 1\b/);
    expect(performance.now() - t0).toBeLessThan(60_000);
  });

  it.skipIf(!mpiAvailable().ok)('mpi, world 2 and 3 (mpirun processes): latents within 1e-5; a dying rank is named', async () => {
    const want = await reference();
    for (const world of [2, 3]) {
      const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world, comm: 'mpi', threads: 1, parallelPlanProvider: provider, jobTimeoutMs: 120_000 });
      const e = relL2(r.latents, want.latents);
      console.log(`mpi world ${world}: latents relL2 ${e.toExponential(2)}, UAA ${r.parallel.anything}`);
      expect(e).toBeLessThan(1e-5);
    }
    await expect(
      generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 2, comm: 'mpi', threads: 1, parallelPlanProvider: provider, jobTimeoutMs: 120_000, faultInjection: { rank: 1, step: 1 } }),
    ).rejects.toThrow(/rank 1 died/);
  });
});
