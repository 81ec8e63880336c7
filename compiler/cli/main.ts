// The `ditforge` CLI: generate (runtime pipeline), compile and inspect (compiler).
// Every error: one line on stderr, exit code 1, no stack trace (unless DITFORGE_DEBUG=1).
// The compiler is imported lazily: `generate` with a shipped plan never loads it.

import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { Component, Plan } from '../../runtime/plan.ts';
import type { PlanDims, PlanRequest, GenerateResult } from '../../runtime/pipeline.ts';
import type { CacheCliFlags } from '../../runtime/cache/config.ts';

const DEBUG = process.env.DITFORGE_DEBUG === '1';

class CliError extends Error {}

// ---- lazily loaded compiler API (compiler/index.ts, compiler/cli/commands.ts) ----

type CompilerApi = typeof import('../index.ts');
type CommandsApi = typeof import('./commands.ts');

async function importCompiler(): Promise<CompilerApi> {
  return import('../index.ts');
}

async function importCommands(): Promise<CommandsApi> {
  return import('./commands.ts');
}

/** known model names: the compiler's registry plus the shipped runtime models */
async function knownModels(): Promise<string[]> {
  const { SHIPPED_MODELS } = await import('../../runtime/pipeline.ts');
  const names = new Set<string>(SHIPPED_MODELS);
  try {
    for (const m of (await importCompiler()).listModels()) names.add(m);
  } catch (e) {
    if (DEBUG) process.stderr.write(`(could not load the compiler's model list: ${(e as Error).message})\n`);
  }
  return [...names].sort();
}

// ---- option parsing ----

function intOption(flag: string, min: number, what = `an integer >= ${min}`) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${flag} must be ${what}, got "${v}"`);
    return n;
  };
}


interface GenerateFlags extends Omit<CacheCliFlags, 'scm' | 'steps'> {
  model: string;
  prompt: string;
  /** default: the pipeline's (FLUX 28, Wan 50) */
  steps?: number;
  numFrames?: number;
  seed: number;
  height?: number;
  width?: number;
  trueCfgScale?: number;
  maxSequenceLength?: number;
  latents?: string;
  saveLatents?: string;
  /** default out.png (images), out.mp4 (videos) */
  out?: string;
  json?: boolean;
  threads?: number;
  device: string;
  // multi-rank (runtime/pipeline-parallel.ts)
  world: number;
  comm: 'shm' | 'mpi';
  parallel?: import('../../runtime/pipeline-parallel.ts').ParallelKind;
  ulyssesAnything?: boolean;
  ulyssesFloat8?: boolean;
  ulyssesAsync?: boolean;
  parallelText?: boolean;
  parallelVae?: boolean;
  vaeTiling?: boolean;
  // caching: the Cache-DiT generate flags of runtime/cache (CacheCliFlags), `--scm` as typed on the command line
  scm?: string;
  summary?: boolean;
  negativePrompt?: string;
  /** --image, once per reference image (FLUX.2-Klein edits from several; the others take one) */
  image?: string[];
  strength?: number;
  mask?: string;
  guidanceScale?: number;
  guidanceScale2?: number;
  loraPath?: string;
  disableFuseLora?: boolean;
  /** GiB a request may need (default: the machine's memory) */
  maxMemory?: number;
  loraScale?: number;
  loraName?: string;
}

function floatOption(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} must be a number, got "${v}"`);
    return n;
  };
}

/** cache options from the Cache-DiT flags (null without --cache/--dbprune/--config); errors name the option */
async function cacheFromFlags(flags: GenerateFlags): Promise<import('../../runtime/pipeline-cache.ts').PipelineCacheOptions | null> {
  const { cacheConfigFromCli } = await import('../../runtime/cache/config.ts');
  if (flags.config && !fs.existsSync(flags.config)) throw new CliError(`--config: ${flags.config} does not exist`);
  const scmAlias: Record<string, string> = { s: 'slow', m: 'medium', f: 'fast', u: 'ultra' };
  let r;
  try {
    r = cacheConfigFromCli({
      cache: flags.cache,
      Fn: flags.Fn,
      Bn: flags.Bn,
      rdt: flags.rdt,
      ws: flags.ws,
      wi: flags.wi,
      mc: flags.mc,
      mcc: flags.mcc,
      taylorseer: flags.taylorseer,
      order: flags.order,
      foca: flags.foca,
      dmd: flags.dmd,
      scm: flags.scm ? ((scmAlias[flags.scm] ?? flags.scm) as 'slow' | 'medium' | 'fast' | 'ultra') : undefined,
      stepsMask: flags.stepsMask,
      scmPolicy: flags.scmPolicy,
      dbprune: flags.dbprune,
      steps: flags.steps,
      config: flags.config,
    });
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  if (!r.cache_config) return null;
  return { cache: r.cache_config, calibrator: r.calibrator_config };
}

function mb(bytes: number): number {
  return Math.round((bytes / 1048576) * 10) / 10;
}

/**
 * Peak resident set size of this process in MB: VmHWM of /proc/self/status on Linux (the high-water mark of
 * this process's own memory; getrusage's ru_maxrss can carry the parent's RSS across fork+exec), else
 * getrusage ru_maxrss.
 */
function peakRssMB(): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Math.round((Number(m[1]) / 1024) * 10) / 10;
  } catch {
    // not Linux
  }
  return Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
}

/**
 * `--latents`: the safetensors tensor "latents", float32, [batch, ...tail] (FLUX: tail [tokens, channels];
 * Wan: [channels, frames, h, w]); `what` names the size in the shape error.
 */
async function readLatentsFile(file: string, tail: number[], tailNames: string, what: string): Promise<{ data: Float32Array; batch: number }> {
  const { openSafetensors } = await import('../../runtime/io/safetensors.ts');
  let f;
  try {
    f = await openSafetensors(file);
  } catch (e) {
    throw new CliError(`--latents: ${(e as Error).message}`);
  }
  if (!f.has('latents')) {
    throw new CliError(`--latents: ${file} has no tensor "latents" (it has: ${f.names().join(', ') || 'no tensors'}); expected "latents" [batch, ${tail.join(', ')}] float32 (${tailNames})`);
  }
  const info = f.info('latents');
  if (info.dtype !== 'F32') throw new CliError(`--latents: ${file}: tensor "latents" is ${info.dtype}, expected F32`);
  const s = info.shape;
  if (s.length !== tail.length + 1 || s[0]! < 1 || tail.some((d, i) => s[i + 1] !== d)) {
    throw new CliError(`--latents: ${file}: tensor "latents" has shape [${s.join(', ')}], expected [batch, ${tail.join(', ')}] (${tailNames}) for ${what}`);
  }
  const data = f.tensor('latents').data;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new CliError(`--latents: ${file}: tensor "latents" has a non-finite value at index ${i}`);
  }
  return { data: Float32Array.from(data), batch: s[0]! };
}

/** per-rank plans compiled on demand (the compiler's compileParallelPlans) */
function parallelPlanProvider(flags: Pick<GenerateFlags, 'world' | 'json'>): import('../../runtime/pipeline-parallel.ts').ParallelPlanProvider {
  return async (component, _dims, parallel, req) => {
    if (!flags.json) process.stderr.write(`compiling ${flags.world} per-rank ${component} plans (${JSON.stringify(parallel)}) ...\n`);
    const { compileParallelPlans, requestOptions } = await importCompiler();
    return compileParallelPlans(req.model, { ...requestOptions(component, req), parallel });
  };
}

/** the generate options every family takes from the flags */
function baseRequest(flags: GenerateFlags, cache: import('../../runtime/pipeline-cache.ts').PipelineCacheOptions | null) {
  return {
    prompt: flags.prompt,
    steps: flags.steps!,
    seed: flags.seed,
    ...(cache ? { cache } : {}),
    ...(flags.maxSequenceLength !== undefined ? { maxSequenceLength: flags.maxSequenceLength } : {}),
    ...(flags.negativePrompt !== undefined ? { negativePrompt: flags.negativePrompt } : {}),
    ...(flags.guidanceScale !== undefined ? { guidanceScale: flags.guidanceScale } : {}),
  };
}

/** the multi-rank options of the flags (world, comm, Cache-DiT's --parallel kind and Ulysses switches) */
function parallelFlags(flags: Pick<GenerateFlags, 'world' | 'comm' | 'parallel' | 'ulyssesAnything' | 'ulyssesFloat8' | 'ulyssesAsync'>) {
  return {
    world: flags.world,
    comm: flags.comm,
    ...(flags.parallel ? { parallel: flags.parallel } : {}),
    ulyssesAnything: flags.ulyssesAnything,
    ulyssesFloat8: flags.ulyssesFloat8,
    ulyssesAsync: flags.ulyssesAsync,
  };
}

interface ProgressBar {
  update(v: number, payload?: object): void;
  stop(): void;
}

/**
 * Progress where there is no terminal (a log, a pipe, --json): a line on stderr at the first and the last step
 * and at most every DITFORGE_PROGRESS_SECONDS (default 5) between; with --json each line is a JSON event
 * {"event":"step",...}, so a long run in a log is visibly alive and stdout keeps its one result object
 */
class ProgressLines implements ProgressBar {
  private last = 0;
  private readonly every: number;
  constructor(
    private readonly total: number,
    private readonly json: boolean,
  ) {
    const s = Number(process.env.DITFORGE_PROGRESS_SECONDS ?? 5);
    this.every = (Number.isFinite(s) && s >= 0 ? s : 5) * 1000;
  }
  update(step: number, payload?: { ms?: string }): void {
    const now = performance.now();
    if (step !== 1 && step !== this.total && now - this.last < this.every) return;
    this.last = now;
    const ms = payload?.ms !== undefined ? Number(payload.ms) : null;
    process.stderr.write(this.json ? `${JSON.stringify({ event: 'step', step, steps: this.total, msPerStep: ms })}\n` : `denoising: step ${step}/${this.total}${ms !== null ? `, ${payload!.ms} ms/step` : ''}\n`);
  }
  stop(): void {}
}

/** the denoising progress: a bar on a TTY, else lines (ProgressLines) */
async function progressBar(flags: GenerateFlags): Promise<ProgressBar | undefined> {
  if (!process.stderr.isTTY || flags.json) return new ProgressLines(flags.steps!, flags.json === true);
  const cliProgress = (await import('cli-progress')).default;
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: 'denoising [{bar}] {value}/{total} steps | {ms} ms/step', hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(flags.steps!, 0, { ms: '-' });
  return bar;
}

/** out.ext -> out_<tag>.ext with caching (Cache-DiT names its outputs by strify()), and _<b> for batch item b > 0 */
function outputName(out: string, cacheTag: string | undefined, b: number, defaultExt: string): string {
  // a directory of frames (`frames/`): name the directory
  if (/[\\/]$/.test(out)) return `${outputName(out.replace(/[\\/]+$/, ''), cacheTag, b, defaultExt)}/`;
  const ext = path.extname(out);
  const stem = out.slice(0, out.length - ext.length);
  const base = cacheTag ? `${stem}_${cacheTag}${ext || defaultExt}` : out;
  if (b === 0) return base;
  const e = path.extname(base);
  return `${base.slice(0, base.length - e.length)}_${b}${e || defaultExt}`;
}

/** `--latents` of an image pipeline: packed [batch, tokens, channels] (FluxPipeline / QwenImagePipeline) */
async function packedLatentsFlag(flags: GenerateFlags, g: { tokens: number; packedChannels: number }, height: number, width: number): Promise<{ latents: Float32Array | undefined; batch: number }> {
  if (!flags.latents) return { latents: undefined, batch: 1 };
  const l = await readLatentsFile(flags.latents, [g.tokens, g.packedChannels], 'tokens, channels', `a ${height}x${width} image`);
  return { latents: l.data, batch: l.batch };
}

async function generate(flags: GenerateFlags): Promise<void> {
  const t0 = performance.now();
  const { loadFluxPipeline, resolveModelDir, SHIPPED_MODELS } = await import('../../runtime/pipeline.ts');

  let model: ReturnType<typeof resolveModelDir>;
  try {
    model = resolveModelDir(flags.model);
  } catch (e) {
    // a directory whose model_index.json is broken or names another pipeline: that file's own error
    if (!(e instanceof Error) || !e.message.startsWith('unknown model')) throw e;
    const known = await knownModels();
    const runnable = known.filter((m) => (SHIPPED_MODELS as readonly string[]).includes(m));
    throw new CliError(
      `unknown model "${flags.model}"; known models: ${known.join(', ')} (models with shipped weights, which generate can run: ${runnable.join(', ')}; or pass a diffusers model directory)`,
    );
  }

  const planProvider = async (component: Component, _dims: PlanDims, req: PlanRequest): Promise<Plan> => {
    if (!flags.json) process.stderr.write(`compiling a ${component} plan (${Object.entries(req.dims).map(([k, v]) => `${k} ${v}`).join(', ')}) ...\n`);
    const { compileRequest } = await importCompiler();
    return compileRequest(component, req);
  };
  // the pipeline's default step count (FluxPipeline 28; WanPipeline, QwenImagePipeline, ZImagePipeline 50)
  flags.steps ??= model.family.pipelineClass === 'FluxPipeline' ? 28 : 50;
  if (flags.device !== 'cpu' && (flags.world > 1 || flags.parallel)) throw new CliError(`--device ${flags.device} with --world / --parallel: the multi-rank path runs on the CPU (its collectives use host buffers); run one rank on ${flags.device}`);
  const { isFluxFamily } = await import('../../runtime/model-dir.ts');
  if (flags.image !== undefined && !isFluxFamily(model.family) && !['ZImagePipeline', 'Flux2KleinPipeline'].includes(model.family.pipelineClass)) throw new CliError(`--image: image-to-image runs on FLUX, Z-Image and FLUX.2-Klein directories here; ${model.family.pipelineClass} has none yet`);
  if ((flags.image?.length ?? 0) > 1 && model.family.pipelineClass !== 'Flux2KleinPipeline') throw new CliError(`--image is given ${flags.image!.length} times: ${model.family.pipelineClass} takes one image (FLUX.2-Klein directories edit from several)`);
  if (flags.mask !== undefined && model.family.pipelineClass !== 'FluxFillPipeline') throw new CliError(`--mask: ${model.family.pipelineClass} does not inpaint (a FluxFillPipeline directory, FLUX.1-Fill, does)`);
  if (model.family.output === 'video') return generateVideo(flags, model, planProvider, t0);
  // the image's format from its extension, the destination writable: before any work
  const { checkImageOutput } = await import('../../runtime/image-file.ts');
  checkImageOutput(flags.out ?? 'out.png');
  if (flags.guidanceScale2 !== undefined) throw new CliError(`--guidance-scale-2 is for Wan 2.2 video directories (two experts); ${model.family.pipelineClass} has one transformer`);
  if (model.family.pipelineClass === 'QwenImagePipeline') return generateQwenImage(flags, model, planProvider, t0);
  if (model.family.pipelineClass === 'ZImagePipeline') return generateZImage(flags, model, planProvider, t0);
  if (model.family.pipelineClass === 'Flux2KleinPipeline' || model.family.pipelineClass === 'OvisImagePipeline') return generatePackedQwen3(flags, model, planProvider, t0);
  flags.out ??= 'out.png';
  if (flags.numFrames !== undefined) throw new CliError(`--num-frames is for video pipelines; ${model.family.pipelineClass} makes images`);
  const pipe = await loadFluxPipeline(model.dir, { threads: flags.threads, device: flags.device, planProvider, ...loraOption(flags), ...memoryOption(flags) });
  const size = pipe.spec.defaultSize();
  const height = flags.height ?? size.height;
  const width = flags.width ?? size.width;
  const g = pipe.spec.geometry(height, width);
  const tiny = model.family.text === 'tiny';

  const { latents, batch } = await packedLatentsFlag(flags, g, height, width);

  const bar = await progressBar(flags);
  const cache = await cacheFromFlags(flags);
  // tiny-flux: --guidance-scale is the true CFG scale; FLUX.1: --true-cfg-scale is (--guidance-scale: the guidance embedding)
  const cfgScale = tiny ? flags.guidanceScale : flags.trueCfgScale;
  if (cfgScale !== undefined && cfgScale > 1 && flags.negativePrompt === undefined) {
    throw new CliError(`${tiny ? '--guidance-scale' : '--true-cfg-scale'} > 1 needs --negative-prompt (true CFG)`);
  }
  // what the one-process and the parallel generate are both asked; VAE-P on one rank is the tiled decode
  // (Cache-DiT's parallelize_vae enables tiling)
  const request = {
    ...baseRequest(flags, cache),
    latents,
    batch,
    height,
    width,
    ...(flags.trueCfgScale !== undefined ? { trueCfgScale: flags.trueCfgScale } : {}),
    ...(flags.vaeTiling || flags.parallelVae ? { vaeTiling: true } : {}),
    ...(flags.image !== undefined ? { image: flags.image[0]! } : {}),
    ...(flags.strength !== undefined ? { strength: flags.strength } : {}),
    ...(flags.mask !== undefined ? { mask: flags.mask } : {}),
  };
  const { r: result, parallelInfo } = await runFamily<import('../../runtime/pipeline.ts').GenerateOptions, GenerateResult>(flags, model, pipe, request, planProvider, bar, { parallelText: flags.parallelText, parallelVae: flags.parallelVae });

  const outputs = await writeImages(flags.out, result);
  await saveLatents(flags, result, 'final packed latents (FluxPipeline output_type="latent")');
  if (result.unknownWords.length) {
    process.stderr.write(`warning: words not in the tiny-flux vocabulary (encoded as <unk>): ${result.unknownWords.join(', ')}\n`);
  }
  await printCacheSummary(flags, result.cache);
  const wall = performance.now() - t0;
  if (flags.json) {
    const out = {
      ...(await runJson(flags, { name: model.name, outputs, batch, result, threads: pipe.threads(), arenaBytes: pipe.arenaBytes(), wall, parallel: parallelInfo })),
      unknownWords: result.unknownWords,
      ...(flags.negativePrompt !== undefined ? { negativePrompt: flags.negativePrompt, guidanceScale: flags.guidanceScale ?? 1 } : {}),
    };
    process.stdout.write(JSON.stringify(out) + '\n');
  } else {
    process.stderr.write(
      `wrote ${outputs.join(', ')} (${result.width}x${result.height}, ${result.steps} steps, ${(result.timings.perStep).toFixed(1)} ms/step, ` +
        `total ${(wall / 1000).toFixed(2)} s, peak RSS ${peakRssMB()} MB)\n`,
    );
  }
}

/** the `--json` fields every pipeline family's generate prints (timings in ms, rounded to 0.01) */
async function runJson(
  flags: GenerateFlags,
  o: {
    name: string;
    outputs: string[];
    batch: number;
    result: { steps: number; seed: number | null; height: number; width: number; inputIds: number[]; timings: object; cache?: import('../../runtime/pipeline-cache.ts').PipelineCacheResult };
    threads: number | null;
    arenaBytes: number;
    wall: number;
    parallel: Record<string, unknown> | null;
  },
): Promise<Record<string, unknown>> {
  const round = (x: number) => Math.round(x * 100) / 100;
  const r = o.result;
  const { summaryJson } = await import('../../runtime/pipeline-cache.ts');
  // Cache-DiT's field names of the first block list at the top level, all lists under `lists`
  const lists = r.cache ? r.cache.summary.map(summaryJson) : [];
  return {
    output: path.resolve(o.outputs[0]!),
    outputs: o.outputs.map((f) => path.resolve(f)),
    model: o.name,
    prompt: flags.prompt,
    steps: r.steps,
    seed: r.seed,
    latents: flags.latents ? path.resolve(flags.latents) : null,
    saveLatents: flags.saveLatents ? path.resolve(flags.saveLatents) : null,
    batch: o.batch,
    height: r.height,
    width: r.width,
    threads: o.threads,
    inputIds: r.inputIds,
    timings: { ...Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, round(v as number)])), wall: round(o.wall) },
    timingsUnit: 'ms',
    peakRssMB: peakRssMB(),
    arenaMB: mb(o.arenaBytes),
    ...(o.parallel ? { parallel: o.parallel } : {}),
    ...(r.cache ? { cache: { tag: r.cache.tag, ...(lists[0] ?? {}), lists, probes: r.cache.probes } } : {}),
  };
}

/** the cache summary table on stderr (--summary) */
async function printCacheSummary(flags: GenerateFlags, cache: import('../../runtime/pipeline-cache.ts').PipelineCacheResult | undefined): Promise<void> {
  if (!cache || !flags.summary) return;
  const { formatSummaryTable } = await import('../../runtime/pipeline-cache.ts');
  for (const s of cache.summary) process.stderr.write(`Optimization: ${s.tag}\n${formatSummaryTable(s)}\n`);
}

/** a request of any family on one rank (the pipeline) or on --world ranks (runtime/pipeline-parallel.ts) */
async function runFamily<O extends { onStep?: unknown }, R extends { timings: { perStep: number } }>(
  flags: GenerateFlags,
  model: { dir: string },
  pipe: { generate(o: O): Promise<R> },
  request: O,
  planProvider: import('../../runtime/pipeline.ts').PlanProvider,
  bar: ProgressBar | undefined,
  extra: { parallelText?: boolean; parallelVae?: boolean } = {},
): Promise<{ r: R; parallelInfo: Record<string, unknown> | null }> {
  try {
    if (flags.world > 1 || flags.parallel) {
      const { generateParallel } = await import('../../runtime/pipeline-parallel.ts');
      const pr = await generateParallel<R>(model.dir, {
        ...(request as object as import('../../runtime/pipeline-parallel.ts').AnyGenerateOptions),
        ...parallelFlags(flags),
        ...extra,
        ...(flags.threads ? { threads: flags.threads } : {}),
        planProvider,
        parallelPlanProvider: parallelPlanProvider(flags),
        ...loraOption(flags),
      });
      bar?.update(flags.steps!, { ms: pr.timings.perStep.toFixed(1) });
      const info = { world: pr.world, comm: pr.backend, parallel: pr.parallel.kind, ulyssesAnything: pr.parallel.anything, ulyssesFloat8: pr.parallel.float8, ulyssesAsync: pr.parallel.async, ranks: pr.ranks };
      return { r: pr, parallelInfo: info };
    }
    const onStep = bar ? (st: { step: number; ms: number }) => bar.update(st.step, { ms: st.ms.toFixed(1) }) : undefined;
    return { r: await pipe.generate({ ...request, onStep }), parallelInfo: null };
  } finally {
    bar?.stop();
  }
}

/** `generate` for a video pipeline directory (WanPipeline): frames to .mp4 / .webp / .gif / a PNG directory */
async function generateVideo(flags: GenerateFlags, model: { dir: string; name: string; family: import('../../runtime/model-dir.ts').PipelineFamily }, planProvider: import('../../runtime/pipeline.ts').PlanProvider, t0: number): Promise<void> {
  const cls = model.family.pipelineClass;
  const notHere: [string, unknown][] = [
    ['--true-cfg-scale', flags.trueCfgScale],
    ['--parallel-vae', flags.parallelVae],
    ['--vae-tiling', flags.vaeTiling],
  ];
  for (const [flag, v] of notHere) if (v !== undefined && v !== false) throw new CliError(`${flag} is not an option of ${cls} (CFG: --guidance-scale, with --negative-prompt or the empty one)`);
  const { loadWanPipeline } = await import('../../runtime/pipeline.ts');
  const { checkVideoOutput, writeVideo } = await import('../../runtime/video.ts');
  const out = flags.out ?? 'out.mp4';
  const pipe = await loadWanPipeline(model.dir, { ...(flags.threads ? { threads: flags.threads } : {}), device: flags.device, planProvider, ...loraOption(flags), ...memoryOption(flags) });
  const def = pipe.spec.defaultSize();
  const height = flags.height ?? def.height;
  const width = flags.width ?? def.width;
  const numFrames = flags.numFrames ?? def.numFrames;
  const g = pipe.spec.geometry(height, width, numFrames);
  // every output path is checked before any compute (a batch writes out, out_1, ...; caching adds the tag)
  checkVideoOutput(out);
  let latents: Float32Array | undefined;
  let batch = 1;
  if (flags.latents) {
    const l = await readLatentsFile(flags.latents, [pipe.spec.latentChannels, g.frames, g.h, g.w], 'channels, latent frames, height / 8, width / 8', `${numFrames} frames of ${height}x${width}`);
    latents = l.data;
    batch = l.batch;
  }
  const cache = await cacheFromFlags(flags);
  const bar = await progressBar(flags);
  const request = { ...baseRequest(flags, cache), ...(latents ? { latents, batch } : {}), height, width, numFrames, ...(flags.guidanceScale2 !== undefined ? { guidanceScale2: flags.guidanceScale2 } : {}) };
  const { r, parallelInfo } = await runFamily<import('../../runtime/pipelines/wan.ts').VideoGenerateOptions, import('../../runtime/pipelines/wan.ts').VideoGenerateResult>(flags, model, pipe, request, planProvider, bar, { parallelText: flags.parallelText });
  const outputs: string[] = [];
  const targets = r.videos.map((_, b) => checkVideoOutput(outputName(out, r.cache?.tag, b, '')));
  for (let b = 0; b < r.videos.length; b++) {
    await writeVideo(targets[b]!, r.videos[b]!, r.numFrames, r.height, r.width, WAN_FPS);
    outputs.push(targets[b]!.path);
  }
  await saveLatents(flags, r, 'final latents [B, C, F, H, W] (WanPipeline output_type="latent")', { num_frames: String(r.numFrames) });
  await printCacheSummary(flags, r.cache);
  const wall = performance.now() - t0;
  if (flags.json) {
    const out = {
      ...(await runJson(flags, { name: model.name, outputs, batch, result: r, threads: pipe.threads(), arenaBytes: pipe.arenaBytes(), wall, parallel: parallelInfo })),
      pipeline: cls,
      numFrames: r.numFrames,
      fps: WAN_FPS,
      guidanceScale: flags.guidanceScale ?? 5,
      ...(flags.negativePrompt !== undefined ? { negativePrompt: flags.negativePrompt } : {}),
    };
    process.stdout.write(JSON.stringify(out) + '\n');
  } else {
    process.stderr.write(
      `wrote ${outputs.join(', ')} (${r.numFrames} frames of ${r.width}x${r.height}, ${r.steps} steps, ${r.timings.perStep.toFixed(1)} ms/step, total ${(wall / 1000).toFixed(2)} s, peak RSS ${peakRssMB()} MB)\n`,
    );
  }
}

/**
 * Writes a result's images as PNG: out, out_1, ... per batch item; with caching the file name carries the run
 * tag (Cache-DiT's generate names its images by strify(): out.png -> out_DBCache_F1B0_W8I1M0MC3_R0.12_..._S11.png)
 */
async function writeImages(out: string, r: { images: Uint8Array[]; width: number; height: number; cache?: { tag: string } }): Promise<string[]> {
  const { writeImage } = await import('../../runtime/image-file.ts');
  const files = r.images.map((_, b) => outputName(out, r.cache?.tag, b, '.png'));
  for (const [b, file] of files.entries()) await writeImage(file, r.images[b]!, r.width, r.height);
  return files;
}

/** `generate` for a QwenImagePipeline directory (one rank; PNG out) */
async function generateQwenImage(flags: GenerateFlags, model: { dir: string; name: string; family: import('../../runtime/model-dir.ts').PipelineFamily }, planProvider: import('../../runtime/pipeline.ts').PlanProvider, t0: number): Promise<void> {
  const cls = model.family.pipelineClass;
  for (const [flag, v] of [['--parallel-vae', flags.parallelVae], ['--vae-tiling', flags.vaeTiling], ['--guidance-scale', flags.guidanceScale]] as const) {
    if (v !== undefined && v !== false) throw new CliError(`${flag} is not supported for ${cls} directories yet (true CFG: --negative-prompt with --true-cfg-scale)`);
  }
  const { loadQwenImagePipeline } = await import('../../runtime/pipeline.ts');
  const out = flags.out ?? 'out.png';
  const pipe = await loadQwenImagePipeline(model.dir, { ...(flags.threads ? { threads: flags.threads } : {}), device: flags.device, planProvider, ...loraOption(flags), ...memoryOption(flags) });
  const height = flags.height ?? pipe.spec.defaultSize().height;
  const width = flags.width ?? pipe.spec.defaultSize().width;
  const g = pipe.spec.geometry(height, width);
  const { latents, batch } = await packedLatentsFlag(flags, g, height, width);
  const cache = await cacheFromFlags(flags);
  const bar = await progressBar(flags);
  type Opts = import('../../runtime/pipelines/qwen-image.ts').QwenImageGenerateOptions;
  type Res = import('../../runtime/pipelines/qwen-image.ts').QwenImageResult;
  const request: Opts = { ...baseRequest(flags, cache), ...(latents ? { latents, batch } : {}), height, width, ...(flags.trueCfgScale !== undefined ? { trueCfgScale: flags.trueCfgScale } : {}) };
  const { r, parallelInfo } = await runFamily<Opts, Res>(flags, model, pipe, request, planProvider, bar, { parallelText: flags.parallelText });
  const outputs = await writeImages(out, r);
  await reportImageRun(flags, model, pipe, { r, outputs, batch, t0, parallelInfo }, { trueCfgScale: flags.trueCfgScale ?? 4 });
}

/** --save-latents: the final latents as safetensors tensor "latents", with the request and `kind` as metadata */
async function saveLatents(flags: GenerateFlags, r: { latentsShape: readonly number[]; latents: Float32Array; steps: number; seed: number | null; height: number; width: number }, kind: string, extra: Record<string, string> = {}): Promise<void> {
  if (!flags.saveLatents) return;
  const { writeSafetensors } = await import('../../runtime/io/safetensors.ts');
  fs.mkdirSync(path.dirname(path.resolve(flags.saveLatents)), { recursive: true });
  writeSafetensors(
    flags.saveLatents,
    { latents: { dtype: 'F32', shape: [...r.latentsShape], data: r.latents } },
    { prompt: flags.prompt, steps: String(r.steps), seed: r.seed === null ? '' : String(r.seed), height: String(r.height), width: String(r.width), ...extra, kind },
  );
}

/** the end of an image family's `generate`: --json's object (with the family's own fields) or the one-line summary */
async function reportImageRun(
  flags: GenerateFlags,
  model: { name: string; family: import('../../runtime/model-dir.ts').PipelineFamily },
  pipe: { threads(): number | null; arenaBytes(): number },
  run: { r: Parameters<typeof runJson>[1]['result'] & { width: number; height: number; steps: number; timings: { perStep: number } }; outputs: string[]; batch: number; t0: number; parallelInfo: Parameters<typeof runJson>[1]['parallel'] },
  extra: Record<string, unknown>,
): Promise<void> {
  const { r, outputs, batch, t0, parallelInfo } = run;
  const wall = performance.now() - t0;
  if (flags.json) {
    const j = { ...(await runJson(flags, { name: model.name, outputs, batch, result: r, threads: pipe.threads(), arenaBytes: pipe.arenaBytes(), wall, parallel: parallelInfo })), pipeline: model.family.pipelineClass, ...extra };
    process.stdout.write(JSON.stringify(j) + '\n');
  } else {
    process.stderr.write(`wrote ${outputs.join(', ')} (${r.width}x${r.height}, ${r.steps} steps, ${r.timings.perStep.toFixed(1)} ms/step, total ${(wall / 1000).toFixed(2)} s, peak RSS ${peakRssMB()} MB)\n`);
  }
}

/** `generate` for a ZImagePipeline directory (PNG out; --latents [B, 16, H/8, W/8] as diffusers' latents=) */
async function generateZImage(flags: GenerateFlags, model: { dir: string; name: string; family: import('../../runtime/model-dir.ts').PipelineFamily }, planProvider: import('../../runtime/pipeline.ts').PlanProvider, t0: number): Promise<void> {
  const cls = model.family.pipelineClass;
  for (const [flag, v] of [['--parallel-vae', flags.parallelVae], ['--vae-tiling', flags.vaeTiling], ['--true-cfg-scale', flags.trueCfgScale]] as const) {
    if (v !== undefined && v !== false) throw new CliError(`${flag} is not supported for ${cls} directories (CFG: --guidance-scale, 0 turns it off)`);
  }
  const { loadZImagePipeline } = await import('../../runtime/pipeline.ts');
  const out = flags.out ?? 'out.png';
  const pipe = await loadZImagePipeline(model.dir, { ...(flags.threads ? { threads: flags.threads } : {}), device: flags.device, planProvider, ...loraOption(flags), ...memoryOption(flags) });
  // with --image the size defaults to the image's (ZImageImg2ImgPipeline)
  const size = flags.image !== undefined ? { height: flags.height, width: flags.width } : { height: flags.height ?? pipe.spec.defaultSize().height, width: flags.width ?? pipe.spec.defaultSize().width };
  let latents: Float32Array | undefined;
  let batch = 1;
  if (flags.latents) {
    const { height, width } = pipe.spec.resolve({ prompt: flags.prompt, ...size, ...(flags.image !== undefined ? { image: flags.image[0]! } : {}) });
    const g = pipe.spec.geometry(height, width);
    const l = await readLatentsFile(flags.latents, [pipe.spec.latentChannels, g.lh, g.lw], 'channels, height / 8, width / 8', `a ${height}x${width} image`);
    latents = l.data;
    batch = l.batch;
  }
  const cache = await cacheFromFlags(flags);
  const bar = await progressBar(flags);
  type Opts = import('../../runtime/pipelines/z-image.ts').ZImageGenerateOptions;
  type Res = import('../../runtime/pipelines/z-image.ts').ZImageResult;
  const request: Opts = {
    ...baseRequest(flags, cache),
    ...(latents ? { latents, batch } : {}),
    ...(size.height !== undefined ? { height: size.height } : {}),
    ...(size.width !== undefined ? { width: size.width } : {}),
    ...(flags.guidanceScale !== undefined ? { guidanceScale: flags.guidanceScale } : {}),
    ...(flags.image !== undefined ? { image: flags.image[0]! } : {}),
    ...(flags.strength !== undefined ? { strength: flags.strength } : {}),
  };
  const { r, parallelInfo } = await runFamily<Opts, Res>(flags, model, pipe, request, planProvider, bar, { parallelText: flags.parallelText });
  const outputs = await writeImages(out, r);
  await saveLatents(flags, r, 'final latents [B, C, H/8, W/8] (ZImagePipeline output_type="latent")');
  await printCacheSummary(flags, r.cache);
  await reportImageRun(flags, model, pipe, { r, outputs, batch, t0, parallelInfo }, { guidanceScale: flags.guidanceScale ?? 5 });
}

/**
 * `generate` for the Qwen3-conditioned FLUX-layout families, Flux2KleinPipeline and OvisImagePipeline (PNG out;
 * --latents packed [B, tokens, 4 x latent channels] as diffusers' latents=; Klein: --image once per reference image)
 */
async function generatePackedQwen3(flags: GenerateFlags, model: { dir: string; name: string; family: import('../../runtime/model-dir.ts').PipelineFamily }, planProvider: import('../../runtime/pipeline.ts').PlanProvider, t0: number): Promise<void> {
  const cls = model.family.pipelineClass;
  const klein = cls === 'Flux2KleinPipeline';
  for (const [flag, v] of [['--parallel-vae', flags.parallelVae], ['--vae-tiling', flags.vaeTiling], ['--true-cfg-scale', flags.trueCfgScale]] as const) {
    if (v !== undefined && v !== false) throw new CliError(`${flag} is not supported for ${cls} directories (CFG: --guidance-scale, 1 turns it off)`);
  }
  const { loadFlux2KleinPipeline, loadOvisImagePipeline } = await import('../../runtime/pipeline.ts');
  const { decodeRequestImages } = await import('../../runtime/image-input.ts');
  const out = flags.out ?? 'out.png';
  const options = { ...(flags.threads ? { threads: flags.threads } : {}), device: flags.device, planProvider, ...loraOption(flags), ...memoryOption(flags) };
  const pipe = klein ? await loadFlux2KleinPipeline(model.dir, options) : await loadOvisImagePipeline(model.dir, options);
  // with --image the size defaults to the first reference image's
  const images = { ...(flags.image ? await decodeRequestImages({ image: flags.image }) : {}), ...(flags.strength !== undefined ? { strength: flags.strength } : {}) };
  const q = pipe.spec.resolve({ prompt: flags.prompt, ...(flags.height !== undefined ? { height: flags.height } : {}), ...(flags.width !== undefined ? { width: flags.width } : {}), ...images });
  const { height, width } = q;
  const { latents, batch } = await packedLatentsFlag(flags, { tokens: q.latentsShape[1]!, packedChannels: q.latentsShape[2]! }, height, width);
  const given = await cacheFromFlags(flags);
  const cache = given && ('alignCache' in pipe.spec ? pipe.spec.alignCache(given) : given);
  const bar = await progressBar(flags);
  type Opts = import('../../runtime/pipelines/flux2.ts').Flux2GenerateOptions;
  type Res = import('../../runtime/pipelines/flux2.ts').Flux2Result;
  const request: Opts = { ...baseRequest(flags, cache), ...(latents ? { latents, batch } : {}), height, width, ...images };
  const { r, parallelInfo } = await runFamily<Opts, Res>(flags, model, pipe as import('../../runtime/pipeline.ts').Pipeline, request, planProvider, bar, { parallelText: flags.parallelText });
  const outputs = await writeImages(out, r);
  await saveLatents(flags, r, `final packed latents [B, tokens, 4 x latent channels]${klein ? ' before the BatchNorm is undone' : ` (${cls} output_type="latent")`}`);
  await printCacheSummary(flags, r.cache);
  await reportImageRun(flags, model, pipe, { r, outputs, batch, t0, parallelInfo }, { guidanceScale: flags.guidanceScale ?? (klein ? 4 : 5), ...('distilled' in pipe.spec ? { distilled: pipe.spec.distilled } : {}) });
}

/** WanPipeline's examples export at 16 fps */
const WAN_FPS = 16;

// ---- program ----

function buildProgram(): Command {
  const program = new Command();
  program
    .name('ditforge')
    .description('A TypeScript compiler toolchain for Diffusion Transformer inference')
    .showHelpAfterError(false)
    .configureOutput({ writeErr: (s) => process.stderr.write(s), outputError: (s, write) => write(s.endsWith('\n') ? s : s + '\n') })
    .exitOverride();

  withParallelFlags(withCacheFlags(program
    .command('generate')))
    .description('generate an image (FluxPipeline) or a video (WanPipeline) from a prompt, CPU')
    .requiredOption('--model <name>', 'model name (tiny-flux) or a diffusers model directory')
    .requiredOption('--prompt <text>', 'the prompt')
    .addOption(new Option('--steps <n>', "denoising steps (default: the pipeline's, FLUX 28, Wan 50)").argParser(intOption('--steps', 1)))
    .addOption(new Option('--num-frames <n>', 'Wan: frames (4k+1, default 81)').argParser(intOption('--num-frames', 1)))
    .option('--seed <n>', 'noise seed (torch.randn-compatible generator)', intOption('--seed', 0, 'a non-negative integer'), 0)
    .addOption(new Option('--height <px>', "image height (a multiple of the VAE scale x 2; default: the pipeline's, tiny-flux 32, FLUX.1 1024)").argParser(intOption('--height', 1, 'a positive integer')))
    .addOption(new Option('--width <px>', "image width (a multiple of the VAE scale x 2; default: the pipeline's)").argParser(intOption('--width', 1, 'a positive integer')))
    .addOption(new Option('--true-cfg-scale <x>', 'FLUX.1: true_cfg_scale, true CFG with --negative-prompt when > 1').argParser(floatOption('--true-cfg-scale')))
    .addOption(new Option('--max-sequence-length <n>', 'FLUX.1: T5 tokens (max_sequence_length, default 512)').argParser(intOption('--max-sequence-length', 1)))
    .option('--latents <file>', 'initial packed latents: safetensors with tensor "latents" [batch, tokens, channels] float32')
    .option('--save-latents <file>', 'write the final packed latents (safetensors, tensor "latents")')
    .option('--out <file>', 'output: images .png (default out.png), .jpg / .jpeg or .webp; videos .mp4 (default out.mp4), .webp, .gif or a directory of PNG frames')
    .option('--json', 'print one JSON object on stdout (logs go to stderr)')
    .addOption(new Option('--threads <n>', 'executor threads (per rank with --world > 1)').argParser(intOption('--threads', 1)))
    .option('--device <d>', 'where the plans run: cpu, cuda or cuda:N (a device that is not there is a clear error)', 'cpu')
    .addOption(new Option('--max-memory <GiB>', "refuse a request whose plans need more memory than this (default: the machine's), before any work").argParser(floatOption('--max-memory')))
    .option('--parallel-vae', 'VAE-P: tiled decode with tile #c on rank c % world, rank 0 blends, every rank gets the image (implies --vae-tiling)')
    .option('--vae-tiling', 'diffusers vae.enable_tiling(): decode in overlapping tiles (blended) when the latents exceed one tile')
    .option('--negative-prompt <text>', 'negative prompt (true CFG: tiny-flux with --guidance-scale > 1, FLUX.1 with --true-cfg-scale > 1)')
    .option('--image <png>', 'image-to-image (FluxImg2ImgPipeline, ZImageImg2ImgPipeline): start from this PNG / JPEG, resized to --height x --width; FLUX.2-Klein: a reference image to edit from (repeat for several)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .addOption(new Option('--strength <s>', 'with --image: how much noise the image gets, 0..1 (default 0.6; FLUX.1-Fill 1)').argParser(floatOption('--strength')))
    .option('--mask <png>', 'FLUX.1-Fill (FluxFillPipeline) directories: the inpainting mask for --image, white repaints')
    .option('--guidance-scale <x>', 'FLUX.1: guidance_scale (the distilled guidance embedding, default 3.5); tiny-flux: true_cfg_scale, noise = neg + scale * (pos - neg)', floatOption('--guidance-scale'))
    .option('--guidance-scale-2 <x>', 'Wan 2.2: guidance_scale_2, the CFG scale of the low-noise expert (transformer_2; default --guidance-scale)', floatOption('--guidance-scale-2'))
    .option('--lora-path <file>', 'a LoRA (diffusers / peft safetensors: <module>.lora_A / lora_B) fused into the transformer weights')
    .option('--lora-scale <x>', 'lora_scale of --lora-path (default 1)', floatOption('--lora-scale'))
    .option('--disable-fuse-lora', 'run the LoRA unfused: low-rank branches beside the untouched base weights (one rank; switching adapters of the same shape binds only the branches)')
    .option('--summary', 'print the cache summary table on stderr')
    .action(async (opts: GenerateFlags) => {
      await generate(opts);
    });

  withParallelFlags(withCacheFlags(program.command('serve')))
    .description("serve a model over HTTP: Cache-DiT's /generate, /health, /get_model_info, /flush_cache; OpenAI-style /v1/images/generations, /v1/videos; /metrics")
    .requiredOption('--model <name|dir>', 'model name or diffusers directory')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', intOption('--port', 0), 8000)
    .option('--threads <n>', 'executor threads', intOption('--threads', 1))
    .option('--device <d>', 'where the plans run: cpu, cuda or cuda:N', 'cpu')
    .addOption(new Option('--max-memory <GiB>', "refuse a request whose plans need more memory than this (default: the machine's), before any work (a 400)").argParser(floatOption('--max-memory')))
    .option('--max-concurrency <n>', 'generations at once (the pipeline runs one at a time: 1)', intOption('--max-concurrency', 1), 1)
    .option('--max-queue <n>', 'requests waiting beyond the running ones; more get 429', intOption('--max-queue', 0), 16)
    .option('--max-batch <n>', 'run up to n waiting requests with the same options (but prompt and seed) as one batch (FLUX pipelines, requests without cache options); 1: no batching', intOption('--max-batch', 1), 1)
    .option('--request-timeout <s>', 'seconds until a request is cancelled (queued: dropped; running: stopped at its next step)', floatOption('--request-timeout'), 600)
    .option('--max-body-mb <n>', 'request body limit (larger: 413)', floatOption('--max-body-mb'), 32)
    .option('--lora-path <file>', 'a LoRA (diffusers / peft safetensors: <module>.lora_A / lora_B; or a directory with --lora-name) in effect for requests that name none')
    .option('--lora-name <file>', "with a directory --lora-path: the LoRA file in it (Cache-DiT's --lora-name)")
    .option('--lora-nickname <name>', 'the name requests and /v1/set_lora call --lora-path by (default: its file name)')
    .option('--lora-scale <x>', 'lora_scale of --lora-path (default 1)', floatOption('--lora-scale'))
    .option('--disable-fuse-lora', 'run the LoRA unfused: low-rank branches beside the untouched base weights (one rank; switching adapters of the same shape binds only the branches)')
    .option('--max-loras <n>', 'LoRA files kept read (least recently used out)', intOption('--max-loras', 1), 8)
    .action(async (opts: ServeFlags) => {
      await serve(opts);
    });

  program
    .command('compile')
    .description('compile a model: kernels + plan.json (+ model.onnx)')
    .argument('<model>', 'model name or model file')
    .addOption(new Option('--target <target>', 'backend').choices(['cpu', 'cuda']).default('cpu'))
    .option('--out <dir>', 'output directory')
    .allowUnknownOption(false)
    .action(async (model: string, opts: { target: 'cpu' | 'cuda'; out?: string }) => {
      const { runCompile } = await importCommands();
      await runCompile(model, { target: opts.target, ...(opts.out ? { out: opts.out } : {}) });
    });

  program
    .command('inspect')
    .description('print a model: config, blocks, parameters, plan summary')
    .argument('<model>', 'model name, model file or diffusers directory')
    .option('--json', 'one JSON object: params and flops per component, block lists, cache lists')
    .action(async (model: string, o: { json?: boolean }) => {
      const { runInspect } = await importCommands();
      await runInspect(model, o.json ? { json: true } : {});
    });

  return program;
}

function errorLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/^error:\s*/i, '').trim();
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its message (help and version exit 0)
      return e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 1;
    }
    process.stderr.write(`error: ${errorLine(e)}\n`);
    if (DEBUG && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
    return 1;
  }
}

const code = await main(process.argv);
// exit once stdout/stderr are flushed (the native thread pool must not keep the process alive)
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));

interface ServeFlags extends Pick<GenerateFlags, 'world' | 'comm' | 'parallel' | 'ulyssesAnything' | 'ulyssesFloat8' | 'ulyssesAsync' | 'parallelText' | 'loraPath' | 'loraScale' | 'loraName' | 'disableFuseLora' | 'maxMemory' | 'cache' | 'Fn' | 'Bn' | 'rdt' | 'ws' | 'wi' | 'mc' | 'mcc' | 'taylorseer' | 'order' | 'foca' | 'dmd' | 'scm' | 'scmPolicy' | 'stepsMask' | 'dbprune' | 'config'> {
  model: string;
  host: string;
  port: number;
  threads: number;
  device: string;
  world: number;
  maxConcurrency: number;
  maxQueue: number;
  maxBatch: number;
  requestTimeout: number;
  maxBodyMb: number;
  loraNickname?: string;
  maxLoras: number;
}

/** `serve`: load the pipeline, compile missing plans on demand, listen until SIGINT / SIGTERM */
async function serve(flags: ServeFlags): Promise<void> {
  const { loadPipeline } = await import('../../runtime/pipeline.ts');
  const { createServer } = await import('../../runtime/serve/server.ts');
  const { localServed, startRankServing } = await import('../../runtime/serve/ranks.ts');
  const planProvider = async (component: Component, _dims: PlanDims, req: PlanRequest): Promise<Plan> => {
    const { compileRequest } = await importCompiler();
    return compileRequest(component, req);
  };
  const { LoraLibrary } = await import('../../runtime/lora.ts');
  const { lora, fuseLora } = loraOption(flags);
  const loraLibrary = new LoraLibrary(flags.maxLoras);
  if (flags.world > 1 && flags.device !== 'cpu') throw new CliError(`--world ${flags.world} serves on CPU ranks here; --device ${flags.device} with several ranks is not supported yet`);
  const pipe =
    flags.world > 1 || flags.parallel
      ? await startRankServing(flags.model, { ...parallelFlags(flags), ...(flags.threads ? { threads: flags.threads } : {}), planProvider, parallelPlanProvider: parallelPlanProvider(flags), parallelText: flags.parallelText === true, loraLibrary, ...(lora ? { lora } : {}) })
      : localServed(await loadPipeline(flags.model, { threads: flags.threads, device: flags.device, planProvider, loraLibrary, ...(lora ? { lora } : {}), ...(fuseLora === false ? { fuseLora } : {}), ...memoryOption(flags) }));
  const defaultCache = await cacheFromFlags({ ...flags, steps: undefined } as unknown as GenerateFlags);
  const { app } = createServer(pipe, { modelName: pipe.name, maxConcurrency: flags.maxConcurrency, maxQueue: flags.maxQueue, maxBatch: flags.maxBatch, requestTimeoutS: flags.requestTimeout, maxBodyMb: flags.maxBodyMb, defaultCache, ...(lora ? { loras: lora.map((l) => ({ ...l, ...(flags.loraNickname ? { nickname: flags.loraNickname } : {}) })) } : {}) });
  const addr = await app.listen({ host: flags.host, port: flags.port });
  process.stderr.write(`ditforge serve: ${pipe.family.pipelineClass} ${pipe.name} on ${addr}${pipe.world > 1 ? ` (${pipe.world} ranks)` : ''}${defaultCache ? ' (DBCache on)' : ''}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      void app.close().then(() => pipe.close()).then(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** --max-memory GiB as the pipelines' maxMemoryBytes (the default is the machine's memory) */
function memoryOption(flags: { maxMemory?: number }): { maxMemoryBytes?: number } {
  return flags.maxMemory !== undefined ? { maxMemoryBytes: flags.maxMemory * 2 ** 30 } : {};
}

/** --lora-path / --lora-scale as the pipelines' `lora` option (a diffusers / peft LoRA fused into the transformer) */
function loraOption(flags: { loraPath?: string; loraScale?: number; loraName?: string; disableFuseLora?: boolean; world?: number; parallel?: string }): { lora?: { path: string; scale: number }[]; fuseLora?: false } {
  if ((flags.loraScale !== undefined || flags.loraName !== undefined) && !flags.loraPath) throw new CliError(`${flags.loraName !== undefined ? '--lora-name' : '--lora-scale'} needs --lora-path`);
  if (flags.disableFuseLora && ((flags.world ?? 1) > 1 || flags.parallel)) throw new CliError('--disable-fuse-lora runs on one rank here (the ranks of --world / --parallel fuse their adapters)');
  const unfused = flags.disableFuseLora ? { fuseLora: false as const } : {};
  if (!flags.loraPath) return unfused;
  let file = flags.loraPath;
  // Cache-DiT's form: a directory and the file in it
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    if (!flags.loraName) throw new CliError(`--lora-path ${file} is a directory: name the LoRA file in it with --lora-name (it has: ${fs.readdirSync(file).filter((f) => f.endsWith('.safetensors')).join(', ') || 'no .safetensors'})`);
    file = path.join(file, flags.loraName);
  } else if (flags.loraName) throw new CliError(`--lora-name is for a directory --lora-path; ${file} is not one`);
  return { lora: [{ path: file, scale: flags.loraScale ?? 1 }], ...unfused };
}

/** the ranks and their parallelism (generate and serve take the same) */
function withParallelFlags(c: Command): Command {
  return c
    .option('--world <n>', 'ranks (context parallelism); > 1 without --parallel: Ulysses, UAA where the sizes need it', intOption('--world', 1), 1)
    .addOption(new Option('--comm <backend>', 'communicator of the ranks (serve: shm)').choices(['shm', 'mpi']).default('shm'))
    .addOption(new Option('--parallel <kind>', 'parallelism (Cache-DiT spelling)').choices(['ulysses', 'ring', 'usp', 'tp', 'ulysses_tp', 'ring_tp', 'tp_ulysses', 'tp_ring', 'usp_tp']))
    .option('--ulysses-anything', 'UAA: any token count (uneven splits) and any head count')
    .option('--ulysses-float8', 'FP8 e4m3 all-to-all for Q, V and O')
    .option('--ulysses-async', 'async Ulysses: each of V, Q, K all-to-all issued right after its projection')
    .option('--parallel-text', 'TE-P: the text encoder tensor-parallel over all ranks (its heads must divide --world)');
}

/** Cache-DiT's cache flags (generate and serve take the same) */
function withCacheFlags(c: Command): Command {
  return c
    .option('--cache', 'enable DBCache (Cache-DiT flags below; CLI defaults --Fn 1 --Bn 0 --rdt 0.12 --ws 8 --wi 1 --mc -1 --mcc 3)')
    .option('--Fn <n>', 'Fn_compute_blocks', intOption('--Fn', 1))
    .option('--Bn <n>', 'Bn_compute_blocks', intOption('--Bn', 0))
    .option('--rdt <x>', 'residual_diff_threshold', floatOption('--rdt'))
    .option('--ws <n>', 'max_warmup_steps', intOption('--ws', 0))
    .option('--wi <n>', 'warmup_interval', intOption('--wi', 1))
    .option('--mc <n>', 'max_cached_steps (-1: unlimited)', intOption('--mc', -1, 'an integer >= -1'))
    .option('--mcc <n>', 'max_continuous_cached_steps (-1: unlimited)', intOption('--mcc', -1, 'an integer >= -1'))
    .option('--taylorseer', 'TaylorSeer calibrator')
    .addOption(new Option('--order <n>', 'TaylorSeer order').argParser(intOption('--order', 1)))
    .option('--foca', 'FoCa calibrator')
    .option('--dmd', 'DMD calibrator')
    .addOption(new Option('--scm <policy>', 'steps computation mask policy (implies --steps-mask)').choices(['slow', 's', 'medium', 'm', 'fast', 'f', 'ultra', 'u']))
    .addOption(new Option('--scm-policy <p>', 'steps_computation_policy').choices(['dynamic', 'static']))
    .option('--steps-mask', 'use a steps computation mask (policy medium unless --scm)')
    .option('--dbprune', 'DBPrune (dynamic block prune) instead of DBCache')
    .option('--config <file>', 'Cache-DiT YAML config (cache_config / calibrator_config keys; overrides the flags)');
}
