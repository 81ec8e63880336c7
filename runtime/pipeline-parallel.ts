// Multi-rank text-to-image (Cache-DiT context parallelism, cache-dit.md §4): N ranks (shm worker threads
// or mpirun processes), each the one-rank Pipeline (runtime/pipeline.ts) whose transformer runs the rank's
// plan of a parallel lowering (plan.parallel, docs/architecture.md §3c) on a ParallelExecutor: inputs split
// at entry, Ulysses all-to-alls around every attention, output all-gathered, so every rank holds the full
// velocity and steps the same latents. `--parallel tp` runs the tensor-parallel lowering instead
// (compiler/passes/tp-lower.ts: sharded linears + all-reduces; every rank loads only its weight slices),
// the `*_tp` / `tp_*` hybrids Cache-DiT's (ring, ulysses, tp) mesh (rank = cpRank * tp + tpRank).
// Text encoder: replicated on every rank; --parallel-text is TE-P: the text encoder tensor-parallel over
// all ranks (its component TP plan; heads must divide the world size).
// Being the one-rank pipeline, a rank runs true CFG (cond, then uncond) and caching (the one-rank session,
// separate CFG contexts, over block-list runners whose probe sums are all-reduced) exactly as one rank does.
// VAE: rank 0 decodes (tiled with --vae-tiling); --parallel-vae is VAE-P (runtime/vae-tiling.ts): tiling on,
// tile #c decoded by rank c % W, rank 0 blends and stitches, the image is passed down the rank chain so
// every rank has it (bit-identical to the 1-rank tiled decode). Plans, the request and rank 0's result
// travel as launchRanks arguments and return values; a rank that dies makes the others fail within the
// communicator's bounded wait with an error naming it.
import { createHash } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Communicator } from './comm/communicator.ts';
import { launchRanks, type CommBackend } from './comm/index.ts';
import { toUint8HWC } from './image.ts';
import type { Component, Plan } from './plan.ts';
import { fluxSchedule } from './scheduler.ts';
import { loadPipeline, resolveModelDir, trueCfgScale, UserError, type GenerateOptions, type GenerateResult, type PlanDims, type PlanProvider, type PlanRequest } from './pipeline.ts';

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

export interface ParallelGenerateRequest extends GenerateOptions, ParallelOptions {
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
}

export interface ParallelGenerateResult extends GenerateResult {
  world: number;
  backend: CommBackend;
  /** the lowering every rank ran */
  parallel: NonNullable<Plan['parallel']>;
  /**
   * per rank: bytes sent per denoising step, ms in comm ops per step, ms per step; `decodedSha256` of the
   * image the rank holds (null where it has none: without --parallel-vae only rank 0 decodes); with caching
   * the rank's cached steps per branch (first block list)
   */
  ranks: RankStats[];
}

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

/** the request every rank runs (GenerateOptions without its callbacks and float arrays) */
type RankRequest = Omit<GenerateOptions, 'latents' | 'onStep' | 'beforeStep' | 'decode'>;

interface RankArgs {
  modelDir: string;
  threads: number;
  generatedDir: string | null;
  /** per-rank transformer plans (index = rank), TE-P per-rank text encoder plans, plans the ranks cannot find shipped */
  plans: { transformer: Plan[]; text_encoder_tp?: Plan[]; text_encoder_2_tp?: Plan[]; text_encoder?: Plan; text_encoder_2?: Plan; vae?: Plan[] };
  request: RankRequest;
  /** initial latents as base64 float32, or null (seeded noise) */
  latents: string | null;
  /** VAE-P: tiles over the ranks, every rank gets the image */
  parallelVae: boolean;
  die: { rank: number; step: number } | null;
}

/** rank 0's GenerateResult with its float arrays as base64 (worker threads and mpirun processes alike) */
type EncodedResult = Omit<GenerateResult, 'image' | 'images' | 'latents' | 'decoded' | 'schedule'> & { latents: string; decoded: string };

interface RankResult extends RankStats {
  result: EncodedResult | null;
}

const toB64 = (a: Float32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
function fromB64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/**
 * Multi-rank generate: starts `world` ranks on `comm`, returns rank 0's result (same fields as
 * Pipeline.generate plus per-rank comm statistics). Every rank is the one-rank Pipeline with its
 * transformer (and with TE-P its text encoder) on a ParallelExecutor.
 */
export async function generateParallel(model: string, req: ParallelGenerateRequest): Promise<ParallelGenerateResult> {
  const t0 = performance.now();
  const world = req.world;
  const backend: CommBackend = req.comm ?? 'shm';
  if (backend !== 'shm' && backend !== 'mpi') throw new UserError(`--comm must be shm or mpi, got "${String(backend)}"`);
  const preq = parallelRequest(req);
  const { dir } = resolveModelDir(model);
  const pipe = await loadPipeline(dir, { ...(req.generatedDir ? { generatedDir: req.generatedDir } : {}) });
  const steps = req.steps ?? 28;
  if (!Number.isInteger(steps) || steps < 1) throw new UserError(`--steps must be an integer >= 1, got ${req.steps}`);
  const height = req.height ?? pipe.defaultSize().height;
  const width = req.width ?? pipe.defaultSize().width;
  const g = pipe.geometry(height, width);
  const batch = req.batch ?? 1;
  trueCfgScale(req, pipe.family); // validates the scale before any rank starts
  const dims = pipe.dims(batch, height, width, pipe.textTokensFor(req.maxSequenceLength));
  pipe.guidanceInput(batch, req.guidanceScale);
  if (req.latents && req.latents.length !== batch * g.tokens * g.packedChannels) throw new UserError(`latents must have ${batch * g.tokens * g.packedChannels} values`);

  let tPlans = req.transformerPlans;
  if (!tPlans) {
    if (!req.parallelPlanProvider) throw new UserError('multi-rank generate needs per-rank transformer plans: pass transformerPlans or parallelPlanProvider (the CLI compiles them)');
    tPlans = await req.parallelPlanProvider('transformer', dims, preq, pipe.planRequest('transformer', dims));
  }
  if (tPlans.length !== world) throw new Error(`got ${tPlans.length} transformer plans for ${world} ranks`);
  const plans: RankArgs['plans'] = { transformer: tPlans };
  // TE-P (--parallel-text, Cache-DiT §4.9): the text encoder tensor-parallel over every rank
  if (preq.extra_parallel_modules?.includes('text_encoder') && world > 1) {
    if (!req.parallelPlanProvider) throw new UserError('--parallel-text needs per-rank text encoder plans: pass parallelPlanProvider (the CLI compiles them)');
    plans.text_encoder_tp = await req.parallelPlanProvider('text_encoder', dims, { tp_size: world, ulysses_anything: false }, pipe.planRequest('text_encoder', dims));
    if (plans.text_encoder_tp.length !== world) throw new Error(`got ${plans.text_encoder_tp.length} text encoder plans for ${world} ranks`);
    // FLUX.1: T5 too (CLIP is text_encoder)
    if (pipe.family.text === 'clip_t5') plans.text_encoder_2_tp = await req.parallelPlanProvider('text_encoder_2', dims, { tp_size: world, ulysses_anything: false }, pipe.planRequest('text_encoder_2', dims));
  }
  // text encoder / VAE plans the ranks cannot find shipped (a tiled decode: one VAE plan per tile size)
  const vaeTiling = req.vaeTiling === true || req.parallelVae === true; // parallelize_vae enables tiling
  const grid = vaeTiling ? pipe.vaeTileGrid(height, width) : null;
  const missing = async (c: Component, d: PlanDims): Promise<Plan | null> => {
    try {
      await pipe.plan(c, d);
      return null;
    } catch (e) {
      if (!(e instanceof UserError) || !req.planProvider) throw e;
      return req.planProvider(c, d, pipe.planRequest(c, d));
    }
  };
  const te = await missing('text_encoder', dims);
  if (te) plans.text_encoder = te;
  if (pipe.family.text === 'clip_t5') {
    const te2 = await missing('text_encoder_2', dims);
    if (te2) plans.text_encoder_2 = te2;
  }
  for (const d of grid ? pipe.vaeTileDims(batch, grid) : [dims]) {
    const p = await missing('vae', d);
    if (p) (plans.vae ??= []).push(p);
  }

  const { latents, onStep: _o, beforeStep: _b, decode: _d, world: _w, comm: _c, parallel: _p, ulyssesAnything: _ua, ulyssesFloat8: _uf, ulyssesAsync: _us, parallelText: _pt, parallelVae: _pv, threads, transformerPlans: _tp, parallelPlanProvider: _ppp, planProvider: _pp, generatedDir, jobTimeoutMs, faultInjection, ...request } = req;
  const args: RankArgs = {
    modelDir: dir,
    threads: threads ?? Math.max(1, Math.floor(os.availableParallelism() / world)),
    generatedDir: generatedDir ?? null,
    plans,
    request: { ...request, steps, height, width, batch, ...(vaeTiling ? { vaeTiling: true } : {}), ...(req.cache?.cache ? { cache: req.cache } : {}) },
    latents: latents ? toB64(latents) : null,
    parallelVae: req.parallelVae === true,
    die: faultInjection ?? null,
  };
  const results = await launchRanks<RankResult>(world, {
    backend,
    module: fileURLToPath(import.meta.url),
    exportName: 'parallelGenerateRank',
    args,
    ...(jobTimeoutMs ? { jobTimeoutMs } : {}),
  });
  const e = results[0]!.result!;
  const decoded = fromB64(e.decoded);
  const images: Uint8Array[] = [];
  for (let b = 0; b < batch; b++) images.push(toUint8HWC(decoded, pipe.vaeOutChannels, height, width, b));
  return {
    ...e,
    image: images[0]!,
    images,
    latents: fromB64(e.latents),
    decoded,
    schedule: fluxSchedule(steps, g.tokens, pipe.scheduler),
    timings: { ...e.timings, total: performance.now() - t0 },
    world,
    backend,
    parallel: tPlans[0]!.parallel!,
    ranks: results.map(({ result: _r, ...stats }) => stats),
  };
}

/** One rank of generateParallel (launchRanks entry; runs in a worker thread or an mpirun process): the one-rank Pipeline. */
export async function parallelGenerateRank(comm: Communicator, a: RankArgs): Promise<RankResult> {
  const p = a.plans;
  const pipe = await loadPipeline(a.modelDir, {
    threads: a.threads,
    plans: { ...(p.text_encoder ? { text_encoder: p.text_encoder } : {}), ...(p.text_encoder_2 ? { text_encoder_2: p.text_encoder_2 } : {}), ...(p.vae ? { vae: p.vae } : {}) },
    ...(a.generatedDir ? { generatedDir: a.generatedDir } : {}),
    rank: {
      comm,
      transformerPlan: p.transformer[comm.rank]!,
      ...(p.text_encoder_tp ? { textEncoderPlan: p.text_encoder_tp[comm.rank]! } : {}),
      ...(p.text_encoder_2_tp ? { textEncoder2Plan: p.text_encoder_2_tp[comm.rank]! } : {}),
    },
  });
  const steps = a.request.steps!;
  let denoiseBytes = 0;
  const r = await pipe.generate({
    ...a.request,
    ...(a.latents ? { latents: fromB64(a.latents) } : {}),
    // VAE: rank 0 alone (tiled with --vae-tiling); VAE-P: the tiles over every rank (vae-tiling.ts)
    decode: a.parallelVae ? 'parallel' : comm.rank === 0 ? 'local' : 'none',
    beforeStep: (i) => {
      if (i === 0) comm.resetStats();
      if (a.die && a.die.rank === comm.rank && a.die.step === i) process.exit(3);
    },
    onStep: (s) => {
      if (s.step === s.steps) denoiseBytes = comm.stats.bytesSent;
    },
  });
  await comm.barrier();
  const first = r.cache?.summary[0];
  const { image: _i, images: _is, latents, decoded, schedule: _s, ...rest } = r;
  return {
    rank: comm.rank,
    bytesPerStep: denoiseBytes / steps,
    commMsPerStep: pipe.transformerCommMs() / steps,
    perStep: r.timings.perStep,
    vaeTiles: r.vaeTiles,
    vaeMs: r.timings.vae,
    decodedSha256: decoded.length ? createHash('sha256').update(new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength)).digest('hex') : null,
    ...(first ? { cachedSteps: first.cached_steps ?? [], cfgCachedSteps: first.cfg_cached_steps ?? [] } : {}),
    result: comm.rank === 0 ? { ...rest, latents: toB64(latents), decoded: toB64(decoded) } : null,
  };
}
