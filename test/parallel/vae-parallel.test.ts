// VAE-P (--parallel-vae, Cache-DiT extra_parallel_modules=['vae']): tile #c decoded by rank c % W, rank 0
// blends and stitches, the image goes down the rank chain. Expected: bit-identical to the 1-rank tiled
// decode of the same latents (same tile plans, same kernels, threads=1 everywhere, same float32 blend), and
// every rank holds the same image.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { mpiAvailable } from '../../runtime/comm/mpi.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import { componentDims, loadFluxPipeline, type PlanProvider } from '../../runtime/pipeline.ts';
import { withoutProgress } from '../e2e/cli-harness.ts';

const provider: ParallelPlanProvider = (component, dims, parallel) => compileParallelPlans('tiny-flux', { component, dims: componentDims(component, dims), parallel });
const planProvider: PlanProvider = (component, dims) => compilePlan('tiny-flux', { component, dims: componentDims(component, dims) });
const PROMPT = 'a large red circle at the center on a black background';
// 48x80: 12x20 latents -> 2 x 4 tiles of tiny-flux's 8-latent tiles (sizes 8/4 x 8/8/8/2): uneven over 3 and 4 ranks
const [H, W] = [48, 80];
const base = { prompt: PROMPT, steps: 2, seed: 5, height: H, width: W, threads: 1, parallelPlanProvider: provider, planProvider };

const sha = (a: Float32Array) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

describe.skipIf(!nativeAvailable())('VAE-P: tile-parallel decode == 1-rank tiled decode', () => {
  let pipe: Awaited<ReturnType<typeof loadFluxPipeline>> | undefined;
  /** the 1-rank tiled decode of a run's final latents */
  const oneRankTiled = async (latents: Float32Array, tiling = true) => {
    pipe ??= await loadFluxPipeline('tiny-flux', { threads: 1, planProvider });
    return pipe.spec.decodeVaeSpace(pipe.spec.toVaeSpace(latents, 1, H, W), 1, H, W, { tiling });
  };

  for (const world of [2, 3, 4]) {
    it(`shm, world ${world}: bit-identical, every rank holds the image`, async () => {
      const r = await generateParallel('tiny-flux', { ...base, world, parallelVae: true });
      const want = await oneRankTiled(r.latents);
      const same = Buffer.from(r.decoded.buffer).equals(Buffer.from(want.buffer));
      console.log(`VAE-P shm world ${world}: 8 tiles, bit-identical to the 1-rank tiled decode: ${same}`);
      expect(same).toBe(true);
      expect(r.ranks.map((x) => x.decodedSha256)).toEqual(new Array(world).fill(sha(want)));
      // tile #c on rank c % W
      expect(r.ranks.map((x) => x.vaeTiles)).toEqual([...Array(world).keys()].map((k) => [...Array(8).keys()].filter((c) => c % world === k).length));
    });
  }

  it('shm, world 2 --vae-tiling without --parallel-vae: rank 0 decodes tiled alone', async () => {
    const r = await generateParallel('tiny-flux', { ...base, world: 2, vaeTiling: true });
    expect(Buffer.from(r.decoded.buffer).equals(Buffer.from((await oneRankTiled(r.latents)).buffer))).toBe(true);
    expect(r.ranks[1]!.decodedSha256).toBeNull();
    expect(r.ranks.map((x) => x.vaeTiles)).toEqual([8, 0]);
  });

  it('shm, world 2 --parallel-vae at 32x32 (latents within one tile: no tiling, as diffusers): every rank decodes the image', async () => {
    const r = await generateParallel('tiny-flux', { ...base, height: 32, width: 32, world: 2, parallelVae: true });
    pipe ??= await loadFluxPipeline('tiny-flux', { threads: 1, planProvider });
    const want = await pipe.spec.decodeVaeSpace(pipe.spec.toVaeSpace(r.latents, 1, 32, 32), 1, 32, 32);
    expect(r.ranks.map((x) => x.decodedSha256)).toEqual([sha(want), sha(want)]);
  });

  it.skipIf(!mpiAvailable().ok)('mpi, world 3 (mpirun processes): bit-identical, every rank holds the image', async () => {
    const r = await generateParallel('tiny-flux', { ...base, world: 3, comm: 'mpi', parallelVae: true, jobTimeoutMs: 120_000 });
    const want = await oneRankTiled(r.latents);
    console.log(`VAE-P mpi world 3: bit-identical ${Buffer.from(r.decoded.buffer).equals(Buffer.from(want.buffer))}`);
    expect(Buffer.from(r.decoded.buffer).equals(Buffer.from(want.buffer))).toBe(true);
    expect(r.ranks.map((x) => x.decodedSha256)).toEqual(new Array(3).fill(sha(want)));
  });

  it('CLI: --world 3 --parallel-vae writes the PNG of the 1-rank --vae-tiling run', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-vaep-'));
    afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [path.resolve('bin/ditforge.mjs'), 'generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--steps', '2', '--threads', '1', '--height', '48', '--width', '80', '--json', ...args], {
        cwd: tmp,
        encoding: 'utf8',
        env: { ...process.env, DITFORGE_DEBUG: '' },
        timeout: 120_000,
      });
    const one = cli(['--vae-tiling', '--out', 't1.png']);
    expect(one.status).toBe(0);
    const three = cli(['--world', '3', '--parallel-vae', '--out', 'p3.png']);
    expect(withoutProgress(three.stderr)).toBe('');
    expect(three.status).toBe(0);
    const j = JSON.parse(three.stdout) as { parallel: { ranks: { vaeTiles: number; decodedSha256: string }[] } };
    expect(j.parallel.ranks.map((x) => x.vaeTiles)).toEqual([3, 3, 2]);
    expect(new Set(j.parallel.ranks.map((x) => x.decodedSha256)).size).toBe(1);
    expect(fs.readFileSync(path.join(tmp, 'p3.png')).equals(fs.readFileSync(path.join(tmp, 't1.png')))).toBe(true);
  });
});
