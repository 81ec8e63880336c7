// Cache + Ulysses: the cache engine over ParallelExecutor with all-reduced probe sums
// (runtime/parallel/cache.ts): every rank takes the same decisions as the 1-rank run, outputs match.
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import { CacheEngine, ExecutorBlockListRunner, dbCacheConfig, type ExecutorLike } from '../../runtime/cache/index.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { ParallelBlockListRunner } from '../../runtime/parallel/cache.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { inputsFor, tinyFluxWeights } from './helpers.ts';

const STEPS = 10;
const CACHE = dbCacheConfig({ Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.12, max_warmup_steps: 2 });

interface Exec extends ExecutorLike {
  setInput(name: string, v: Float32Array): void;
}

/** A toy denoising loop: x <- x - 0.1 v, with the cache engine over the block list. */
async function loop(plan: Plan, exec: Exec, runner: ExecutorBlockListRunner, output: () => Promise<Float32Array>, inputs: Record<string, Float32Array>) {
  const engine = new CacheEngine({ lists: [{ name: 'transformer_blocks', runner }], cache: CACHE });
  engine.refreshContext({ numInferenceSteps: STEPS });
  const x = Float32Array.from(inputs.hidden_states!);
  const outs: Float32Array[] = [];
  for (let s = 0; s < STEPS; s++) {
    for (const [k, v] of Object.entries(inputs)) exec.setInput(k, k === 'hidden_states' ? x : k === 'timestep' ? Float32Array.of(1 - s / STEPS) : v);
    await exec.run('embed');
    await engine.runList(0);
    await exec.run('head');
    const v = await output();
    for (let i = 0; i < x.length; i++) x[i] = Math.fround(x[i]! - 0.1 * v[i]!);
    outs.push(v);
  }
  void plan;
  return { cached: engine.summary()[0]!.cached_steps, outs };
}

describe.skipIf(!nativeAvailable())('cache + Ulysses: all-reduced probe sums', () => {
  it('tiny-flux, DBCache F1B0: 3 ranks (UAA) and 2 ranks take the 1-rank decisions on every rank', async () => {
    const w = await tinyFluxWeights();
    const ref = compilePlan('tiny-flux', { component: 'transformer' });
    const inputs = inputsFor(ref, 9);
    const ex = new native.Executor(JSON.stringify(ref), { threads: 1 });
    for (const x of ref.weights) ex.bindWeight(x.name, w.get(x.name)!);
    const seg = ref.segments.find((s) => s.name === 'blocks')!;
    const one = await loop(ref, ex, new ExecutorBlockListRunner(ex, ref, seg), async () => {
      const o = new Float32Array(ref.outputs[0]!.shape.reduce((a, b) => a * b, 1));
      ex.getOutput('output', o);
      return o;
    }, inputs);
    console.log(`1 rank: cached steps ${JSON.stringify(one.cached)}`);
    expect(one.cached.length).toBeGreaterThan(0);
    expect(one.cached.length).toBeLessThan(STEPS - 2);
    for (const W of [2, 3]) {
      const plans = compileParallelPlans('tiny-flux', { component: 'transformer', parallel: { ulysses_size: W, ulysses_anything: 'auto' } });
      const ranks = await runShm(W, async (comm) => {
        const plan = plans[comm.rank]!;
        const pe = new ParallelExecutor(comm, plan, native, { threads: 1 });
        for (const x of plan.weights) pe.bindWeight(x.name, w.get(x.name)!);
        const runner = new ParallelBlockListRunner(comm, pe, plan, plan.segments.find((s) => s.name === 'blocks')!);
        const r = await loop(plan, pe, runner, () => pe.output('output'), inputs);
        return { ...r, probes: runner.probes };
      });
      for (const r of ranks) {
        expect(r.cached).toEqual(one.cached);
        expect(r.probes).toBe(ranks[0]!.probes);
        for (let s = 0; s < STEPS; s++) expect(relL2(r.outs[s]!, one.outs[s]!)).toBeLessThan(1e-5);
      }
      console.log(`${W} ranks: cached steps ${JSON.stringify(ranks[0]!.cached)} on every rank, probes ${ranks[0]!.probes}, last-step relL2 ${relL2(ranks[0]!.outs[STEPS - 1]!, one.outs[STEPS - 1]!).toExponential(2)}`);
    }
  });
});
