// Multi-rank denoising-step benchmark: the mid-size FLUX transformer (random weights) lowered to Ulysses,
// ring, USP or tensor-parallel per-rank plans (compileParallelPlans) and run on 1, 2 and 4 shm ranks (worker threads,
// executor threads = BENCH_THREADS / world). Reports seconds per step, ms per step in comm ops and bytes
// each rank sends per step (all-to-alls / ring K,V + output all-gather), Ulysses with and without FP8.
// Weights live in SharedArrayBuffers shared by every rank.
// `benchParallelSteps()` is called by `npm run bench` (test/bench/run.ts, Ulysses only); run alone:
//   npx tsx test/bench/parallel.ts            (env BENCH_THREADS, BENCH_ITERS, BENCH_PARALLEL=ulysses,ring,usp,tp,
//                                              BENCH_WORLDS=1,2,4; writes bench/parallel.json)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import { compileParallelPlans } from '../../compiler/index.ts';
import type { Communicator } from '../../runtime/comm/communicator.ts';
import { launchShm } from '../../runtime/comm/shm.ts';
import { loadNative } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import type { Plan } from '../../runtime/plan.ts';
import { median, randomInputs, randomWeights } from './plan-data.ts';
import { MID_CONFIG, MID_DIMS } from './mid-config.ts';

const self = fileURLToPath(import.meta.url);

/**
 * how the transformer is parallelised: Ulysses all-to-alls, ring (K/V around the ring), USP (ulysses world/2
 * x ring 2), tp (tensor parallel: sharded linears, an all-reduce after each row-parallel one)
 */
export type ParallelKind = 'ulysses' | 'ring' | 'usp' | 'tp';

export interface ParallelStepBench {
  kind: ParallelKind;
  world: number;
  float8: boolean;
  uaa: boolean;
  threadsPerRank: number;
  /** median over the timed iterations, rank 0 (every rank steps together) */
  secPerStep: number;
  /** bytes rank 0 sends per step (all-to-alls / ring K,V + the output all-gather) */
  bytesPerStepRank0: number;
  /** ms per step rank 0 spends in comm ops (packing, FP8 quantisation, all-to-all, unpacking; ring/USP: the whole attention) */
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

export async function benchParallelSteps(opts: {
  model: string;
  config: Record<string, unknown>;
  dims: { batch: number; height: number; width: number; textTokens: number };
  threads: number;
  iters?: number;
  worlds?: number[];
  /** default ['ulysses'] */
  kinds?: ParallelKind[];
  log?: (s: string) => void;
}): Promise<ParallelStepBench[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const iters = opts.iters ?? 2;
  const base = { component: 'transformer' as const, config: opts.config, dims: opts.dims };
  const out: ParallelStepBench[] = [];
  let weights: Record<string, Float32Array> | null = null;
  let inputs: Record<string, Float32Array> | null = null;
  for (const kind of opts.kinds ?? ['ulysses']) for (const world of opts.worlds ?? [1, 2, 4]) {
    if (kind === 'usp' && world < 4) continue; // USP needs ulysses >= 2 and ring >= 2
    if (kind !== 'ulysses' && world === 1 && (opts.kinds ?? ['ulysses']).includes('ulysses')) continue; // the same 1-rank plan
    for (const float8 of world === 1 || kind !== 'ulysses' ? [false] : [false, true]) {
      const threads = Math.max(1, Math.floor(opts.threads / world));
      const row: ParallelStepBench = { kind, world, float8, uaa: false, threadsPerRank: threads, secPerStep: NaN, bytesPerStepRank0: 0, commMsPerStep: 0 };
      try {
        const parallel =
          kind === 'ulysses'
            ? { ulysses_size: world, ulysses_anything: 'auto' as const, ulysses_float8: float8 }
            : kind === 'ring'
              ? { ring_size: world }
              : kind === 'tp'
                ? { tp_size: world }
                : { ulysses_size: world / 2, ring_size: 2 };
        const plans = compileParallelPlans(opts.model, { ...base, parallel });
        row.uaa = plans[0]!.parallel!.anything;
        // full (1-rank) weights: TP ranks cut their slices in ParallelExecutor.bindWeight
        const one = compileParallelPlans(opts.model, { ...base, parallel: { ulysses_size: 1 } })[0]!;
        weights ??= Object.fromEntries(randomWeights(one, (n) => new Float32Array(new SharedArrayBuffer(n * 4))));
        inputs ??= randomInputs(one, opts.dims);
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
        `${kind} world ${world}${float8 ? ' fp8' : ''}${row.uaa ? ' UAA' : ''} (${threads} thread/rank): ` +
          (row.error ? `error: ${row.error}` : `${row.secPerStep.toFixed(3)} s/step, ${(row.bytesPerStepRank0 / 2 ** 20).toFixed(2)} MiB sent/step by rank 0, comm ${row.commMsPerStep.toFixed(0)} ms/step`),
      );
    }
  }
  return out;
}

/** standalone: the mid-size config, every kind (BENCH_PARALLEL), writes bench/parallel.json */
if (isMainThread && process.argv[1] && path.resolve(process.argv[1]) === self) {
  const kinds = (process.env.BENCH_PARALLEL ?? 'ulysses,ring,usp,tp').split(',').filter(Boolean) as ParallelKind[];
  for (const k of kinds) if (!['ulysses', 'ring', 'usp', 'tp'].includes(k)) throw new Error(`BENCH_PARALLEL: unknown kind '${k}' (valid: ulysses, ring, usp, tp)`);
  const worlds = (process.env.BENCH_WORLDS ?? '1,2,4').split(',').map(Number);
  for (const w of worlds) if (!Number.isInteger(w) || w < 1) throw new Error(`BENCH_WORLDS: bad world size '${w}' (comma list of positive integers)`);
  const threads = Number(process.env.BENCH_THREADS ?? os.availableParallelism());
  const rows = await benchParallelSteps({
    model: 'flux1-dev',
    config: MID_CONFIG,
    dims: MID_DIMS,
    threads,
    iters: Number(process.env.BENCH_ITERS ?? 3),
    worlds,
    kinds,
    log: (s) => process.stderr.write(s + '\n'),
  });
  const out = path.join(path.dirname(self), '../../bench/parallel.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(rows, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}
