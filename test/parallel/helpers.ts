// Shared helpers of the multi-rank tests: run per-rank plans on shm coroutines (one thread, threads=1
// executors) and compare with the 1-rank plan.
import path from 'node:path';
import { runShm } from '../../runtime/comm/shm.ts';
import { openSafetensors } from '../../runtime/io/safetensors.ts';
import { native } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { randomInputs, randomWeights } from '../helpers/random.ts';
import { runNative } from '../helpers/run-plan.ts';

export const TINY_FLUX = path.resolve('models/tiny-flux');

/** scaled-down FLUX.1-dev: guidance embeds, 6 heads x 16, 15 image + 7 text tokens (uneven over 2/4) */
export const FLUX_SCALED = {
  config: { num_layers: 2, num_single_layers: 2, num_attention_heads: 6, attention_head_dim: 16, axes_dims_rope: [4, 6, 6], joint_attention_dim: 48, pooled_projection_dim: 32, in_channels: 16 },
  dims: { height: 80, width: 48, textTokens: 7 },
};

export async function tinyFluxWeights(): Promise<Map<string, Float32Array>> {
  const f = await openSafetensors(path.join(TINY_FLUX, 'transformer', 'diffusion_pytorch_model.safetensors'));
  return new Map(f.names().map((n) => [n, f.tensor(n).data]));
}

export function inputsFor(plan: Plan, seed: number): Record<string, Float32Array> {
  return randomInputs(plan, seed);
}

export function randomW(plan: Plan, seed: number): Map<string, Float32Array> {
  return randomWeights(plan, seed);
}

export function runOneRank(plan: Plan, w: Map<string, Float32Array>, inputs: Record<string, Float32Array>): Float32Array {
  return runNative(plan, w, inputs, 1).output!;
}

/** Runs per-rank plans on shm coroutines; returns each rank's gathered output and bytes sent. */
export async function runRanks(
  plans: Plan[],
  w: Map<string, Float32Array>,
  inputs: Record<string, Float32Array>,
  opts: { fp8?: 'native' | 'host' } = {},
): Promise<{ out: Float32Array; bytes: number }[]> {
  return runShm(plans.length, async (comm) => {
    const pe = new ParallelExecutor(comm, plans[comm.rank]!, native, { threads: 1, ...opts });
    for (const x of pe.plan.weights) pe.bindWeight(x.name, w.get(x.name)!);
    for (const [k, v] of Object.entries(inputs)) pe.setInput(k, v);
    await pe.forward();
    return { out: await pe.output('output'), bytes: comm.bytesMoved };
  });
}
