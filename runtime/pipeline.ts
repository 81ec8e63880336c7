// The one diffusion pipeline: a family's PipelineSpec (runtime/pipelines/<family>.ts: its request, plans,
// tokenizers and text encoders, noise, transformer inputs, scheduler, CFG and VAE) over component executors.
// One process runs every component on local executors; a rank of a multi-rank run is the same Pipeline whose
// executors for the components it was given parallel plans of run those on ParallelExecutors
// (runtime/parallel/rank-executor.ts), so both run one loop: cond, then uncond (Cache-DiT's separate-CFG
// order), the combine, the scheduler step, a finiteness check. Forward passes run plans on the native
// executor with its async `run`, so the event loop never blocks. The runtime never imports the compiler:
// plans come from generated/<model>/<component>/plan.json, `options.plans`, or `options.planProvider`.
import { decodeRequestImages } from './image-input.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Communicator } from './comm/communicator.ts';
import { ComponentRunners, localExecutor, resolvePlan, SerialQueue, type CachedForward, type ComponentExecutor, type Runner } from './component-runners.ts';
import { familyOf, TINY_FLUX_FAMILY, UserError, type PipelineFamily } from './model-dir.ts';
import type { LoraLibrary, LoraSpec } from './lora.ts';
import { loadNative, type Native } from './native.ts';
import { rankExecutor, type RankExecutor } from './parallel/rank-executor.ts';
import type { Component, Plan } from './plan.ts';
import { mergeCacheResults, type PipelineCacheOptions } from './pipeline-cache.ts';
import { assertFinite, checkLatents } from './request-checks.ts';
import { FluxSpec } from './pipelines/flux.ts';
import { QwenImageSpec } from './pipelines/qwen-image.ts';
import type { DecodeMode, PipelineContext, PipelineSpec, PlanNeed } from './pipelines/spec.ts';
import { WanSpec } from './pipelines/wan.ts';
import { ZImageSpec } from './pipelines/z-image.ts';
import { Flux2KleinSpec } from './pipelines/flux2.ts';
import { OvisImageSpec } from './pipelines/ovis-image.ts';

export { PACKAGE_ROOT } from './package-root.ts';
import { PACKAGE_ROOT } from './package-root.ts';

/** Models shipped with the package (assets under models/<name>/). */
export const SHIPPED_MODELS = ['tiny-flux'] as const;

export { UserError } from './model-dir.ts';
export { clipPoolIndex, componentDims, trueCfgScale, FluxSpec } from './pipelines/flux.ts';
export type { GenerateOptions, GenerateResult, EncodedPrompt } from './pipelines/flux.ts';

/** Shapes a plan is built for (the compiler's `dims`). */
export interface PlanDims {
  batch: number;
  height: number;
  width: number;
  /** text tokens of the transformer (and of the text encoder that produces them: T5 in FLUX.1) */
  textTokens: number;
  /** CLIP's token count where the pipeline has a CLIP encoder beside T5 (FLUX.1: 77) */
  clipTokens?: number;
}

/** What to compile for a component: the registered model, its dims and the directory's config. */
export interface PlanRequest {
  model: string;
  dims: Record<string, number>;
  /** the directory's config.json of the component (bookkeeping keys removed), where the family reads it */
  config?: Record<string, unknown>;
}

export type PlanProvider = (component: Component, dims: PlanDims, request: PlanRequest) => Plan | Promise<Plan>;

/** A rank of a multi-rank run: its plans of parallel lowerings by `component:key` (runtime/pipeline-parallel.ts). */
export interface RankOption {
  comm: Communicator;
  plans: Record<string, Plan>;
}

export interface PipelineOptions {
  /** worker threads of the native executor (default: the executor's default) */
  threads?: number;
  /** where the plans run: "cpu" (default), "cuda", "cuda:N" (runtime/native/src/backend.h) */
  device?: string;
  /** plans to use instead of the shipped ones (must match the requested shapes; a list: the one that fits, e.g. VAE tiles) */
  plans?: Partial<Record<Component, Plan | Plan[]>>;
  /** called for shapes with no shipped/given plan (the CLI passes the compiler's compilePlan) */
  planProvider?: PlanProvider;
  /** directory holding <model>/<component>/plan.json (default: <package>/generated) */
  generatedDir?: string;
  /** a rank of a multi-rank run: the components it holds parallel plans for run them on ParallelExecutors */
  rank?: RankOption;
  /** LoRA adapters (diffusers / peft format) fused into the transformer's weights at load */
  lora?: LoraSpec[];
  /** where LoRA files are read and kept (a server shares one over its pipelines; default: the pipeline's own) */
  loraLibrary?: LoraLibrary;
  /**
   * false (diffusers' unfused LoRA, `--disable-fuse-lora`): the adapters run as low-rank branches beside the
   * untouched base weights, `y = x W^T + (x A^T) (s B)^T`; the transformer's plans are compiled with the
   * branches (a plan provider is needed), and a switch among adapters of the same modules and ranks binds only
   * the branches. One rank.
   */
  fuseLora?: boolean;
  /**
   * the memory a request may need, in bytes (default: the machine's, os.totalmem()): a request whose new plans
   * need more (their weights as float32 once per component, their arenas, on top of what the process holds) is
   * refused before any work (`--max-memory`)
   */
  maxMemoryBytes?: number;
}

/** What every pipeline family's generate takes (each family documents its defaults). */
export interface BaseGenerateOptions {
  prompt: string;
  /** denoising steps (integer >= 1) */
  steps?: number;
  /** seed of the initial noise (torch.randn-compatible generator), default 0 */
  seed?: number;
  /** initial latents in the family's diffusers layout (diffusers' `latents=`); overrides the seed */
  latents?: Float32Array;
  /** batch size of `latents` (default 1) */
  batch?: number;
  height?: number;
  width?: number;
  onStep?: (info: { step: number; steps: number; timestep: number; sigma: number; ms: number }) => void;
  /** called before each denoising step */
  beforeStep?: (step: number) => void | Promise<void>;
  /** Cache-DiT caching on the transformer's block lists (runtime/pipeline-cache.ts) */
  cache?: PipelineCacheOptions;
  /**
   * several requests run as one batch (the server's batching): item b takes its own prompt and its own seed's
   * noise, so each item is what it would be alone; `prompt` / `seed` / `batch` then only name the first
   */
  items?: { prompt: string; seed: number }[];
  /** the negative prompt of CFG */
  negativePrompt?: string;
  /** the text encoder's token count (`max_sequence_length`) */
  maxSequenceLength?: number;
  /**
   * 'local' (default): decode here; 'none': skip the VAE (a rank that does not decode); 'parallel': VAE-P on
   * a rank (FLUX: tile #c decoded by rank c % world, blended on rank 0, every rank gets the image)
   */
  decode?: DecodeMode;
}

export interface StageTimings {
  tokenize: number;
  textEncoder: number;
  denoise: number;
  /** mean ms per denoising step */
  perStep: number;
  vae: number;
  /** plan lookup/compile, executor creation and weight binding done for this call (0 once cached) */
  setup: number;
  total: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnySpec = PipelineSpec<any, any, any, any, any>;
export type OptionsOf<S> = S extends PipelineSpec<infer O, infer _Q, infer _T, infer _D, infer _R> ? O : never;
export type ResultOf<S> = S extends PipelineSpec<infer _O, infer _Q, infer _T, infer _D, infer R> ? R : never;

// ---- native addon (docs/architecture.md §4) ----

export type { Native as NativeModule, NativeExecutor } from './native.ts';

/** The native addon; throws a clear error (how to build it) when it is not built. */
export function getNative(): Native {
  return loadNative();
}

// ---- model directory ----

/**
 * A shipped model name or a diffusers directory -> the plan model name, the directory and the family
 * (from model_index.json: a directory whose index is missing or names an unsupported pipeline is refused).
 */
export function resolveModelDir(model: string): { name: string; dir: string; family: PipelineFamily } {
  if ((SHIPPED_MODELS as readonly string[]).includes(model)) {
    return { name: model, dir: path.join(PACKAGE_ROOT, 'models', model), family: TINY_FLUX_FAMILY };
  }
  const dir = path.resolve(model);
  if (fs.existsSync(path.join(dir, 'model_index.json'))) {
    const family = familyOf(dir);
    return { name: family.planModel, dir, family };
  }
  throw new UserError(`unknown model "${model}": known models are ${SHIPPED_MODELS.join(', ')} (or a directory with model_index.json)`);
}

/** The spec of each pipeline class (model_index.json `_class_name`). */
const SPECS: Record<string, (ctx: PipelineContext, family: PipelineFamily) => AnySpec> = {
  FluxPipeline: (ctx, f) => new FluxSpec(ctx, f),
  FluxFillPipeline: (ctx, f) => new FluxSpec(ctx, f),
  WanPipeline: (ctx, f) => new WanSpec(ctx, f),
  QwenImagePipeline: (ctx, f) => new QwenImageSpec(ctx, f),
  ZImagePipeline: (ctx, f) => new ZImageSpec(ctx, f),
  Flux2KleinPipeline: (ctx, f) => new Flux2KleinSpec(ctx, f),
  OvisImagePipeline: (ctx, f) => new OvisImageSpec(ctx, f),
};

export class Pipeline<S extends AnySpec = AnySpec> {
  readonly spec: S;
  private readonly components: ComponentRunners;
  private readonly queue = new SerialQueue();
  /** every executor made, by `component:key` (one object per key: the CFG branches share it) */
  private readonly executors = new Map<string, ComponentExecutor>();
  private readonly rankExecutors: RankExecutor[] = [];
  private readonly ctx: PipelineContext;

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly options: PipelineOptions,
    readonly family: PipelineFamily,
    makeSpec: (ctx: PipelineContext, family: PipelineFamily) => S,
  ) {
    this.components = new ComponentRunners(name, dir, { generatedDir: options.generatedDir ?? path.join(PACKAGE_ROOT, 'generated'), ...(options.threads ? { threads: options.threads } : {}), ...(options.device ? { device: options.device } : {}), ...(options.lora?.length ? { loras: options.lora } : {}), ...(options.loraLibrary ? { loraLibrary: options.loraLibrary } : {}), ...(options.fuseLora === false ? { fuseLora: false } : {}) });
    if (options.fuseLora === false && options.rank) throw new UserError('--disable-fuse-lora runs on one rank here (the ranks fuse their adapters); drop it or --world');
    const rank = options.rank;
    this.ctx = {
      model: name,
      dir,
      comm: rank?.comm ?? null,
      plan: (n) => this.plan(this.effectiveNeed(n)),
      runner: (n) => this.runner(this.effectiveNeed(n)),
      weights: (folder) => this.components.weightsOf(folder),
      executor: async (given) => {
        const n = this.effectiveNeed(given);
        const k = `${n.component}:${n.key}`;
        let ex = this.executors.get(k);
        if (ex) return ex;
        const plan = rank?.plans[k];
        if (plan) {
          // a rank's plan may hold its split of the inputs: its ParallelExecutor checks the full sizes it is given
          const rx = rankExecutor(rank.comm, plan, await this.components.weightsOf(n.folder ?? n.component), this.options.threads ? { threads: this.options.threads } : {});
          this.components.track(n.folder ?? n.component, plan, rx.exec);
          this.rankExecutors.push(rx);
          ex = rx;
        } else {
          const r = await this.runner(n);
          for (const w of r.plan.weights) this.resident.add(`${n.folder ?? n.component}:${w.name}`);
          ex = localExecutor(r);
        }
        this.executors.set(k, ex);
        return ex;
      },
    };
    this.spec = makeSpec(this.ctx, family);
  }

  /**
   * A need as this pipeline runs it: with unfused LoRA, a transformer need asks for the adapted modules'
   * branches (its plan's lora_branches) under a key of its own
   */
  effectiveNeed(n: PlanNeed): PlanNeed {
    if (n.component !== 'transformer') return n;
    const branches = this.components.loraBranches(n.folder ?? n.component);
    if (!branches) return n;
    return { ...n, key: `${n.key}|lora ${Object.entries(branches).map(([m, r]) => `${m}:${r}`).join(',')}`, config: { ...(n.config ?? {}), lora_branches: branches } };
  }

  /** the plans resolved, by `component:key` (a need's plan is resolved once) */
  private readonly plans = new Map<string, Promise<Plan>>();
  /** `folder:weight` of every weight this pipeline's executors bind (resident once) */
  private readonly resident = new Set<string>();

  /**
   * Refuses a request whose executors yet to be made need more memory than allowed (maxMemoryBytes, else the
   * machine's): their weights (float32, each tensor once per component folder, those already bound not again)
   * and arenas, beside the process's resident set. Says the estimate, its parts and the limit.
   */
  private async checkMemory(needs: PlanNeed[]): Promise<void> {
    const limit = this.options.maxMemoryBytes ?? os.totalmem();
    let weights = 0;
    let arenas = 0;
    const seen = new Set(this.resident);
    for (const given of needs) {
      const n = this.effectiveNeed(given);
      if (this.executors.has(`${n.component}:${n.key}`) || this.options.rank?.plans[`${n.component}:${n.key}`]) continue;
      const p = await this.plan(n);
      arenas += p.arenaFloats * 4;
      for (const w of p.weights) {
        const k = `${n.folder ?? n.component}:${w.name}`;
        if (seen.has(k)) continue;
        seen.add(k);
        weights += w.shape.reduce((a, b) => a * b, 1) * 4;
      }
    }
    const held = process.memoryUsage().rss;
    if (held + weights + arenas <= limit) return;
    const gib = (b: number): string => `${(b / 2 ** 30).toFixed(2)} GiB`;
    throw new UserError(
      `this request needs about ${gib(weights + arenas)} more (weights ${gib(weights)}, activations ${gib(arenas)}) beside the ${gib(held)} the process holds, over the ${this.options.maxMemoryBytes !== undefined ? '--max-memory limit' : "machine's memory"} of ${gib(limit)}: use a smaller size or batch, or --max-memory to allow more`,
    );
  }

  /** The plan a need runs here (given, shipped or from the provider); no executor. */
  plan(n: PlanNeed): Promise<Plan> {
    const k = `${n.component}:${n.key}`;
    let p = this.plans.get(k);
    if (!p) {
      p = this.resolve(n);
      this.plans.set(k, p);
      // a plan that could not be made is asked for again next time
      p.catch(() => this.plans.delete(k));
    }
    return p;
  }

  private resolve(n: PlanNeed): Promise<Plan> {
    return resolvePlan(this.components, n.component, n.want, { given: this.options.plans?.[n.component], ...(this.options.planProvider ? { provider: this.options.planProvider } : {}), request: this.planRequest(n) }, n.also);
  }

  /** the compile request of a need */
  planRequest(n: PlanNeed): PlanRequest {
    return { model: this.name, dims: n.dims, ...(n.config ? { config: n.config } : {}) };
  }

  /** whether `p` is the plan shipped for its component (a multi-rank run need not send it) */
  isShipped(p: Plan): boolean {
    return this.components.shippedPlan(p.component as Component) === p;
  }

  /** the local executor of a need (made once per component and key, weights bound) */
  runner(n: PlanNeed): Promise<Runner> {
    return this.components.runner(n.component, n.key, () => this.plan(n), { ...(n.mayLeave ? { mayLeave: n.mayLeave } : {}), ...(n.folder ? { folder: n.folder } : {}) });
  }

  /**
   * A generate request (the family's semantics); concurrent calls run one after the other (they share the
   * executors' arenas). `lora` puts those adapters in effect first (as setLoras), and they stay.
   */
  generate(opts: OptionsOf<S> & { lora?: LoraSpec[] }): Promise<ResultOf<S>> {
    return this.queue.run(async () => {
      if (opts.lora && !sameLoras(opts.lora, this.components.loras)) await this.components.setLoras(opts.lora);
      return this.generateNow(opts);
    });
  }

  /**
   * Puts LoRA adapters in effect ([] for none), after the generations already asked for: the weights they (or
   * the adapters before) touch are fused again from the checkpoint and bound to every executor made.
   */
  setLoras(specs: LoraSpec[]): Promise<void> {
    return this.queue.run(() => this.components.setLoras(specs));
  }

  /** the LoRA adapters in effect */
  get loras(): LoraSpec[] {
    return this.components.loras;
  }

  /** where this pipeline reads and keeps LoRA files */
  get loraLibrary(): LoraLibrary {
    return this.components.loraLibrary;
  }

  private async generateNow(request: OptionsOf<S> & BaseGenerateOptions): Promise<ResultOf<S>> {
    const t0 = performance.now();
    const spec = this.spec;
    const given = request as { image?: unknown; strength?: unknown; mask?: unknown };
    if ((given.image !== undefined || given.strength !== undefined) && !spec.imageToImage) throw new UserError(`--image / --strength: ${spec.family.pipelineClass} has no image-to-image here (FLUX, Z-Image and FLUX.2-Klein directories do)`);
    if ((given as { items?: unknown }).items !== undefined && !spec.batching) throw new UserError(`items: ${spec.family.pipelineClass} does not run several requests as one batch here (FLUX pipelines do)`);
    if (given.mask !== undefined && !spec.inpainting) throw new UserError(`--mask: ${spec.family.pipelineClass} does not inpaint (a FluxFillPipeline directory, FLUX.1-Fill, does)`);
    // image files (PNG / JPEG) decoded before the request is resolved
    const opts = await decodeRequestImages(request as OptionsOf<S> & BaseGenerateOptions & { image?: unknown; mask?: unknown });
    const q = spec.resolve(opts);
    checkLatents(opts.latents, q.latentsShape, q.latentsFor);
    const mode: DecodeMode = opts.decode ?? 'local';
    if (mode === 'parallel' && !this.ctx.comm) throw new Error("decode 'parallel' (VAE-P) runs on the ranks of a multi-rank run");
    loadNative();

    // setup: executors for these shapes (first call only), timed separately
    const ts = performance.now();
    const needs = spec.needs(q, mode);
    await this.checkMemory(needs);
    for (const n of needs) await this.ctx.executor(n);
    const setup = performance.now() - ts;

    const tTe = performance.now();
    const pos = await spec.encode(q, q.prompts ?? new Array<string>(q.batch).fill(q.prompt));
    const neg = q.negativePrompt !== null ? await spec.encode(q, new Array<string>(q.batch).fill(q.negativePrompt)) : null;
    const tokenize = pos.tokenizeMs + (neg?.tokenizeMs ?? 0);
    const textEncoder = performance.now() - tTe - tokenize;

    // the transformer executors of every step (one, or Wan 2.2's two experts), each cached with its own
    // context over the steps it runs (Cache-DiT refreshes transformer and transformer_2 with their own counts)
    const exs: { pos: ComponentExecutor; neg: ComponentExecutor | null }[] = [];
    for (let i = 0; i < q.steps; i++) exs.push({ pos: await this.ctx.executor(spec.transformerNeed(q, pos, i)), neg: neg ? await this.ctx.executor(spec.transformerNeed(q, neg, i)) : null });
    const sessions = new Map<ComponentExecutor, CachedForward>();
    if (opts.cache) {
      // Cache-DiT's separate CFG contexts count the steps of one executor's two branches
      if (exs.some((e) => e.neg && e.neg !== e.pos)) throw new UserError('caching with CFG needs the prompt and the negative prompt to encode to the same text length here (they run different transformer plans)');
      const counts = new Map<ComponentExecutor, number>();
      for (const e of exs) counts.set(e.pos, (counts.get(e.pos) ?? 0) + 1);
      try {
        for (const [ex, steps] of counts) sessions.set(ex, ex.cacheSession(opts.cache, { steps, separateCfg: neg !== null }));
      } catch (e) {
        throw new UserError((e as Error).message);
      }
    }
    const forward = async (ex: ComponentExecutor, text: typeof pos, x: Float32Array, timestep: Float32Array): Promise<Float32Array> => {
      ex.setInputs(spec.transformerInputs(q, x, text, timestep));
      const session = sessions.get(ex);
      if (session) await session.forward();
      else await ex.forward();
      return ex.output('output');
    };

    let x = opts.latents ? Float32Array.from(opts.latents) : await spec.noise(q);
    await spec.prepareInputs?.(q);
    const sampler = spec.sampler(q);
    const timestep = new Float32Array(q.batch);
    const tDen = performance.now();
    for (let i = 0; i < q.steps; i++) {
      await opts.beforeStep?.(i);
      const tStep = performance.now();
      timestep.fill(sampler.modelTimestep(i));
      const v = await forward(exs[i]!.pos, pos, x, timestep);
      if (neg) spec.combineCfg(q, v, await forward(exs[i]!.neg!, neg, x, timestep), i);
      x = sampler.step(v, i, x);
      assertFinite(x, `the latents after denoising step ${i + 1} of ${q.steps} (the transformer's output)`);
      opts.onStep?.({ step: i + 1, steps: q.steps, timestep: sampler.timesteps[i]!, sigma: sampler.sigmas[i]!, ms: performance.now() - tStep });
    }
    const denoise = performance.now() - tDen;

    const tVae = performance.now();
    const decoded = await spec.decode(q, x, mode);
    const vae = performance.now() - tVae;
    return spec.result(q, {
      latents: x,
      seed: opts.latents ? null : q.seed,
      pos,
      sampler,
      timings: { tokenize, textEncoder, denoise, perStep: denoise / q.steps, vae, setup, total: performance.now() - t0 },
      ...(sessions.size ? { cache: mergeCacheResults([...sessions.values()].map((x) => x.result())) } : {}),
    }, decoded);
  }

  /** ms this rank's parallel executors spent in collectives (0 on one rank) */
  commMs(): number {
    let ms = 0;
    for (const ex of this.rankExecutors) ms += ex.exec.stats.commMs;
    return ms;
  }

  /** worker threads of the executors (null before the first forward pass) */
  threads(): number | null {
    return this.components.threads();
  }

  /** LoRAs fused into the weights (false: unfused branches) */
  get fuseLora(): boolean {
    return this.options.fuseLora !== false;
  }

  /** the plans of this process's executors (one per component and shape made so far) */
  executorPlans(): Plan[] {
    return this.components.all().map((r) => r.plan);
  }

  /** bytes of the executors' arenas */
  arenaBytes(): number {
    return this.components.arenaBytes();
  }
}

/** two adapter lists put the same terms in effect */
function sameLoras(a: LoraSpec[], b: LoraSpec[]): boolean {
  const key = (l: LoraSpec) => `${path.resolve(l.path)}|${l.scale ?? 1}|${l.target ?? 'all'}`;
  return a.length === b.length && a.every((l, i) => key(l) === key(b[i]!));
}

export type FluxPipeline = Pipeline<FluxSpec>;
export type WanPipeline = Pipeline<WanSpec>;
export type QwenImagePipeline = Pipeline<QwenImageSpec>;
export type ZImagePipeline = Pipeline<ZImageSpec>;
export type Flux2KleinPipeline = Pipeline<Flux2KleinSpec>;
export type OvisImagePipeline = Pipeline<OvisImageSpec>;

function checkThreads(options: PipelineOptions): void {
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 1)) {
    throw new UserError(`--threads must be an integer >= 1, got ${options.threads}`);
  }
}

/**
 * Loads a pipeline: `model` is a shipped model name ('tiny-flux', assets under <package>/models/) or a
 * diffusers directory whose model_index.json names a supported pipeline class. The native addon is loaded on
 * the first forward pass (so inputs can be validated without it).
 */
export async function loadPipeline(model: string, options: PipelineOptions = {}): Promise<Pipeline> {
  checkThreads(options);
  const { name, dir, family } = resolveModelDir(model);
  const make = SPECS[family.pipelineClass];
  if (!make) throw new UserError(`${dir}: no pipeline spec for ${family.pipelineClass}`);
  return new Pipeline(name, dir, options, family, make);
}

/** loadPipeline of a family whose spec the caller knows: refuses a directory of another pipeline class */
async function loadAs<S extends AnySpec>(model: string, options: PipelineOptions, pipelineClass: string | string[], make: (ctx: PipelineContext, f: PipelineFamily) => S): Promise<Pipeline<S>> {
  checkThreads(options);
  const { name, dir, family } = resolveModelDir(model);
  const classes = [pipelineClass].flat();
  if (!classes.includes(family.pipelineClass)) throw new UserError(`${dir}: a ${family.pipelineClass} directory, not a ${classes.join(' or ')} one`);
  return new Pipeline(name, dir, options, family, make);
}

export function loadFluxPipeline(model: string, options: PipelineOptions = {}): Promise<FluxPipeline> {
  return loadAs(model, options, ['FluxPipeline', 'FluxFillPipeline'], (ctx, f) => new FluxSpec(ctx, f));
}

export function loadWanPipeline(model: string, options: PipelineOptions = {}): Promise<WanPipeline> {
  return loadAs(model, options, 'WanPipeline', (ctx, f) => new WanSpec(ctx, f));
}

export function loadQwenImagePipeline(model: string, options: PipelineOptions = {}): Promise<QwenImagePipeline> {
  return loadAs(model, options, 'QwenImagePipeline', (ctx, f) => new QwenImageSpec(ctx, f));
}

export function loadZImagePipeline(model: string, options: PipelineOptions = {}): Promise<ZImagePipeline> {
  return loadAs(model, options, 'ZImagePipeline', (ctx, f) => new ZImageSpec(ctx, f));
}

export function loadOvisImagePipeline(model: string, options: PipelineOptions = {}): Promise<OvisImagePipeline> {
  return loadAs(model, options, 'OvisImagePipeline', (ctx, f) => new OvisImageSpec(ctx, f));
}

export function loadFlux2KleinPipeline(model: string, options: PipelineOptions = {}): Promise<Flux2KleinPipeline> {
  return loadAs(model, options, 'Flux2KleinPipeline', (ctx, f) => new Flux2KleinSpec(ctx, f));
}
