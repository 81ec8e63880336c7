// Multi-rank denoising-step benchmark: the mid-size FLUX transformer (random weights) lowered to Ulysses
// per-rank plans (compileParallelPlans) and run on 1, 2 and 4 shm ranks (worker threads, executor threads
// = BENCH_THREADS / world). Reports seconds per step and bytes each rank sends per step (all-to-alls +
// output all-gather) with and without FP8. Weights live in SharedArrayBuffers shared by every rank.
// `benchParallelSteps()` is called by `npm run bench` (test/bench/run.ts).
import { fileURLToPath } from 'node:url';
import { compileParallelPlans } from '../../compiler/index.ts';
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { launchShm } from '../../runtime/comm/shm.ts';
import { imageIds, textIds } from '../../runtime/latents.ts';
import { loadNative } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { rng as uniform } from '../helpers/random.ts';

const self = fileURLToPath(import.meta.url);

export interface ParallelStepBench {
  world: number;
  float8: boolean;
  uaa: boolean;
  threadsPerRank: number;
  /** median over the timed iterations, rank 0 (every rank steps together) */
  secPerStep: number;
  /** bytes rank 0 sends per step (Ulysses all-to-alls + the output all-gather) */
  bytesPerStepRank0: number;
  /** ms per step rank 0 spends in comm ops (packing, FP8 quantisation, all-to-all, unpacking) */
  commMsPerStep: number;
  error?: string;
}

interface RankArgs {
  plans: Plan[];
  weights: Record<string, Float32Array>;
  inputs: Record<string, Float32Array>;
  iters: number;
  threads: number;
}

/** one rank: warm-up step, then `iters` timed steps */
export async function parallelStepRank(comm: Communicator, a: RankArgs): Promise<{ runs: number[]; bytes: number; commMs: number }> {
  const plan = a.plans[comm.rank]!;
  const pe = new ParallelExecutor(comm, plan, loadNative(), { threads: a.threads });
  for (const w of plan.weights) pe.bindWeight(w.name, a.weights[w.name]!);
  const step = async () => {
    for (const io of plan.inputs) pe.setInput(io.name, a.inputs[io.name]!);
    await pe.forward();
    await pe.output('output');
  };
  await step();
  await comm.barrier();
  comm.resetStats();
  pe.stats.commMs = 0;
  const runs: number[] = [];
  for (let i = 0; i < a.iters; i++) {
    const t0 = performance.now();
    await step();
    runs.push((performance.now() - t0) / 1000);
  }
  return { runs, bytes: comm.stats.bytesSent / a.iters, commMs: pe.stats.commMs / a.iters };
}

function sharedWeights(plan: Plan): Record<string, Float32Array> {
  const u = uniform(1234);
  const r = () => u() * 2 - 1;
  const out: Record<string, Float32Array> = {};
  for (const w of plan.weights) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(new SharedArrayBuffer(n * 4));
    if (w.shape.length >= 2) {
      const bound = 1 / Math.sqrt(w.shape.slice(1).reduce((x, y) => x * y, 1));
      for (let i = 0; i < n; i++) a[i] = r() * bound;
    } else if (/norm/.test(w.name) && w.name.endsWith('weight')) for (let i = 0; i < n; i++) a[i] = 1 + 0.1 * r();
    else for (let i = 0; i < n; i++) a[i] = 0.02 * r();
    out[w.name] = a;
  }
  return out;
}

function fullInputs(plan: Plan, dims: { height: number; width: number; textTokens: number }): Record<string, Float32Array> {
  const u = uniform(99);
  const ins: Record<string, Float32Array> = {};
  for (const io of plan.inputs) {
    const n = io.shape.reduce((a, b) => a * b, 1);
    if (io.name === 'img_ids') {
      const h2 = Math.round(Math.sqrt((io.shape[0]! * dims.height) / dims.width));
      ins[io.name] = imageIds(h2, io.shape[0]! / h2);
    } else if (io.name === 'txt_ids') ins[io.name] = textIds(dims.textTokens);
    else if (io.name === 'timestep') ins[io.name] = new Float32Array(n).fill(0.7);
    else ins[io.name] = Float32Array.from({ length: n }, () => u() * 2 - 1);
  }
  return ins;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function benchParallelSteps(opts: {
  model: string;
  config: Record<string, unknown>;
  dims: { batch: number; height: number; width: number; textTokens: number };
  threads: number;
  iters?: number;
  worlds?: number[];
  log?: (s: string) => void;
}): Promise<ParallelStepBench[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const iters = opts.iters ?? 2;
  const base = { component: 'transformer' as const, config: opts.config, dims: opts.dims };
  const out: ParallelStepBench[] = [];
  let weights: Record<string, Float32Array> | null = null;
  let inputs: Record<string, Float32Array> | null = null;
  for (const world of opts.worlds ?? [1, 2, 4]) {
    for (const float8 of world === 1 ? [false] : [false, true]) {
      const threads = Math.max(1, Math.floor(opts.threads / world));
      const row: ParallelStepBench = { world, float8, uaa: false, threadsPerRank: threads, secPerStep: NaN, bytesPerStepRank0: 0, commMsPerStep: 0 };
      try {
        const plans = compileParallelPlans(opts.model, { ...base, parallel: { ulysses_size: world, ulysses_anything: 'auto', ulysses_float8: float8 } });
        row.uaa = plans[0]!.parallel!.anything;
        weights ??= sharedWeights(plans[0]!);
        inputs ??= fullInputs(compileParallelPlans(opts.model, { ...base, parallel: { ulysses_size: 1 } })[0]!, opts.dims);
        const res = await launchShm<{ runs: number[]; bytes: number; commMs: number }>(world, {
          module: self,
          exportName: 'parallelStepRank',
          args: { plans, weights, inputs, iters: float8 ? 1 : iters, threads } satisfies RankArgs,
        });
        row.secPerStep = median(res[0]!.runs);
        row.bytesPerStepRank0 = res[0]!.bytes;
        row.commMsPerStep = res[0]!.commMs;
      } catch (e) {
        row.error = (e as Error).message;
      }
      out.push(row);
      log(
        `ulysses world ${world}${float8 ? ' fp8' : ''}${row.uaa ? ' UAA' : ''} (${threads} thread/rank): ` +
          (row.error ? `error: ${row.error}` : `${row.secPerStep.toFixed(3)} s/step, ${(row.bytesPerStepRank0 / 2 ** 20).toFixed(2)} MiB sent/step by rank 0, comm ${row.commMsPerStep.toFixed(0)} ms/step`),
      );
    }
  }
  return out;
}
