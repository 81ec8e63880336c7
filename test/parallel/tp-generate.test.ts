// `--parallel tp` end to end (runtime/pipeline-parallel.ts over shm worker threads and mpirun processes):
// the FluxPipeline loop with the tensor-parallel transformer (and TE-P text encoder) == the 1-rank run.
// Tolerance 1e-5 rel L2 on the final latents: TP only reorders the row-parallel GEMM sums (float32).
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { compileParallelPlans } from '../../compiler/index.ts';
import { mpiAvailable } from '../../runtime/comm/mpi.ts';
import { psnr, relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { generateParallel, parallelRequest, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import { componentDims, loadFluxPipeline } from '../../runtime/pipeline.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';
import { withoutProgress } from '../e2e/cli-harness.ts';

const provider: ParallelPlanProvider = (component, dims, parallel) => compileParallelPlans('tiny-flux', { component, dims: componentDims(component, dims), parallel });
const PROMPT = 'a large red circle at the center on a black background';
const STEPS = 4;

describe('parallelRequest: --parallel tp', () => {
  it('tp over the world; hybrids and Ulysses flags are user errors', () => {
    expect(parallelRequest({ world: 2, parallel: 'tp' })).toEqual({ tp_size: 2, ulysses_anything: false });
    expect(parallelRequest({ world: 4, parallel: 'tp', parallelText: true })).toEqual({ tp_size: 4, ulysses_anything: false, extra_parallel_modules: ['text_encoder'] });
    expect(parallelRequest({ world: 4, parallel: 'ulysses_tp' })).toEqual({ ulysses_size: 2, tp_size: 2, ulysses_anything: false });
    expect(parallelRequest({ world: 6, parallel: 'tp_ulysses' })).toEqual({ tp_size: 3, ulysses_size: 2, ulysses_anything: false });
    expect(parallelRequest({ world: 8, parallel: 'usp_tp' })).toEqual({ ulysses_size: 2, ring_size: 2, tp_size: 2, ulysses_anything: false });
    expect(parallelRequest({ world: 4, parallel: 'ulysses_tp', ulyssesAsync: true })).toEqual({ ulysses_size: 2, tp_size: 2, ulysses_anything: false, ulysses_async: true });
    expect(() => parallelRequest({ world: 2, parallel: 'tp', ulyssesFloat8: true })).toThrow(/cannot be combined with --parallel tp/);
  });
});

describe.skipIf(!nativeAvailable())('generate --parallel tp == 1 rank (tiny-flux)', () => {
  let ref: Awaited<ReturnType<Awaited<ReturnType<typeof loadFluxPipeline>>['generate']>> | undefined;
  const reference = async () => (ref ??= await (await loadFluxPipeline('tiny-flux', { threads: 1 })).generate({ prompt: PROMPT, steps: STEPS, seed: 3 }));

  it('shm, world 2: latents within 1e-5, same image', async () => {
    const want = await reference();
    const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 2, parallel: 'tp', comm: 'shm', threads: 1, parallelPlanProvider: provider });
    const e = relL2(r.latents, want.latents);
    console.log(`shm tp world 2: latents relL2 ${e.toExponential(2)}, bytes/step/rank ${r.ranks.map((x) => Math.round(x.bytesPerStep)).join(' ')}`);
    expect(r.parallel).toMatchObject({ kind: 'tp', world: 2, tp: 2 });
    expect(e).toBeLessThan(1e-5);
    expect(psnr(r.decoded, want.decoded)).toBeGreaterThan(60);
  });

  it('shm, --parallel-text (TE-P) with tp and with Ulysses over 4 ranks, and tp over 3 ranks (4 heads: 2 + 1 + 1): latents within 1e-5; world 5 TE-P is an error', async () => {
    const want = await reference();
    for (const [parallel, world] of [['tp', 4], ['ulysses', 4], ['tp', 3]] as const) {
      const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world, parallel, parallelText: true, threads: 1, parallelPlanProvider: provider });
      const e = relL2(r.latents, want.latents);
      console.log(`shm ${parallel} world ${world} + TE-P: latents relL2 ${e.toExponential(2)}`);
      expect(e).toBeLessThan(1e-5);
      expect(r.inputIds).toEqual(want.inputIds);
    }
    await expect(generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 5, parallelText: true, threads: 1, parallelPlanProvider: provider })).rejects.toThrow(
      /text_encoder: tensor parallel: .* has 4 heads, fewer than tp_size 5/,
    );
  });

  it('shm, world 4, --parallel ulysses_tp (ulysses 2 x tp 2, also --ulysses-async) and ring_tp (ring 2 x tp 2): latents within 1e-5', async () => {
    const want = await reference();
    for (const [parallel, kind, ulyssesAsync] of [
      ['ulysses_tp', 'ulysses', false],
      ['ulysses_tp', 'ulysses', true],
      ['ring_tp', 'ring', false],
    ] as const) {
      const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world: 4, parallel, ulyssesAsync, threads: 1, parallelPlanProvider: provider });
      const e = relL2(r.latents, want.latents);
      console.log(`shm ${parallel}${ulyssesAsync ? ' async' : ''} world 4: latents relL2 ${e.toExponential(2)}`);
      expect(r.parallel).toMatchObject({ kind, world: 4, tp: 2, async: ulyssesAsync });
      expect(e).toBeLessThan(1e-5);
    }
  });

  it('shm, world 2, --parallel tp --cache (DBCache F1B0): the 1-rank cached steps and latents', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.2, max_warmup_steps: 2 }) };
    const one = await (await loadFluxPipeline('tiny-flux', { threads: 1 })).generate({ prompt: PROMPT, steps: 10, seed: 3, cache });
    const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: 10, seed: 3, world: 2, parallel: 'tp', threads: 1, parallelPlanProvider: provider, cache });
    console.log(`cached shm tp world 2: cached steps ${JSON.stringify(r.cache!.summary[0]!.cached_steps)} (1 rank ${JSON.stringify(one.cache!.summary[0]!.cached_steps)})`);
    expect(one.cache!.summary[0]!.cached_steps.length).toBeGreaterThan(0);
    expect(r.cache!.summary[0]!.cached_steps).toEqual(one.cache!.summary[0]!.cached_steps);
    expect(relL2(r.latents, one.latents)).toBeLessThan(1e-5);
  });

  it.skipIf(!mpiAvailable().ok)('mpi (mpirun processes): --parallel tp world 2 and ulysses_tp world 4 (also async), latents within 1e-5', async () => {
    const want = await reference();
    for (const [world, parallel, ulyssesAsync] of [
      [2, 'tp', false],
      [4, 'ulysses_tp', false],
      [4, 'ulysses_tp', true],
    ] as const) {
      const r = await generateParallel('tiny-flux', { prompt: PROMPT, steps: STEPS, seed: 3, world, parallel, ulyssesAsync, comm: 'mpi', threads: 1, parallelPlanProvider: provider, jobTimeoutMs: 120_000 });
      const e = relL2(r.latents, want.latents);
      console.log(`mpi ${parallel}${ulyssesAsync ? ' async' : ''} world ${world}: latents relL2 ${e.toExponential(2)}`);
      expect(e).toBeLessThan(1e-5);
    }
  });
});

const ROOT = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-tp-e2e-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const cli = (args: string[]) => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/ditforge.mjs'), ...args], { cwd: tmp, encoding: 'utf8', env: { ...process.env, DITFORGE_DEBUG: '' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

describe.skipIf(!nativeAvailable())('ditforge generate --world 2 --parallel tp --parallel-text', () => {
  it('same latents (1e-5) and PNG as one rank; --json reports kind tp', () => {
    const base = ['generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--steps', '3', '--threads', '1', '--json'];
    expect(cli([...base, '--out', 'one.png', '--save-latents', 'one.safetensors']).code).toBe(0);
    const r = cli([...base, '--world', '2', '--parallel', 'tp', '--parallel-text', '--out', 'tp.png', '--save-latents', 'tp.safetensors']);
    expect(withoutProgress(r.stderr)).toBe('');
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { parallel: { parallel: string; world: number } }).parallel).toMatchObject({ parallel: 'tp', world: 2 });
    const a = openSafetensorsSync(path.join(tmp, 'one.safetensors')).tensor('latents').data;
    const b = openSafetensorsSync(path.join(tmp, 'tp.safetensors')).tensor('latents').data;
    expect(relL2(b, a)).toBeLessThan(1e-5);
    expect(fs.readFileSync(path.join(tmp, 'tp.png')).equals(fs.readFileSync(path.join(tmp, 'one.png')))).toBe(true);
  });
});
