// Shared helpers of the multi-rank tests: run per-rank plans on shm coroutines (one thread, threads=1
// executors) and compare with the 1-rank plan.
import path from 'node:path';
import { expect } from 'vitest';
import { CacheEngine, type DBCacheConfig, ExecutorBlockListRunner, type ExecutorLike } from '../../runtime/cache/index.ts';
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { runShm } from '../../runtime/comm/shm.ts';
import { openSafetensors } from '../../runtime/io/safetensors.ts';
import { native } from '../../runtime/native.ts';
import { ParallelBlockListRunner } from '../../runtime/parallel/cache.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { relL2 } from '../../runtime/metrics.ts';
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

/**
 * Relative L2 of every rank's output against the 1-rank output `want`, logged under `label` (with the bytes
 * each rank sent when `bytes`); each must be below `tol` (default 1e-5, the fp32 bound of issue 4).
 */
export function expectRanksMatch(
  outs: { out: Float32Array; bytes: number }[],
  want: Float32Array,
  label: string,
  o: { tol?: number; bytes?: boolean } = {},
): number[] {
  const errs = outs.map((r) => relL2(r.out, want));
  console.log(`${label}: relL2 ${errs.map((e) => e.toExponential(2)).join(' ')}${o.bytes ? `, bytes/rank ${outs.map((r) => r.bytes).join(' ')}` : ''}`);
  for (const e of errs) expect(e).toBeLessThan(o.tol ?? 1e-5);
  return errs;
}

export interface CacheLoopOptions {
  steps: number;
  cache: DBCacheConfig;
  /** the timestep input of step s, from the given one */
  timestep: (s: number, v: Float32Array) => Float32Array;
}

export interface CacheLoopResult {
  cached: number[];
  /** Cache-DiT summary's residual diffs */
  diffs: unknown;
  /** every step's output */
  outs: Float32Array[];
}

/** `cacheLoop` on the 1-rank plan (native executor, 1 thread). */
export async function cacheLoopOneRank(plan: Plan, w: Map<string, Float32Array>, inputs: Record<string, Float32Array>, o: CacheLoopOptions): Promise<CacheLoopResult> {
  const ex = new native.Executor(JSON.stringify(plan), { threads: 1 });
  for (const x of plan.weights) ex.bindWeight(x.name, w.get(x.name)!);
  const runner = new ExecutorBlockListRunner(ex, plan, plan.segments.find((s) => s.name === 'blocks')!);
  return cacheLoop(ex, runner, async () => {
    const out = new Float32Array(plan.outputs[0]!.shape.reduce((a, b) => a * b, 1));
    ex.getOutput('output', out);
    return out;
  }, inputs, o);
}

/** `cacheLoop` on this rank's plan; `probes`: the all-reduced cache probes the rank issued. */
export async function cacheLoopOnRank(
  comm: Communicator,
  plan: Plan,
  w: Map<string, Float32Array>,
  inputs: Record<string, Float32Array>,
  o: CacheLoopOptions,
): Promise<CacheLoopResult & { probes: number }> {
  const pe = new ParallelExecutor(comm, plan, native, { threads: 1 });
  for (const x of plan.weights) pe.bindWeight(x.name, w.get(x.name)!);
  const runner = new ParallelBlockListRunner(comm, pe, plan, plan.segments.find((s) => s.name === 'blocks')!);
  const r = await cacheLoop(pe, runner, () => pe.output('output'), inputs, o);
  return { ...r, probes: runner.probes };
}

/**
 * A toy denoising loop with the cache engine over the `blocks` list: x <- x - 0.1 v (the output has the
 * hidden_states' shape).
 */
export async function cacheLoop(
  exec: ExecutorLike & { setInput(name: string, v: Float32Array): void },
  runner: ExecutorBlockListRunner,
  output: () => Promise<Float32Array>,
  inputs: Record<string, Float32Array>,
  o: CacheLoopOptions,
): Promise<CacheLoopResult> {
  const engine = new CacheEngine({ lists: [{ name: 'blocks', runner }], cache: o.cache });
  engine.refreshContext({ numInferenceSteps: o.steps });
  const x = Float32Array.from(inputs.hidden_states!);
  const outs: Float32Array[] = [];
  for (let s = 0; s < o.steps; s++) {
    for (const [k, v] of Object.entries(inputs)) exec.setInput(k, k === 'hidden_states' ? x : k === 'timestep' ? o.timestep(s, v) : v);
    await exec.run('embed');
    await engine.runList(0);
    await exec.run('head');
    const v = await output();
    for (let i = 0; i < x.length; i++) x[i] = Math.fround(x[i]! - 0.1 * v[i]!);
    outs.push(v);
  }
  const sum = engine.summary()[0]!;
  return { cached: sum.cached_steps, diffs: sum.residual_diffs, outs };
}
