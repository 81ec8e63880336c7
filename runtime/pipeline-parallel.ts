// Multi-rank generate for every pipeline family (Cache-DiT context parallelism, cache-dit.md §4): N ranks
// (shm worker threads or mpirun processes), each the one Pipeline (runtime/pipeline.ts) whose transformer
// runs the rank's plan of a parallel lowering (plan.parallel, docs/architecture.md §3c) on a
// ParallelExecutor: inputs split at entry, Ulysses all-to-alls around every attention, output
// all-gathered, so every rank holds the full velocity and steps the same latents. `--parallel tp` runs the
// tensor-parallel lowering instead (compiler/passes/tp-lower.ts: sharded linears + all-reduces; every rank
// loads only its weight slices), the `*_tp` / `tp_*` hybrids Cache-DiT's (ring, ulysses, tp) mesh
// (rank = cpRank * tp + tpRank).
// Text encoders: replicated on every rank; --parallel-text is TE-P: each text encoder tensor-parallel over
// all ranks (its component TP plan; heads must divide the world size).
// Being the one-rank pipeline, a rank runs CFG (cond, then uncond) and caching (the one-rank session,
// separate CFG contexts, over block-list runners whose probe sums are all-reduced) exactly as one rank does.
// VAE: rank 0 decodes (tiled with --vae-tiling); --parallel-vae is VAE-P where the family has it (FLUX,
// runtime/vae-tiling.ts): tiling on, tile #c decoded by rank c % W, rank 0 blends and stitches, the image is
// passed down the rank chain so every rank has it (bit-identical to the 1-rank tiled decode). Plans, the
// request and rank 0's result travel as launchRanks arguments and return values (runtime/parallel/wire.ts:
// no files between threads); a rank that dies makes the others fail within the communicator's bounded wait
// with an error naming it.
import { decodeRequestImages } from './image-input.ts';
import { createHash } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Flux2GenerateOptions } from './pipelines/flux2.ts';
import type { Communicator } from './comm/communicator.ts';
import { launchRanks, type CommBackend } from './comm/index.ts';
import { fromWire, toWire } from './parallel/wire.ts';
import type { Component, Plan } from './plan.ts';
import { loadPipeline, UserError, type GenerateOptions, type GenerateResult, type Pipeline, type PlanDims, type PlanProvider, type PlanRequest } from './pipeline.ts';
import type { QwenImageGenerateOptions } from './pipelines/qwen-image.ts';
import type { PlanNeed } from './pipelines/spec.ts';
import type { LoraSpec } from './lora.ts';
import type { VideoGenerateOptions } from './pipelines/wan.ts';

/** Cache-DiT's `--parallel` spellings (cache-dit.md §5.2). */
export const PARALLEL_KINDS = ['ulysses', 'ring', 'usp', 'tp', 'ulysses_tp', 'ring_tp', 'tp_ulysses', 'tp_ring', 'usp_tp'] as const;
export type ParallelKind = (typeof PARALLEL_KINDS)[number];

/** The ParallelPlan fields a parallel provider needs (compiler/dsl/plans.ts ParallelPlan subset). */
export interface ParallelRequest {
  ulysses_size?: number;
  ring_size?: number;
  tp_size?: number;
  /** 'auto': on only where the sizes need it (the default with --world > 1 and no --parallel) */
  ulysses_anything?: boolean | 'auto';
  ulysses_float8?: boolean;
  ulysses_async?: boolean;
  extra_parallel_modules?: ('text_encoder' | 'vae' | 'controlnet')[];
}

/** Per-rank plans for a component (the CLI passes the compiler's compileParallelPlans). */
export type ParallelPlanProvider = (component: Component, dims: PlanDims, parallel: ParallelRequest, request: PlanRequest) => Plan[] | Promise<Plan[]>;

export interface ParallelOptions {
  world: number;
  /** 'shm' (worker threads, default) or 'mpi' (mpirun processes) */
  comm?: CommBackend;
  /** default with world > 1: 'ulysses' with UAA where the sizes need it */
  parallel?: ParallelKind;
  ulyssesAnything?: boolean;
  ulyssesFloat8?: boolean;
  ulyssesAsync?: boolean;
  parallelText?: boolean;
  parallelVae?: boolean;
}

/** Cache-DiT's sizes for a `--parallel` kind over `world` ranks (cache-dit.md §5.2). */
export function parallelRequest(o: ParallelOptions): ParallelRequest {
  const W = o.world;
  if (!Number.isInteger(W) || W < 1) throw new UserError(`--world must be an integer >= 1, got ${W}`);
  const kind = o.parallel ?? 'ulysses';
  if (!(PARALLEL_KINDS as readonly string[]).includes(kind)) throw new UserError(`--parallel must be one of ${PARALLEL_KINDS.join(', ')}; got "${kind}"`);
  const half = (what: string): number => {
    if (W % 2 !== 0 || W < 4) throw new UserError(`--parallel ${what} needs an even world size >= 4, got ${W}`);
    return W / 2;
  };
  let req: ParallelRequest;
  switch (kind) {
    case 'ulysses':
      req = { ulysses_size: W };
      break;
    case 'ring':
      req = { ring_size: W };
      break;
    case 'tp':
      req = { tp_size: W };
      break;
    case 'usp':
      req = { ulysses_size: half('usp'), ring_size: 2 };
      break;
    case 'ulysses_tp':
      req = { ulysses_size: half('ulysses_tp'), tp_size: 2 };
      break;
    case 'tp_ulysses':
      req = { tp_size: half('tp_ulysses'), ulysses_size: 2 };
      break;
    case 'ring_tp':
      req = { ring_size: half('ring_tp'), tp_size: 2 };
      break;
    case 'tp_ring':
      req = { tp_size: half('tp_ring'), ring_size: 2 };
      break;
    case 'usp_tp':
      if (W !== 8) throw new UserError(`--parallel usp_tp needs --world 8 (2 x 2 x 2), got ${W}`);
      req = { ulysses_size: 2, ring_size: 2, tp_size: 2 };
      break;
  }
  req.ulysses_anything = o.ulyssesAnything ? true : o.parallel === undefined ? 'auto' : false;
  if (o.ulyssesFloat8) req.ulysses_float8 = true;
  if (o.ulyssesAsync) req.ulysses_async = true;
  const extra: ('text_encoder' | 'vae')[] = [];
  if (o.parallelText) extra.push('text_encoder');
  if (o.parallelVae) extra.push('vae');
  if (extra.length) req.extra_parallel_modules = extra;
  // CP x TP hybrids run on Cache-DiT's (ring, ulysses, tp) mesh: rank = cpRank * tp + tpRank
  if (kind === 'tp') {
    if (o.ulyssesAnything || o.ulyssesFloat8 || o.ulyssesAsync) throw new UserError('--ulysses-anything / --ulysses-float8 / --ulysses-async apply to Ulysses; they cannot be combined with --parallel tp');
    req.ulysses_anything = false;
  }
  if ((req.ring_size ?? 1) > 1) {
    if (o.ulyssesAnything) throw new UserError(`--ulysses-anything cannot be combined with --parallel ${kind} (Cache-DiT UAA is Ulysses-only)`);
    if (o.ulyssesAsync) throw new UserError(`--ulysses-async cannot be combined with --parallel ${kind}: async Ulysses overlaps the Ulysses all-to-alls only (ring attention runs synchronously)`);
    req.ulysses_anything = false;
  }
  return req;
}

/** every family's generate options (each family reads its own) */
export type AnyGenerateOptions = Omit<GenerateOptions, 'image'> & { image?: Flux2GenerateOptions['image'] } & Omit<VideoGenerateOptions, keyof GenerateOptions> & Omit<QwenImageGenerateOptions, keyof GenerateOptions>;

export interface ParallelGenerateRequest extends AnyGenerateOptions, ParallelOptions {
  /** executor threads per rank (default: cores / world, at least 1) */
  threads?: number;
  /** per-rank transformer plans (else `parallelPlanProvider`) */
  transformerPlans?: Plan[];
  parallelPlanProvider?: ParallelPlanProvider;
  /** text encoder / VAE plans for sizes with no shipped plan */
  planProvider?: PlanProvider;
  generatedDir?: string;
  /** mpi only: kill the job after this long (ms) */
  jobTimeoutMs?: number;
  /** tests: rank `rank` exits abruptly (process.exit, i.e. its thread or process dies) before step `step` */
  faultInjection?: { rank: number; step: number };
  /** LoRA adapters fused into the transformer's weights on every rank */
  lora?: LoraSpec[];
}

export interface RanksInfo {
  world: number;
  backend: CommBackend;
  /** the lowering every rank ran */
  parallel: NonNullable<Plan['parallel']>;
  /**
   * per rank: bytes sent per denoising step, ms in comm ops per step, ms per step; `decodedSha256` of the
   * output the rank holds (null where it has none: without --parallel-vae only rank 0 decodes); with caching
   * the rank's cached steps per branch (first block list)
   */
  ranks: RankStats[];
}

export type ParallelGenerateResult<R = GenerateResult> = R & RanksInfo;

export interface RankStats {
  rank: number;
  bytesPerStep: number;
  commMsPerStep: number;
  perStep: number;
  decodedSha256: string | null;
  /** VAE tiles this rank decoded (VAE-P: tile #c on rank c % W; an untiled decode counts 1) */
  vaeTiles: number;
  /** ms of this rank's VAE stage (VAE-P: its tiles, the exchange and, on rank 0, the blend) */
  vaeMs: number;
  cachedSteps?: number[];
  cfgCachedSteps?: number[];
}

interface RankArgs {
  modelDir: string;
  threads: number;
  generatedDir: string | null;
  /** plans every rank runs whole that it cannot find shipped */
  plans: Partial<Record<Component, Plan[]>>;
  /** per rank: its plans of parallel lowerings by `component:key` */
  rankPlans: Record<string, Plan>[];
  /** the generate request (no callbacks) */
  request: Record<string, unknown>;
  /** VAE-P: tiles over the ranks, every rank gets the image */
  parallelVae: boolean;
  die: { rank: number; step: number } | null;
  lora: LoraSpec[] | null;
}

interface RankResult extends RankStats {
  result: unknown;
}

/** the PlanDims a parallel plan provider takes, from a need's compile dims */
function planDims(n: PlanNeed): PlanDims {
  const d = n.dims;
  return { batch: d.batch ?? 1, height: d.height ?? 0, width: d.width ?? 0, textTokens: d.textTokens ?? 0 };
}

/**
 * Multi-rank generate of any supported directory (or shipped model): starts `world` ranks on `comm` and
 * returns rank 0's result (the family's generate result) with per-rank comm statistics. Every rank is the
 * one Pipeline with its transformer (and with TE-P its text encoders) on ParallelExecutors.
 */
export async function generateParallel<R = GenerateResult>(model: string, req: ParallelGenerateRequest): Promise<ParallelGenerateResult<R>> {
  const t0 = performance.now();
  const world = req.world;
  const backend: CommBackend = req.comm ?? 'shm';
  if (backend !== 'shm' && backend !== 'mpi') throw new UserError(`--comm must be shm or mpi, got "${String(backend)}"`);
  const preq = parallelRequest(req);
  const { world: _w, comm: _c, parallel: _p, ulyssesAnything: _ua, ulyssesFloat8: _uf, ulyssesAsync: _us, parallelText, parallelVae, threads, transformerPlans, parallelPlanProvider, planProvider, generatedDir, jobTimeoutMs, faultInjection, lora, onStep: _o, beforeStep: _b, decode: _d, latents, ...rest } = req;
  const host = await loadPipeline(model, { ...(generatedDir ? { generatedDir } : {}), ...(planProvider ? { planProvider } : {}), ...(lora ? { lora } : {}) });
  // parallelize_vae enables tiling (FLUX's VAE-P); the request is validated before any rank starts
  const request: Record<string, unknown> = await decodeRequestImages({ ...rest, ...(parallelVae ? { vaeTiling: true } : {}), ...(latents ? { latents } : {}) });
  const q = host.spec.resolve(request);
  if (latents && latents.length !== q.latentsShape.reduce((a: number, b: number) => a * b, 1)) throw new UserError(`latents must have shape [${q.latentsShape.join(', ')}] for ${q.latentsFor}, got ${latents.length} values`);

  const { rankPlans, plans, parallel } = await planRanks(host, q, { world, preq, parallelText: parallelText === true, parallelVae: parallelVae === true, transformerPlans, parallelPlanProvider });

  const args: RankArgs = {
    modelDir: host.dir,
    threads: threads ?? Math.max(1, Math.floor(os.availableParallelism() / world)),
    generatedDir: generatedDir ?? null,
    plans,
    rankPlans,
    request,
    parallelVae: parallelVae === true,
    die: faultInjection ?? null,
    lora: lora ?? null,
  };
  const results = await launchRanks<RankResult>(world, {
    backend,
    module: fileURLToPath(import.meta.url),
    exportName: 'parallelGenerateRank',
    args: toWire(args),
    ...(jobTimeoutMs ? { jobTimeoutMs } : {}),
  });
  const r = fromWire<R & { timings: { total: number } }>(results[0]!.result);
  return { ...r, timings: { ...r.timings, total: performance.now() - t0 }, world, backend, parallel, ranks: results.map(({ result: _r, ...stats }) => stats) };
}

/** The plans of one request's ranks: each rank's share of the parallel components, and the whole plans they all run. */
export interface RankPlans {
  /** per rank: `component:key` -> its plan of a parallel lowering */
  rankPlans: Record<string, Plan>[];
  /** whole plans every rank runs (the shipped ones are not sent) */
  plans: Partial<Record<Component, Plan[]>>;
  parallel: NonNullable<Plan['parallel']>;
}

/**
 * The plans a request needs on `world` ranks: the transformer's per-rank plans (given or from the provider),
 * TE-P's text encoder plans, and the whole plans of the rest. `skip(needKey)`: needs whose plans the ranks
 * already hold (a server sends each once).
 */
export async function planRanks(
  host: Pipeline,
  q: ReturnType<Pipeline['spec']['resolve']>,
  o: { world: number; preq: ParallelRequest; parallelText: boolean; parallelVae: boolean; transformerPlans?: Plan[] | undefined; parallelPlanProvider?: ParallelPlanProvider | undefined; skip?: (needKey: string) => boolean },
): Promise<RankPlans> {
  const { world, preq, parallelVae, transformerPlans, parallelPlanProvider } = o;
  const rankPlans: Record<string, Plan>[] = Array.from({ length: world }, () => ({}));
  const plans: RankArgs['plans'] = {};
  let parallel: Plan['parallel'] | undefined;
  const teP = o.parallelText && world > 1;
  for (const n of host.spec.needs(q, parallelVae ? 'parallel' : 'local') as PlanNeed[]) {
    if (o.skip?.(`${n.component}:${n.key}`)) continue;
    let per: Plan[] | null = null;
    if (n.component === 'transformer') {
      if (transformerPlans) per = transformerPlans;
      else if (!parallelPlanProvider) throw new UserError('multi-rank generate needs per-rank transformer plans: pass transformerPlans or parallelPlanProvider (the CLI compiles them)');
      else per = await parallelPlanProvider('transformer', planDims(n), preq, host.planRequest(n));
      parallel = per[0]?.parallel;
    } else if (teP && n.textParallel) {
      // TE-P (--parallel-text, Cache-DiT §4.9): the text encoder tensor-parallel over every rank
      if (!parallelPlanProvider) throw new UserError('--parallel-text needs per-rank text encoder plans: pass parallelPlanProvider (the CLI compiles them)');
      per = await parallelPlanProvider(n.component, planDims(n), { tp_size: world, ulysses_anything: false }, host.planRequest(n));
    }
    if (per) {
      if (per.length !== world) throw new Error(`got ${per.length} ${n.component} plans for ${world} ranks`);
      per.forEach((p, r) => (rankPlans[r]![`${n.component}:${n.key}`] = p));
      continue;
    }
    // a plan the ranks run whole: sent unless it is the shipped one
    const p = await host.plan(n);
    if (!host.isShipped(p) && !(plans[n.component] ??= []).includes(p)) plans[n.component]!.push(p);
  }
  if (!parallel && !o.skip) throw new Error(`${host.name}: the request runs no transformer`);
  return { rankPlans, plans, parallel: parallel! };
}

/** sha256 of what a rank decoded (FLUX's raw decoder output, else its images / videos), null when it decoded nothing */
function decodedHash(r: { decoded?: Float32Array; images?: Uint8Array[]; videos?: Uint8Array[] }): string | null {
  const parts: Uint8Array[] = r.decoded ? [new Uint8Array(r.decoded.buffer, r.decoded.byteOffset, r.decoded.byteLength)] : (r.images ?? r.videos ?? []);
  if (!parts.some((p) => p.length)) return null;
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** One rank of generateParallel (launchRanks entry; runs in a worker thread or an mpirun process): the one Pipeline. */
export async function parallelGenerateRank(comm: Communicator, wired: unknown): Promise<RankResult> {
  const a = fromWire<RankArgs>(wired);
  const pipe = await loadPipeline(a.modelDir, {
    threads: a.threads,
    plans: a.plans,
    ...(a.generatedDir ? { generatedDir: a.generatedDir } : {}),
    rank: { comm, plans: a.rankPlans[comm.rank]! },
    ...(a.lora ? { lora: a.lora } : {}),
  });
  let denoiseBytes = 0;
  const r = await pipe.generate({
    ...(a.request as unknown as AnyGenerateOptions),
    // VAE: rank 0 alone (tiled with --vae-tiling); VAE-P: the tiles over every rank (vae-tiling.ts)
    decode: a.parallelVae ? 'parallel' : comm.rank === 0 ? 'local' : 'none',
    beforeStep: (i: number) => {
      if (i === 0) comm.resetStats();
      if (a.die && a.die.rank === comm.rank && a.die.step === i) process.exit(3);
    },
    onStep: (s: { step: number; steps: number }) => {
      if (s.step === s.steps) denoiseBytes = comm.stats.bytesSent;
    },
  });
  await comm.barrier();
  const first = r.cache?.summary[0];
  const decodedSha256 = decodedHash(r);
  return {
    rank: comm.rank,
    bytesPerStep: denoiseBytes / r.steps,
    commMsPerStep: pipe.commMs() / r.steps,
    perStep: r.timings.perStep,
    vaeTiles: r.vaeTiles ?? (decodedSha256 ? 1 : 0),
    vaeMs: r.timings.vae,
    decodedSha256,
    ...(first ? { cachedSteps: first.cached_steps ?? [], cfgCachedSteps: first.cfg_cached_steps ?? [] } : {}),
    result: comm.rank === 0 ? toWire(r) : null,
  };
}
