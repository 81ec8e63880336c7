// Cache + Ulysses: the cache engine over ParallelExecutor with all-reduced probe sums
// (runtime/parallel/cache.ts): every rank takes the same decisions as the 1-rank run, outputs match.
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { dbCacheConfig } from '../../runtime/cache/index.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { nativeAvailable } from '../../runtime/native.ts';
import { type CacheLoopOptions, cacheLoopOnRank, cacheLoopOneRank, inputsFor, tinyFluxWeights } from './helpers.ts';

const STEPS = 10;
const CACHE = dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.12, max_warmup_steps: 2 });

/** the toy denoising loop (x <- x - 0.1 v) with the cache engine over the block list */
const LOOP: CacheLoopOptions = { steps: STEPS, cache: CACHE, timestep: (s) => Float32Array.of(1 - s / STEPS) };

describe.skipIf(!nativeAvailable())('cache + Ulysses: all-reduced probe sums', () => {
  it('tiny-flux, DBCache F1B0: 3 ranks (UAA) and 2 ranks take the 1-rank decisions on every rank', async () => {
    const w = await tinyFluxWeights();
    const ref = compilePlan('tiny-flux', { component: 'transformer' });
    const inputs = inputsFor(ref, 9);
    const one = await cacheLoopOneRank(ref, w, inputs, LOOP);
    console.log(`1 rank: cached steps ${JSON.stringify(one.cached)}`);
    expect(one.cached.length).toBeGreaterThan(0);
    expect(one.cached.length).toBeLessThan(STEPS - 2);
    for (const W of [2, 3]) {
      const plans = compileParallelPlans('tiny-flux', { component: 'transformer', parallel: { ulysses_size: W, ulysses_anything: 'auto' } });
      const ranks = await runShm(W, (comm) => cacheLoopOnRank(comm, plans[comm.rank]!, w, inputs, LOOP));
      for (const r of ranks) {
        expect(r.cached).toEqual(one.cached);
        expect(r.probes).toBe(ranks[0]!.probes);
        for (let s = 0; s < STEPS; s++) expect(relL2(r.outs[s]!, one.outs[s]!)).toBeLessThan(1e-5);
      }
      console.log(`${W} ranks: cached steps ${JSON.stringify(ranks[0]!.cached)} on every rank, probes ${ranks[0]!.probes}, last-step relL2 ${relL2(ranks[0]!.outs[STEPS - 1]!, one.outs[STEPS - 1]!).toExponential(2)}`);
    }
  });
});
