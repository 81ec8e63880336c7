// Multi-rank generate for the pipeline families with their own pipeline class (WanPipeline,
// QwenImagePipeline): every rank is the one-rank pipeline whose transformer runs the rank's plans of a
// parallel lowering (Ulysses / ring / USP over the family's CP plan, or TP over its TP plan) on rank
// executors; the text encoder runs on every rank, rank 0 decodes. The plans, the request and rank 0's result
// travel as launchRanks arguments and return values (runtime/parallel/wire.ts; no files between threads).
import { fileURLToPath } from 'node:url';
import type { Communicator } from '../comm/communicator.ts';
import { launchRanks, type CommBackend } from '../comm/index.ts';
import { familyOf, UserError, type PipelineFamily } from '../model-dir.ts';
import { fromWire, toWire } from '../parallel/wire.ts';
import type { Plan } from '../plan.ts';
import type { PlanProvider } from '../pipeline.ts';
import { parallelRequest, type ParallelOptions, type ParallelPlanProvider } from '../pipeline-parallel.ts';
import { loadQwenImagePipeline, type QwenImageGenerateOptions, type QwenImageResult } from './qwen-image.ts';
import type { RankOption, RankPrep } from './rank-option.ts';
import { loadWanPipeline, type VideoGenerateOptions, type VideoGenerateResult } from './wan.ts';

type FamilyOptions = VideoGenerateOptions | QwenImageGenerateOptions;
type FamilyResult = VideoGenerateResult | QwenImageResult;

interface RankPipeline {
  prepareRanks(opts: FamilyOptions): Promise<RankPrep>;
  generate(opts: FamilyOptions & { decode?: boolean }): Promise<FamilyResult & { cache?: { summary: { cached_steps?: number[]; cfg_cached_steps?: number[] }[] } }>;
}

function load(dir: string, family: PipelineFamily, o: { threads?: number; generatedDir: string; planProvider?: PlanProvider; plans?: RankPrep['plans']; rank?: RankOption }): RankPipeline {
  const opts = { generatedDir: o.generatedDir, ...(o.threads ? { threads: o.threads } : {}), ...(o.planProvider ? { planProvider: o.planProvider } : {}), ...(o.plans ? { plans: o.plans } : {}), ...(o.rank ? { rank: o.rank } : {}) };
  if (family.pipelineClass === 'WanPipeline') return loadWanPipeline(dir, opts, family) as unknown as RankPipeline;
  if (family.pipelineClass === 'QwenImagePipeline') return loadQwenImagePipeline(dir, opts, family) as unknown as RankPipeline;
  throw new UserError(`${dir}: ${family.pipelineClass} has no multi-rank path here (runtime/pipeline-parallel.ts runs FluxPipeline)`);
}

export interface RanksRequest extends ParallelOptions {
  /** executor threads per rank (default 1) */
  threads?: number;
  parallelPlanProvider?: ParallelPlanProvider;
  /** text encoder / VAE plans for sizes with no shipped plan */
  planProvider?: PlanProvider;
  generatedDir: string;
  jobTimeoutMs?: number;
}

export interface RankStatsLite {
  rank: number;
  bytesPerStep: number;
  perStep: number;
  cachedSteps?: number[];
  cfgCachedSteps?: number[];
}

export interface RanksResult {
  world: number;
  backend: CommBackend;
  parallel: NonNullable<Plan['parallel']>;
  ranks: RankStatsLite[];
}

interface RankArgs {
  dir: string;
  threads: number;
  generatedDir: string;
  plans: RankPrep['plans'];
  /** per rank: its transformer plan per text token count */
  transformer: Record<number, Plan>[];
  opts: Record<string, unknown>;
}

interface RankResult extends RankStatsLite {
  result: unknown;
}

/** Starts `world` ranks on `comm` for one request of a Wan or Qwen-Image directory; rank 0's result and every rank's statistics. */
export async function generateOnRanks<O extends FamilyOptions, R extends FamilyResult>(dir: string, family: PipelineFamily, req: O & RanksRequest): Promise<R & RanksResult> {
  const world = req.world;
  const backend: CommBackend = req.comm ?? 'shm';
  if (backend !== 'shm' && backend !== 'mpi') throw new UserError(`--comm must be shm or mpi, got "${String(backend)}"`);
  const preq = parallelRequest(req);
  if (preq.extra_parallel_modules?.length) throw new UserError(`--parallel-text / --parallel-vae are not supported for ${family.pipelineClass} yet (the text encoder runs on every rank, rank 0 decodes)`);
  if (!req.parallelPlanProvider) throw new UserError('multi-rank generate needs per-rank transformer plans: pass parallelPlanProvider (the CLI compiles them)');
  const { world: _w, comm: _c, parallel: _p, ulyssesAnything: _ua, ulyssesFloat8: _uf, ulyssesAsync: _us, parallelText: _pt, parallelVae: _pv, threads, parallelPlanProvider, planProvider, generatedDir, jobTimeoutMs, ...opts } = req;
  const host = load(dir, family, { generatedDir, ...(planProvider ? { planProvider } : {}) });
  const prep = await host.prepareRanks(opts as FamilyOptions);
  const transformer: Record<number, Plan>[] = Array.from({ length: world }, () => ({}));
  let parallel: Plan['parallel'] | undefined;
  for (const [tokens, request] of Object.entries(prep.transformer)) {
    const d = request.dims;
    const plans = await parallelPlanProvider('transformer', { batch: d.batch ?? 1, height: d.height ?? 0, width: d.width ?? 0, textTokens: d.textTokens ?? 0 }, preq, request);
    if (plans.length !== world) throw new Error(`got ${plans.length} transformer plans for ${world} ranks`);
    plans.forEach((p, r) => (transformer[r]![Number(tokens)] = p));
    parallel = plans[0]!.parallel;
  }
  const latents = (opts as { latents?: Float32Array }).latents;
  const args: RankArgs = { dir, threads: threads ?? 1, generatedDir, plans: prep.plans, transformer, opts: { ...prep.opts, ...(latents ? { latents } : {}) } };
  const results = await launchRanks<RankResult>(world, {
    backend,
    module: fileURLToPath(import.meta.url),
    exportName: 'pipelineRank',
    args: toWire(args),
    ...(jobTimeoutMs ? { jobTimeoutMs } : {}),
  });
  return { ...fromWire<R>(results[0]!.result), world, backend, parallel: parallel!, ranks: results.map(({ result: _r, ...stats }) => stats) };
}

/** One rank (launchRanks entry): the family's one-rank pipeline with this rank's transformer plans. */
export async function pipelineRank(comm: Communicator, wired: unknown): Promise<RankResult> {
  const a = fromWire<RankArgs>(wired);
  const pipe = load(a.dir, familyOf(a.dir), { threads: a.threads, generatedDir: a.generatedDir, plans: a.plans, rank: { comm, transformerPlans: a.transformer[comm.rank]! } });
  comm.resetStats();
  const r = await pipe.generate({ ...(a.opts as unknown as FamilyOptions), decode: comm.rank === 0 });
  const bytesPerStep = comm.stats.bytesSent / r.steps;
  await comm.barrier();
  const first = r.cache?.summary[0];
  return {
    rank: comm.rank,
    bytesPerStep,
    perStep: r.timings.perStep,
    ...(first ? { cachedSteps: first.cached_steps ?? [], cfgCachedSteps: first.cfg_cached_steps ?? [] } : {}),
    result: comm.rank === 0 ? toWire(r) : null,
  };
}
