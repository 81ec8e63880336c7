// Multi-rank text-to-image (Cache-DiT context parallelism, cache-dit.md §4): N ranks (shm worker threads
// or mpirun processes) each run their own executors; the transformer runs one per-rank plan of a
// parallel lowering (plan.parallel, docs/architecture.md §3c) through ParallelExecutor: inputs split at
// entry, Ulysses all-to-alls around every attention, output all-gathered, so every rank holds the full
// velocity and steps the same latents. `--parallel tp` runs the tensor-parallel lowering instead
// (compiler/passes/tp-lower.ts: sharded linears + all-reduces; every rank loads only its weight slices),
// the `*_tp` / `tp_*` hybrids Cache-DiT's (ring, ulysses, tp) mesh (rank = cpRank * tp + tpRank).
// Text encoder: replicated on every rank; --parallel-text is TE-P: the text encoder tensor-parallel over
// all ranks (its component TP plan; heads must divide the world size).
// The denoising loop is the 1-rank one (runtime/denoise.ts), so true CFG (negative prompt, guidance > 1)
// runs cond then uncond on every rank, and caching uses the 1-rank TransformerCacheSession (separate
// CFG contexts) over all-reducing block-list runners. VAE: rank 0 decodes (tiled with --vae-tiling);
// --parallel-vae is VAE-P (runtime/vae-tiling.ts): tiling on, tile #c decoded by rank c % W, rank 0
// blends and stitches, the image is passed down the rank chain so every rank has it (bit-identical to
// the 1-rank tiled decode). Rank 0 writes the result; a rank that dies makes the others fail within the
// communicator's bounded wait with an error naming it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Communicator } from './comm/communicator.ts';
import { launchRanks, type CommBackend } from './comm/index.ts';
import { toUint8HWC } from './image.ts';
import { openSafetensors, writeSafetensors } from './io/safetensors.ts';
import { rankExecutor } from './parallel/rank-executor.ts';
import type { PipelineCacheOptions, PipelineCacheResult } from './pipeline-cache.ts';
import type { Component, Plan } from './plan.ts';
import { fluxSchedule } from './scheduler.ts';
import { denoiseLoop, type TextEmbeds } from './denoise.ts';
import { tiledDecodeParallel } from './vae-tiling.ts';
import { loadPipeline, resolveModelDir, trueCfgScale, UserError, type TextEncoderRun, type GenerateOptions, type GenerateResult, type PlanDims, type PlanProvider, type PlanRequest } from './pipeline.ts';
import { ComponentWeights } from './io/weights.ts';

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

interface RankArgs {
  modelDir: string;
  planFile: string;
  outFile: string;
  latentsFile: string | null;
  threads: number;
  generatedDir: string | null;
  prompt: string;
  /** true CFG: the negative prompt and true_cfg_scale (null: no CFG) */
  negativePrompt: string | null;
  cfgScale: number | null;
  steps: number;
  seed: number;
  batch: number;
  height: number;
  width: number;
  /** text tokens of the transformer (FLUX.1: T5's max_sequence_length) */
  textTokens: number;
  /** FLUX.1-dev: the request's guidance scale (Pipeline.guidanceInput makes the input; absent: its default) */
  guidanceScale?: number;
  die: { rank: number; step: number } | null;
  cache: PipelineCacheOptions | null;
  /** tiled decode (--vae-tiling, implied by --parallel-vae) */
  vaeTiling: boolean;
  /** VAE-P: tiles over the ranks, every rank gets the image */
  parallelVae: boolean;
}

interface RankResult extends RankStats {
  cache: PipelineCacheResult | null;
  timings: GenerateResult['timings'];
  inputIds: number[];
  unknownWords: string[];
}

/**
 * Multi-rank generate: starts `world` ranks on `comm`, returns rank 0's result (same fields as
 * Pipeline.generate plus per-rank comm statistics).
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
  const seed = req.seed ?? 0;
  const cfgScale = trueCfgScale(req, pipe.family);
  const dims = pipe.dims(batch, height, width, pipe.textTokensFor(req.maxSequenceLength));
  pipe.guidanceInput(batch, req.guidanceScale); // validates the scale before any rank starts
  if (pipe.family.text !== 'tiny' && preq.extra_parallel_modules?.includes('text_encoder')) {
    throw new UserError('--parallel-text: TE-P covers the tiny-flux text encoder so far; FLUX.1 runs CLIP and T5 on every rank (drop --parallel-text)');
  }

  let tPlans = req.transformerPlans;
  if (!tPlans) {
    if (!req.parallelPlanProvider) throw new UserError('multi-rank generate needs per-rank transformer plans: pass transformerPlans or parallelPlanProvider (the CLI compiles them)');
    tPlans = await req.parallelPlanProvider('transformer', dims, preq, pipe.planRequest('transformer', dims));
  }
  if (tPlans.length !== world) throw new Error(`got ${tPlans.length} transformer plans for ${world} ranks`);
  // TE-P (--parallel-text, Cache-DiT §4.9): the text encoder tensor-parallel over every rank
  let teTp: Plan[] | undefined;
  if (preq.extra_parallel_modules?.includes('text_encoder') && world > 1) {
    if (!req.parallelPlanProvider) throw new UserError('--parallel-text needs per-rank text encoder plans: pass parallelPlanProvider (the CLI compiles them)');
    teTp = await req.parallelPlanProvider('text_encoder', dims, { tp_size: world, ulysses_anything: false }, pipe.planRequest('text_encoder', dims));
    if (teTp.length !== world) throw new Error(`got ${teTp.length} text encoder plans for ${world} ranks`);
  }
  // text encoder / VAE plans the ranks cannot find shipped (a tiled decode: one VAE plan per tile size)
  const vaeTiling = req.vaeTiling === true || req.parallelVae === true; // parallelize_vae enables tiling
  const grid = vaeTiling ? pipe.vaeTileGrid(height, width) : null;
  const plans: { text_encoder?: Plan; text_encoder_2?: Plan; vae?: Plan[] } = {};
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

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-par-'));
  try {
    const planFile = path.join(tmp, 'plans.json');
    fs.writeFileSync(planFile, JSON.stringify({ transformer: tPlans, ...plans, ...(teTp ? { text_encoder_tp: teTp } : {}) }));
    let latentsFile: string | null = null;
    if (req.latents) {
      if (req.latents.length !== batch * g.tokens * g.packedChannels) throw new UserError(`latents must have ${batch * g.tokens * g.packedChannels} values`);
      latentsFile = path.join(tmp, 'latents.safetensors');
      writeSafetensors(latentsFile, { latents: { dtype: 'F32', shape: [batch, g.tokens, g.packedChannels], data: req.latents } });
    }
    const args: RankArgs = {
      modelDir: dir,
      planFile,
      outFile: path.join(tmp, 'result.safetensors'),
      latentsFile,
      threads: req.threads ?? Math.max(1, Math.floor(os.availableParallelism() / world)),
      generatedDir: req.generatedDir ?? null,
      prompt: req.prompt,
      negativePrompt: cfgScale !== null ? req.negativePrompt! : null,
      cfgScale,
      steps,
      seed,
      batch,
      height,
      width,
      textTokens: dims.textTokens,
      ...(req.guidanceScale !== undefined ? { guidanceScale: req.guidanceScale } : {}),
      die: req.faultInjection ?? null,
      cache: req.cache?.cache ? req.cache : null,
      vaeTiling,
      parallelVae: req.parallelVae === true,
    };
    const results = await launchRanks<RankResult>(world, {
      backend,
      module: fileURLToPath(import.meta.url),
      exportName: 'parallelGenerateRank',
      args,
      ...(req.jobTimeoutMs ? { jobTimeoutMs: req.jobTimeoutMs } : {}),
    });
    const f = await openSafetensors(args.outFile);
    const latents = Float32Array.from(f.tensor('latents').data);
    const decoded = Float32Array.from(f.tensor('decoded').data);
    const images: Uint8Array[] = [];
    for (let b = 0; b < batch; b++) images.push(toUint8HWC(decoded, pipe.vaeOutChannels, height, width, b));
    const r0 = results[0]!;
    return {
      image: images[0]!,
      images,
      width,
      height,
      latents,
      latentsShape: [batch, g.tokens, g.packedChannels],
      decoded,
      steps,
      seed: req.latents ? null : seed,
      inputIds: r0.inputIds,
      unknownWords: r0.unknownWords,
      schedule: fluxSchedule(steps, g.tokens, pipe.scheduler),
      timings: { ...r0.timings, total: performance.now() - t0 },
      ...(r0.cache ? { cache: r0.cache } : {}),
      world,
      backend,
      parallel: tPlans[0]!.parallel!,
      ranks: results.map(({ cache: _c, timings: _t, inputIds: _i, unknownWords: _u, ...stats }) => stats),
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** TE-P: this rank's tensor-parallel text encoder plan as the pipeline's text encoder (collective on every rank). */
async function textEncoderTp(comm: Communicator, plan: Plan, a: RankArgs): Promise<TextEncoderRun> {
  const pe = rankExecutor(comm, plan, await ComponentWeights.open(path.join(a.modelDir, 'text_encoder')), { threads: a.threads });
  return async (inputIds, attentionMask) => {
    pe.setInputs({ input_ids: inputIds, attention_mask: attentionMask });
    await pe.forward();
    return { encoderHiddenStates: await pe.output('encoder_hidden_states'), pooledProjections: await pe.output('pooled_projections') };
  };
}

/** One rank of generateParallel (launchRanks entry; runs in a worker thread or an mpirun process). */
export async function parallelGenerateRank(comm: Communicator, a: RankArgs): Promise<RankResult> {
  const t0 = performance.now();
  const all = JSON.parse(fs.readFileSync(a.planFile, 'utf8')) as { transformer: Plan[]; text_encoder?: Plan; text_encoder_2?: Plan; vae?: Plan[]; text_encoder_tp?: Plan[] };
  const plan = all.transformer[comm.rank]!;
  const pipe = await loadPipeline(a.modelDir, {
    threads: a.threads,
    plans: { ...(all.text_encoder ? { text_encoder: all.text_encoder } : {}), ...(all.text_encoder_2 ? { text_encoder_2: all.text_encoder_2 } : {}), ...(all.vae ? { vae: all.vae } : {}) },
    ...(a.generatedDir ? { generatedDir: a.generatedDir } : {}),
  });
  const g = pipe.geometry(a.height, a.width);
  const tr = rankExecutor(comm, plan, await ComponentWeights.open(path.join(a.modelDir, 'transformer')), { threads: a.threads });
  // cache: the 1-rank session (separate CFG contexts under true CFG) over runners whose probe sums are
  // all-reduced, so every rank decides alike
  const session = a.cache?.cache ? tr.cacheSession(a.cache, { steps: a.steps, separateCfg: a.cfgScale !== null }) : null;
  const setup = performance.now() - t0;

  const prompts = new Array<string>(a.batch).fill(a.prompt);
  const tTe = performance.now();
  const teRun = all.text_encoder_tp ? await textEncoderTp(comm, all.text_encoder_tp[comm.rank]!, a) : undefined;
  const text = await pipe.encodePrompt(prompts, a.height, a.width, teRun, a.textTokens);
  const textEncoder = performance.now() - tTe - text.tokenizeMs;
  const negText = a.negativePrompt !== null ? await pipe.encodePrompt(new Array<string>(a.batch).fill(a.negativePrompt), a.height, a.width, teRun, a.textTokens) : null;
  let x: Float32Array;
  if (a.latentsFile) x = Float32Array.from((await openSafetensors(a.latentsFile)).tensor('latents').data);
  else x = pipe.noise(a.seed, a.batch, a.height, a.width);
  const schedule = fluxSchedule(a.steps, g.tokens, pipe.scheduler);
  const guidance = pipe.guidanceInput(a.batch, a.guidanceScale);
  comm.resetStats();
  const tDen = performance.now();
  await denoiseLoop({
    x,
    schedule,
    steps: a.steps,
    batch: a.batch,
    pos: text,
    neg: negText,
    cfgScale: a.cfgScale ?? 1,
    beforeStep: (i) => {
      if (a.die && a.die.rank === comm.rank && a.die.step === i) process.exit(3);
    },
    velocity: async (t: TextEmbeds, timestep: Float32Array) => {
      const inputs = pipe.transformerInputs({
        hiddenStates: x,
        encoderHiddenStates: t.encoderHiddenStates,
        pooledProjections: t.pooledProjections,
        timestep,
        height: a.height,
        width: a.width,
        textTokens: a.textTokens,
        ...(guidance ? { guidance } : {}),
      });
      tr.setInputs(inputs);
      if (session) await session.forward();
      else await tr.forward();
      return tr.output('output');
    },
  });
  const denoise = performance.now() - tDen;
  const bytesPerStep = comm.stats.bytesSent / a.steps;
  // VAE: rank 0 alone (tiled with --vae-tiling); VAE-P: the tiles over every rank (vae-tiling.ts), and
  // without tiling (latents within one tile) every rank decodes the whole image, as Cache-DiT's ranks do
  const tV = performance.now();
  const grid = a.vaeTiling ? pipe.vaeTileGrid(a.height, a.width) : null;
  let decoded: Float32Array | null = null;
  let vaeTiles = 0;
  if (a.parallelVae && grid) {
    const z = pipe.toVaeSpace(x, a.batch, a.height, a.width);
    decoded = await tiledDecodeParallel(comm, z, a.batch, pipe.latentChannels, pipe.vaeOutChannels, grid, (tile, t) => {
      vaeTiles++;
      return pipe.decodeVaeTile(tile, a.batch, t, grid);
    });
  } else if (a.parallelVae || comm.rank === 0) {
    decoded = await pipe.decodeVaeSpace(pipe.toVaeSpace(x, a.batch, a.height, a.width), a.batch, a.height, a.width, { tiling: a.vaeTiling });
    vaeTiles = grid ? grid.tiles.length : 1;
  }
  const vae = performance.now() - tV;
  if (comm.rank === 0) {
    writeSafetensors(a.outFile, {
      latents: { dtype: 'F32', shape: [a.batch, g.tokens, g.packedChannels], data: x },
      decoded: { dtype: 'F32', shape: [a.batch, pipe.vaeOutChannels, a.height, a.width], data: decoded! },
    });
  }
  await comm.barrier();
  const cache = session ? session.result() : null;
  return {
    rank: comm.rank,
    bytesPerStep,
    commMsPerStep: tr.exec.stats.commMs / a.steps,
    perStep: denoise / a.steps,
    vaeTiles,
    vaeMs: vae,
    decodedSha256: decoded ? createHash('sha256').update(new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength)).digest('hex') : null,
    ...(cache ? { cachedSteps: cache.summary[0]?.cached_steps ?? [], cfgCachedSteps: cache.summary[0]?.cfg_cached_steps ?? [] } : {}),
    cache,
    timings: { tokenize: text.tokenizeMs, textEncoder, denoise, perStep: denoise / a.steps, vae, setup, total: performance.now() - t0 },
    inputIds: text.inputIds[0]!,
    unknownWords: text.unknownWords,
  };
}
