// True CFG (negative prompt + true_cfg_scale) with --world > 1: every rank runs the 1-rank denoising loop
// (runtime/denoise.ts: cond then uncond, float32 combine) and, with caching, the 1-rank cache session with
// separate CFG contexts over all-reducing runners. Expected: the 1-rank CFG latents within 1e-5 relative L2
// (Ulysses changes only the summation order inside attention), and the 1-rank cached steps per branch on
// every rank (the all-reduced probe sums make every rank decide alike).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { compileParallelPlans } from '../../compiler/index.ts';
import { dbCacheConfig } from '../../runtime/cache/config.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { generateParallel, type ParallelPlanProvider } from '../../runtime/pipeline-parallel.ts';
import { componentDims, loadFluxPipeline } from '../../runtime/pipeline.ts';
import { withoutProgress } from '../e2e/cli-harness.ts';

const provider: ParallelPlanProvider = (component, dims, parallel) => compileParallelPlans('tiny-flux', { component, dims: componentDims(component, dims), parallel });
const CFG = { prompt: 'a large red circle at the center on a black background', negativePrompt: 'a small blue square', guidanceScale: 3.5, seed: 3 };

describe.skipIf(!nativeAvailable())('true CFG on N ranks == 1 rank (tiny-flux)', () => {
  it('uncached, 4 steps: shm world 2 and 3 (UAA) reproduce the 1-rank CFG latents', async () => {
    const pipe = await loadFluxPipeline('tiny-flux', { threads: 1 });
    const one = await pipe.generate({ ...CFG, steps: 4 });
    const noCfg = await pipe.generate({ ...CFG, negativePrompt: undefined, steps: 4 });
    // the guard: CFG really changes the result, so matching it is not matching the plain run
    expect(relL2(noCfg.latents, one.latents)).toBeGreaterThan(1e-2);
    for (const world of [2, 3]) {
      const r = await generateParallel('tiny-flux', { ...CFG, steps: 4, world, threads: 1, parallelPlanProvider: provider });
      const e = relL2(r.latents, one.latents);
      console.log(`CFG shm world ${world}: latents relL2 vs 1 rank ${e.toExponential(2)} (vs no CFG ${relL2(noCfg.latents, one.latents).toExponential(2)})`);
      expect(e).toBeLessThan(1e-5);
    }
  });

  it('DBCache F1B0 (separate CFG contexts), 12 steps, shm world 2: the 1-rank cached steps per branch on every rank', async () => {
    const cache = { cache: dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.2, max_warmup_steps: 2 }) };
    const one = await (await loadFluxPipeline('tiny-flux', { threads: 1 })).generate({ ...CFG, steps: 12, cache });
    const s1 = one.cache!.summary[0]!;
    // the branches cache different steps here, so per-branch equality is a real check
    expect(s1.cached_steps).not.toEqual(s1.cfg_cached_steps);
    expect(s1.cfg_cached_steps.length).toBeGreaterThan(0);
    const r = await generateParallel('tiny-flux', { ...CFG, steps: 12, world: 2, threads: 1, parallelPlanProvider: provider, cache });
    const e = relL2(r.latents, one.latents);
    console.log(
      `cached CFG shm world 2: cached ${JSON.stringify(s1.cached_steps)} cfg ${JSON.stringify(s1.cfg_cached_steps)} (1 rank); ranks ${JSON.stringify(r.ranks.map((x) => [x.cachedSteps, x.cfgCachedSteps]))}; latents relL2 ${e.toExponential(2)}; tag ${r.cache!.tag}`,
    );
    expect(r.cache!.tag).toBe(one.cache!.tag);
    for (const rk of r.ranks) {
      expect(rk.cachedSteps).toEqual(s1.cached_steps);
      expect(rk.cfgCachedSteps).toEqual(s1.cfg_cached_steps);
    }
    expect(r.cache!.summary[0]!.cfg_cached_steps).toEqual(s1.cfg_cached_steps);
    expect(e).toBeLessThan(1e-5);
  });

  it('CLI: --world 2 --negative-prompt --guidance-scale --cache == one rank (latents, cached steps per branch)', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-cfgp-'));
    afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const cli = (args: string[]) =>
      spawnSync(
        process.execPath,
        [path.resolve('bin/ditforge.mjs'), 'generate', '--model', 'tiny-flux', '--prompt', CFG.prompt, '--negative-prompt', CFG.negativePrompt, '--guidance-scale', '3.5', '--steps', '10', '--threads', '1', '--cache', '--rdt', '0.2', '--ws', '2', '--json', ...args],
        { cwd: tmp, encoding: 'utf8', env: { ...process.env, DITFORGE_DEBUG: '' }, timeout: 120_000 },
      );
    type J = { cache: { tag: string; cached_steps: number[]; cfg_cached_steps: number[] } };
    const one = cli(['--out', 'c1.png', '--save-latents', 'c1.safetensors']);
    expect(one.status).toBe(0);
    const two = cli(['--world', '2', '--out', 'c2.png', '--save-latents', 'c2.safetensors']);
    expect(withoutProgress(two.stderr)).toBe('');
    expect(two.status).toBe(0);
    const [a, b] = [JSON.parse(one.stdout) as J, JSON.parse(two.stdout) as J];
    expect(b.cache.tag).toBe(a.cache.tag);
    expect(b.cache.cached_steps).toEqual(a.cache.cached_steps);
    expect(b.cache.cfg_cached_steps).toEqual(a.cache.cfg_cached_steps);
    const la = openSafetensorsSync(path.join(tmp, 'c1.safetensors')).tensor('latents').data;
    const lb = openSafetensorsSync(path.join(tmp, 'c2.safetensors')).tensor('latents').data;
    expect(relL2(lb, la)).toBeLessThan(1e-5);
  });
});
