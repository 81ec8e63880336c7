// ControlNet context parallelism (Cache-DiT CN-P, docs/architecture.md §3c): the controlnet runs with the
// transformer's token split, its per-block residuals stay token-sharded (`parallel.sharded`) and are fed to
// the transformer's residual inputs (`split.<name>.residual`) without a gather. Test-only DSL model
// (controlnet-cp-model.ts); 2 and 3 ranks (13 image tokens: uneven, UAA) vs the 1-rank plans.
import { describe, expect, it } from 'vitest';
import { compilePlan, compileParallelPlans, registerModel } from '../../compiler/index.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { runNative } from '../helpers/run-plan.ts';
import { randomInputs, randomWeights } from '../helpers/random.ts';
import { controlNetCpModel } from './controlnet-cp-model.ts';

registerModel('test-controlnet-cp', controlNetCpModel);
const M = 'test-controlnet-cp';
const LAYERS = 2;

/** full inputs of both components: the transformer's residuals come from the controlnet */
function setup() {
  const cn = compilePlan(M, { component: 'controlnet' });
  const tr = compilePlan(M, { component: 'transformer' });
  const w = new Map([...randomWeights(cn, 31), ...randomWeights(tr, 32)]);
  const cnIn = randomInputs(cn, 33);
  const trIn = { hidden_states: cnIn.hidden_states!, encoder_hidden_states: cnIn.encoder_hidden_states! };
  return { cn, tr, w, cnIn, trIn };
}

async function runCnP(cnPlans: Plan[], trPlans: Plan[], w: Map<string, Float32Array>, cnIn: Record<string, Float32Array>, trIn: Record<string, Float32Array>) {
  return runShm(cnPlans.length, async (comm) => {
    const cn = new ParallelExecutor(comm, cnPlans[comm.rank]!, native, { threads: 1 });
    for (const x of cn.plan.weights) cn.bindWeight(x.name, w.get(x.name)!);
    for (const [k, v] of Object.entries(cnIn)) cn.setInput(k, v);
    await cn.forward();
    const sent = comm.bytesMoved;
    const tr = new ParallelExecutor(comm, trPlans[comm.rank]!, native, { threads: 1 });
    for (const x of tr.plan.weights) tr.bindWeight(x.name, w.get(x.name)!);
    for (const [k, v] of Object.entries(trIn)) tr.setInput(k, v);
    for (let i = 0; i < LAYERS; i++) tr.setInputShard(`controlnet_block_samples_${i}`, cn.shardedOutput(`block_samples_${i}`));
    await tr.forward();
    return { out: await tr.output('output'), cnBytes: sent };
  });
}

describe('ControlNet CP hook: plan format', () => {
  it('controlnet residuals are sharded outputs, the transformer takes them as residual splits', () => {
    const cn = compileParallelPlans(M, { component: 'controlnet', parallel: { ulysses_size: 3, ulysses_anything: true } });
    const tr = compileParallelPlans(M, { component: 'transformer', parallel: { ulysses_size: 3, ulysses_anything: true } });
    expect(cn[1]!.parallel!.sharded).toEqual({ block_samples_0: { axis: 1, sizes: [5, 4, 4] }, block_samples_1: { axis: 1, sizes: [5, 4, 4] } });
    expect(cn[1]!.parallel!.gather).toEqual({});
    expect(cn[1]!.outputs.map((o) => o.shape)).toEqual([
      [2, 4, 24],
      [2, 4, 24],
    ]);
    expect(tr[1]!.parallel!.split.controlnet_block_samples_0).toEqual({ axis: 1, sizes: [5, 4, 4], residual: true });
    expect(tr[1]!.inputs.find((i) => i.name === 'controlnet_block_samples_1')!.shape).toEqual([2, 4, 24]);
    expect(tr[1]!.parallel!.gather.output).toEqual({ axis: 1, sizes: [5, 4, 4] });
  });

  it('a token-split output that is neither gathered nor sharded is a compile-time error', () => {
    const cp = { split: { hidden_states: 1, controlnet_cond: 1 }, gather: {}, dims: { hidden_states: 'imageTokens', controlnet_cond: 'imageTokens' } };
    expect(() => compileParallelPlans(M, { component: 'controlnet', parallel: { ulysses_size: 2, ulysses_anything: true, controlnet_cp: cp } })).toThrow(
      /test-controlnet-cp controlnet: output 'block_samples_0' is token-split on a rank \(\[2, 7, 24\] of \[2, 13, 24\]\); gather it .* or declare it sharded \(cp\.sharded\)/,
    );
  });
});

describe.skipIf(!nativeAvailable())('ControlNet CP (CN-P) ranks reproduce the 1-rank controlnet + transformer', () => {
  it.each([2, 3])('%d ranks (shm), 13 tokens uneven (UAA), 3 heads', async (W) => {
    const { cn, tr, w, cnIn, trIn } = setup();
    const res = runNative(cn, w, cnIn, 1);
    const want = runNative(tr, w, { ...trIn, ...Object.fromEntries(Array.from({ length: LAYERS }, (_, i) => [`controlnet_block_samples_${i}`, res[`block_samples_${i}`]!])) }, 1).output!;
    const par = { ulysses_size: W, ulysses_anything: 'auto' as const };
    const outs = await runCnP(compileParallelPlans(M, { component: 'controlnet', parallel: par }), compileParallelPlans(M, { component: 'transformer', parallel: par }), w, cnIn, trIn);
    const errs = outs.map((o) => relL2(o.out, want));
    console.log(`controlnet CP ${W} ranks: rel L2 ${errs.map((e) => e.toExponential(2)).join(' ')}; controlnet bytes/rank ${outs.map((o) => o.cnBytes).join(' ')}`);
    // 1e-5: same float32 kernels on row subsets; the Ulysses all-to-alls move values exactly
    for (const e of errs) expect(e).toBeLessThan(1e-5);
  });

  it('a shard that does not follow the input split is refused, naming the input', async () => {
    const trPlans = compileParallelPlans(M, { component: 'transformer', parallel: { ulysses_size: 2, ulysses_anything: true } });
    const r = await runShm(2, async (comm) => {
      const tr = new ParallelExecutor(comm, trPlans[comm.rank]!, native, { threads: 1 });
      try {
        tr.setInputShard('controlnet_block_samples_0', { data: new Float32Array(2 * 7 * 24).fill(1), axis: 1, sizes: [6, 7] });
        return 'accepted';
      } catch (e) {
        return (e as Error).message;
      }
    });
    expect(r[0]).toMatch(/input "controlnet_block_samples_0" is split on axis 1 as \[7, 6\], the controlnet shard on axis 1 as \[6, 7\]/);
  });
});
