// Multi-rank WanPipeline: every rank is the one-rank WanPipeline whose transformer runs the rank's plan of
// a parallel lowering (Ulysses / ring / USP over the Wan CP plan, or TP over its TP plan: models/wan2.1.ts)
// through a ParallelExecutor; UMT5 runs on every rank, rank 0 decodes. The plans, the request and rank 0's
// result travel as launchRanks arguments and return values (no files): worker threads get them structured-
// cloned, mpirun processes as JSON, with the float arrays as base64.
import { fileURLToPath } from 'node:url';
import type { Communicator } from '../comm/communicator.ts';
import { launchRanks, type CommBackend } from '../comm/index.ts';
import { familyOf, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Plan } from '../plan.ts';
import type { PlanProvider } from '../pipeline.ts';
import { parallelRequest, type ParallelOptions, type ParallelPlanProvider } from '../pipeline-parallel.ts';
import { loadWanPipeline, type VideoGenerateOptions, type VideoGenerateResult } from './wan.ts';

export interface WanParallelRequest extends VideoGenerateOptions, ParallelOptions {
  /** executor threads per rank (default 1) */
  threads?: number;
  parallelPlanProvider?: ParallelPlanProvider;
  /** per-rank transformer plans (else `parallelPlanProvider`) */
  transformerPlans?: Plan[];
  /** UMT5 / VAE plans for sizes with no shipped plan */
  planProvider?: PlanProvider;
  generatedDir: string;
  jobTimeoutMs?: number;
}

export interface WanRankStats {
  rank: number;
  bytesPerStep: number;
  perStep: number;
  cachedSteps?: number[];
  cfgCachedSteps?: number[];
}

export interface WanParallelResult extends VideoGenerateResult {
  world: number;
  backend: CommBackend;
  parallel: NonNullable<Plan['parallel']>;
  ranks: WanRankStats[];
}

const toB64 = (a: Float32Array | Uint8Array | Int32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const bytesOf = (s: string): Buffer => Buffer.from(s, 'base64');
const f32 = (s: string): Float32Array => {
  const b = bytesOf(s);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

interface RankArgs {
  dir: string;
  threads: number;
  generatedDir: string;
  transformer: Plan[];
  text_encoder: Plan;
  vae: Plan[];
  /** the request without its float arrays */
  opts: Omit<VideoGenerateOptions, 'latents' | 'onStep'>;
  latents: string | null;
}

/** rank 0's result with its arrays as base64 */
interface EncodedResult extends Omit<VideoGenerateResult, 'videos' | 'latents' | 'timesteps' | 'sigmas'> {
  videos: string[];
  latents: string;
  timesteps: string;
  sigmas: string;
}

interface RankResult extends WanRankStats {
  result: EncodedResult | null;
}

/** Starts `world` ranks on `comm` for one Wan request; returns rank 0's result and every rank's statistics. */
export async function generateWanParallel(dir: string, family: PipelineFamily, req: WanParallelRequest): Promise<WanParallelResult> {
  const world = req.world;
  const backend: CommBackend = req.comm ?? 'shm';
  if (backend !== 'shm' && backend !== 'mpi') throw new UserError(`--comm must be shm or mpi, got "${String(backend)}"`);
  const preq = parallelRequest(req);
  if (preq.extra_parallel_modules?.length) throw new UserError(`--parallel-text / --parallel-vae are not supported for ${family.pipelineClass} yet (UMT5 runs on every rank, rank 0 decodes)`);
  const host = loadWanPipeline(dir, { generatedDir: req.generatedDir, ...(req.planProvider ? { planProvider: req.planProvider } : {}) }, family);
  const r = host.resolve(req);
  let tPlans = req.transformerPlans;
  if (!tPlans) {
    if (!req.parallelPlanProvider) throw new UserError('multi-rank generate needs per-rank transformer plans: pass transformerPlans or parallelPlanProvider (the CLI compiles them)');
    const request = host.transformerRequest(r.batch, r.height, r.width, r.numFrames, r.tokens);
    tPlans = await req.parallelPlanProvider('transformer', { batch: r.batch, height: r.height, width: r.width, textTokens: r.tokens }, preq, request);
  }
  if (tPlans.length !== world) throw new Error(`got ${tPlans.length} transformer plans for ${world} ranks`);
  const local = await host.localPlans(r);
  const { latents, onStep: _onStep, ...opts } = req;
  const args: RankArgs = {
    dir,
    threads: req.threads ?? 1,
    generatedDir: req.generatedDir,
    transformer: tPlans,
    text_encoder: local.text_encoder,
    vae: local.vae,
    opts: {
      prompt: opts.prompt,
      steps: r.steps,
      height: r.height,
      width: r.width,
      numFrames: r.numFrames,
      batch: r.batch,
      seed: r.seed,
      guidanceScale: r.guidanceScale,
      maxSequenceLength: r.tokens,
      ...(opts.negativePrompt !== undefined ? { negativePrompt: opts.negativePrompt } : {}),
      ...(opts.cache ? { cache: opts.cache } : {}),
    },
    latents: latents ? toB64(latents) : null,
  };
  const results = await launchRanks<RankResult>(world, {
    backend,
    module: fileURLToPath(import.meta.url),
    exportName: 'wanParallelRank',
    args,
    ...(req.jobTimeoutMs ? { jobTimeoutMs: req.jobTimeoutMs } : {}),
  });
  const e = results[0]!.result!;
  return {
    ...e,
    videos: e.videos.map((v) => new Uint8Array(bytesOf(v))),
    latents: f32(e.latents),
    timesteps: (() => {
      const b = bytesOf(e.timesteps);
      return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    })(),
    sigmas: f32(e.sigmas),
    world,
    backend,
    parallel: tPlans[0]!.parallel!,
    ranks: results.map(({ result: _r, ...stats }) => stats),
  };
}

/** One rank (launchRanks entry): the one-rank pipeline with this rank's transformer plan. */
export async function wanParallelRank(comm: Communicator, a: RankArgs): Promise<RankResult> {
  const pipe = loadWanPipeline(
    a.dir,
    { threads: a.threads, generatedDir: a.generatedDir, plans: { text_encoder: a.text_encoder, vae: a.vae }, rank: { comm, transformerPlan: a.transformer[comm.rank]! } },
    familyOf(a.dir),
  );
  comm.resetStats();
  const r = await pipe.generate({ ...a.opts, ...(a.latents ? { latents: f32(a.latents) } : {}), decode: comm.rank === 0 });
  const bytesPerStep = comm.stats.bytesSent / r.steps;
  await comm.barrier();
  const first = r.cache?.summary[0];
  return {
    rank: comm.rank,
    bytesPerStep,
    perStep: r.timings.perStep,
    ...(first ? { cachedSteps: first.cached_steps ?? [], cfgCachedSteps: first.cfg_cached_steps ?? [] } : {}),
    result:
      comm.rank === 0
        ? { ...r, videos: r.videos.map(toB64), latents: toB64(r.latents), timesteps: toB64(r.timesteps), sigmas: toB64(r.sigmas) }
        : null,
  };
}
