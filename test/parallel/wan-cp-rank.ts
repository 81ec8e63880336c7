// Shared by test/parallel/wan-cp.test.ts and its mpi ranks (launchRanks runs `wanCpRank` in every process):
// the scaled-down Wan 2.1 config, its inputs and one rank's run of the CP plans against the 1-rank plan.
import { compilePlan, compileParallelPlans } from '../../compiler/index.ts';
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { native } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import { relL2 } from '../../runtime/metrics.ts';
import type { Plan } from '../../runtime/plan.ts';
import { videoRopeIds } from '../../runtime/latents.ts';
import { randomInputs, randomWeights, rng } from '../helpers/random.ts';
import { runOneRank } from './helpers.ts';

export const WAN = 'wan2.1-t2v-1.3b';

/**
 * 2 blocks, `heads` x 24 (Wan's RoPE split needs D in {24, 48, 128, ..}), batch 2, 9 frames of 48x80 ->
 * 3x3x5 = 45 video tokens (uneven over 2 and 4 ranks; width 96: 3x3x6 = 54), 7 text tokens
 */
export function wanScaled(heads: number, width = 80) {
  return {
    component: 'transformer' as const,
    config: { num_layers: 2, num_attention_heads: heads, attention_head_dim: 24, ffn_dim: 100, text_dim: 40, freq_dim: 32, in_channels: 5, out_channels: 3 },
    dims: { batch: 2, frames: 9, height: 48, width, textTokens: 7 },
  };
}

/** random inputs with Wan's meaning: RoPE ids of the patch grid, scheduler timesteps in [50, 950] */
export function wanInputs(plan: Plan, seed: number): Record<string, Float32Array> {
  const ins = randomInputs(plan, seed);
  const d = plan.dims;
  const r = rng(seed + 1);
  ins.rope_ids = videoRopeIds(d.tokensF!, d.tokensH!, d.tokensW!);
  ins.timestep = Float32Array.from({ length: d.B! }, () => 50 + 900 * r());
  return ins;
}

/** one rank (mpi): compiles its plans, runs them and returns the rel L2 of the output vs the 1-rank plan */
export async function wanCpRank(comm: Communicator, args: { heads: number; anything: boolean | 'auto' }): Promise<{ err: number; anything: boolean }> {
  const opts = wanScaled(args.heads);
  const ref = compilePlan(WAN, opts);
  const w = randomWeights(ref, 21);
  const ins = wanInputs(ref, 22);
  const want = runOneRank(ref, w, ins);
  const plans = compileParallelPlans(WAN, { ...opts, parallel: { ulysses_size: comm.worldSize, ulysses_anything: args.anything } });
  const pe = new ParallelExecutor(comm, plans[comm.rank]!, native, { threads: 1 });
  for (const x of pe.plan.weights) pe.bindWeight(x.name, w.get(x.name)!);
  for (const [k, v] of Object.entries(ins)) pe.setInput(k, v);
  await pe.forward();
  return { err: relL2(await pe.output('output'), want), anything: pe.plan.parallel!.anything };
}
