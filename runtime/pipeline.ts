// The FLUX text-to-image pipeline (FluxPipeline semantics, models/tiny-flux/README.md): tokenizer ->
// text encoder -> FlowMatch Euler loop over the transformer -> VAE decode -> uint8 pixels.
// Forward passes run plans (plan.json) on the native executor with its async `run`, so the event loop
// never blocks. The runtime never imports the compiler: plans come from generated/<model>/<component>/
// plan.json, from `options.plans`, or from `options.planProvider` (the CLI compiles missing sizes).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSafetensors, type SafetensorsFile } from './io/safetensors.ts';
import { WordTokenizer } from './tokenizer.ts';
import { fluxSchedule, loadSchedulerConfig, type FlowMatchSchedulerConfig, type Schedule } from './scheduler.ts';
import { packLatents, latentsToVaeSpace, imageIds, textIds, latentGeometry, type LatentGeometry } from './latents.ts';
import { toUint8HWC } from './image.ts';
import { torchRandn } from './rng.ts';
import type { Component, Plan } from './plan.ts';
import { loadNative, type Native, type NativeExecutor } from './native.ts';
import { TransformerCacheSession, type PipelineCacheOptions, type PipelineCacheResult } from './pipeline-cache.ts';
import { needsTiling, tileGrid, tileShapes, tiledDecode, vaeTilingConfig, type VaeTile, type VaeTileGrid, type VaeTilingConfig } from './vae-tiling.ts';
import { denoiseLoop, type TextEmbeds } from './denoise.ts';
import { planWeightData } from './parallel/tp.ts';

export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Models shipped with the package (assets under models/<name>/). */
export const SHIPPED_MODELS = ['tiny-flux'] as const;

/** An error caused by the user's input (bad flag value, bad file): the CLI prints only its message. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/**
 * FluxPipeline's true CFG switch (`do_true_cfg = true_cfg_scale > 1 and a negative prompt`): the scale, or
 * null when CFG is off.
 */
export function trueCfgScale(opts: Pick<GenerateOptions, 'negativePrompt' | 'guidanceScale'>): number | null {
  const g = opts.guidanceScale ?? 1;
  if (typeof g !== 'number' || !Number.isFinite(g)) throw new UserError(`--guidance-scale must be a number, got ${opts.guidanceScale}`);
  return opts.negativePrompt !== undefined && g > 1 ? g : null;
}

/** Shapes a plan is built for (the compiler's `dims`). */
export interface PlanDims {
  batch: number;
  height: number;
  width: number;
  textTokens: number;
}

/** The dims a component's plan is parameterised by (compilePlan's `dims` for that component). */
export function componentDims(component: Component, d: PlanDims): Record<string, number> {
  switch (component) {
    case 'text_encoder':
      return { batch: d.batch, textTokens: d.textTokens };
    case 'vae':
      return { batch: d.batch, height: d.height, width: d.width };
    case 'transformer':
      return { batch: d.batch, height: d.height, width: d.width, textTokens: d.textTokens };
  }
}

/**
 * Runs the text encoder on token ids / attention mask `[B, T]` (float32) in place of the pipeline's own
 * executor (TE-P: the tensor-parallel ranks of runtime/pipeline-parallel.ts).
 */
export type TextEncoderRun = (inputIds: Float32Array, attentionMask: Float32Array) => Promise<{ encoderHiddenStates: Float32Array; pooledProjections: Float32Array }>;

export type PlanProvider = (component: Component, dims: PlanDims) => Plan | Promise<Plan>;

export interface PipelineOptions {
  /** worker threads of the native executor (default: the executor's default) */
  threads?: number;
  /** plans to use instead of the shipped ones (must match the requested shapes; a list: the one that fits, e.g. VAE tiles) */
  plans?: Partial<Record<Component, Plan | Plan[]>>;
  /** called for shapes with no shipped/given plan (the CLI passes the compiler's compilePlan) */
  planProvider?: PlanProvider;
  /** directory holding <model>/<component>/plan.json (default: <package>/generated) */
  generatedDir?: string;
}

export interface GenerateOptions {
  prompt: string;
  /** denoising steps (integer >= 1), default 28 */
  steps?: number;
  /** seed of the initial noise (torch.randn-compatible generator), default 0 */
  seed?: number;
  /** initial packed latents [batch, tokens, channels] (diffusers' `latents=`); overrides the seed */
  latents?: Float32Array;
  /** batch size of `latents` (default 1) */
  batch?: number;
  height?: number;
  width?: number;
  onStep?: (info: { step: number; steps: number; timestep: number; sigma: number; ms: number }) => void;
  /** Cache-DiT caching on the transformer's block lists (runtime/pipeline-cache.ts) */
  cache?: PipelineCacheOptions;
  /** true CFG (FluxPipeline `negative_prompt` + `true_cfg_scale`): two transformer calls per step */
  negativePrompt?: string;
  /** FluxPipeline `true_cfg_scale` (default 1: no CFG); CFG runs when > 1 and a negative prompt is given */
  guidanceScale?: number;
  /** diffusers `vae.enable_tiling()`: decode in overlapping tiles when the latents exceed one tile (runtime/vae-tiling.ts) */
  vaeTiling?: boolean;
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

export interface GenerateResult {
  /** HWC uint8 RGB of the first image */
  image: Uint8Array;
  /** HWC uint8 RGB, one per batch item */
  images: Uint8Array[];
  width: number;
  height: number;
  /** final packed latents [batch, tokens, channels] */
  latents: Float32Array;
  latentsShape: [number, number, number];
  /** raw VAE decoder output [batch, 3, H, W] */
  decoded: Float32Array;
  steps: number;
  seed: number | null;
  inputIds: number[];
  unknownWords: string[];
  schedule: Schedule;
  timings: StageTimings;
  /** with `cache`: Cache-DiT summary and run tag */
  cache?: PipelineCacheResult;
}

// ---- native addon (docs/architecture.md §4) ----

export type { Native as NativeModule, NativeExecutor } from './native.ts';

/** The native addon; throws a clear error (how to build it) when it is not built. */
export function getNative(): Native {
  return loadNative();
}

// ---- model directory ----

export function resolveModelDir(model: string): { name: string; dir: string } {
  if ((SHIPPED_MODELS as readonly string[]).includes(model)) {
    return { name: model, dir: path.join(PACKAGE_ROOT, 'models', model) };
  }
  const dir = path.resolve(model);
  const index = path.join(dir, 'model_index.json');
  if (fs.existsSync(index)) {
    // the model family (plan names) from model_index.json: tiny-flux's own text encoder, else the dir name
    const idx = readJson(index);
    const te = idx.text_encoder as unknown;
    const family = Array.isArray(te) && te[0] === 'tiny_flux' ? 'tiny-flux' : path.basename(dir);
    return { name: family, dir };
  }
  throw new UserError(`unknown model "${model}": known models are ${SHIPPED_MODELS.join(', ')} (or a directory with model_index.json)`);
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${file}: cannot read JSON (${(e as Error).message})`);
  }
}

const COMPONENT_WEIGHTS: Record<Component, string> = {
  text_encoder: 'text_encoder/model.safetensors',
  transformer: 'transformer/diffusion_pytorch_model.safetensors',
  vae: 'vae/diffusion_pytorch_model.safetensors',
};

/** the input whose shape identifies the dims a plan was built for */
const KEY_INPUT: Record<Component, string> = {
  text_encoder: 'input_ids',
  transformer: 'hidden_states',
  vae: 'latents',
};

function shapeKey(shape: readonly number[]): string {
  return shape.join('x');
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

interface Runner {
  plan: Plan;
  exec: NativeExecutor;
}

export class Pipeline {
  readonly tokenizer: WordTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  readonly vaeScale: number;
  readonly latentChannels: number;
  readonly scalingFactor: number;
  readonly shiftFactor: number;
  readonly textTokens: number;
  /** diffusers' tiling sizes of this VAE (used with `vaeTiling`) */
  readonly vaeTiling: VaeTilingConfig;
  /** channels of the decoded image (VAE config out_channels) */
  readonly vaeOutChannels: number;
  private readonly runners = new Map<string, Runner>();
  private readonly weights = new Map<Component, SafetensorsFile>();
  private readonly shippedPlans = new Map<Component, Plan | null>();

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly options: PipelineOptions,
  ) {
    this.tokenizer = WordTokenizer.fromDir(path.join(dir, 'tokenizer'));
    this.scheduler = loadSchedulerConfig(path.join(dir, 'scheduler', 'scheduler_config.json'));
    const vae = readJson(path.join(dir, 'vae', 'config.json'));
    this.vaeScale = 2 ** ((vae.block_out_channels as number[]).length - 1);
    this.latentChannels = (vae.latent_channels as number) ?? 4;
    this.scalingFactor = (vae.scaling_factor as number) ?? 1;
    this.shiftFactor = (vae.shift_factor as number | null) ?? 0;
    this.textTokens = this.tokenizer.maxLength;
    this.vaeTiling = vaeTilingConfig(vae, path.join(dir, 'vae', 'config.json'));
    this.vaeOutChannels = (vae.out_channels as number) ?? 3;
  }

  /** Validates height/width (positive multiples of vaeScale * 2) and returns the latent geometry. */
  geometry(height: number, width: number): LatentGeometry {
    const mult = this.vaeScale * 2;
    for (const [flag, v] of [
      ['height', height],
      ['width', width],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0 || v % mult !== 0) {
        throw new UserError(`--${flag} must be a positive multiple of ${mult} (the VAE scale ${this.vaeScale} x 2x2 packing), e.g. 32 or 64; got ${v}`);
      }
    }
    return latentGeometry(height, width, this.vaeScale, this.latentChannels);
  }

  private async weightsOf(component: Component): Promise<SafetensorsFile> {
    let f = this.weights.get(component);
    if (!f) {
      f = await openSafetensors(path.join(this.dir, COMPONENT_WEIGHTS[component]));
      this.weights.set(component, f);
    }
    return f;
  }

  private shippedPlan(component: Component): Plan | null {
    if (!this.shippedPlans.has(component)) {
      const file = path.join(this.options.generatedDir ?? path.join(PACKAGE_ROOT, 'generated'), this.name, component, 'plan.json');
      this.shippedPlans.set(component, fs.existsSync(file) ? (readJson(file) as unknown as Plan) : null);
    }
    return this.shippedPlans.get(component)!;
  }

  private expectedKeyShape(component: Component, d: PlanDims): number[] {
    const g = latentGeometry(d.height, d.width, this.vaeScale, this.latentChannels);
    switch (component) {
      case 'text_encoder':
        return [d.batch, d.textTokens];
      case 'transformer':
        return [d.batch, g.tokens, g.packedChannels];
      case 'vae':
        // exact division (not the packing geometry): VAE tiles may have any latent size
        return [d.batch, this.latentChannels, d.height / this.vaeScale, d.width / this.vaeScale];
    }
  }

  private async planFor(component: Component, dims: PlanDims): Promise<Plan> {
    const want = this.expectedKeyShape(component, dims);
    const fits = (p: Plan | null | undefined): p is Plan =>
      !!p && p.component === component && shapeKey(p.inputs.find((i) => i.name === KEY_INPUT[component])?.shape ?? []) === shapeKey(want);
    for (const given of [this.options.plans?.[component]].flat()) if (fits(given)) return given;
    const shipped = this.shippedPlan(component);
    if (fits(shipped)) return shipped;
    if (this.options.planProvider) {
      const p = await this.options.planProvider(component, dims);
      if (!fits(p)) throw new Error(`the plan provider returned a ${component} plan whose ${KEY_INPUT[component]} is not [${want.join(', ')}]`);
      return p;
    }
    throw new UserError(
      `no ${component} plan for batch ${dims.batch}, ${dims.height}x${dims.width} (${KEY_INPUT[component]} [${want.join(', ')}]): ` +
        `compile one with \`ditforge compile ${this.name}\` or use the CLI, which compiles missing sizes`,
    );
  }

  /** The plan a component would run at these dims (given, shipped or from the provider); no executor. */
  plan(component: Component, dims: PlanDims): Promise<Plan> {
    return this.planFor(component, dims);
  }

  /** Returns (creating and binding weights once) the executor for a component at the given dims. */
  async runner(component: Component, dims: PlanDims): Promise<Runner> {
    const key = `${component}:${shapeKey(this.expectedKeyShape(component, dims))}`;
    let r = this.runners.get(key);
    if (r) return r;
    const plan = await this.planFor(component, dims);
    const file = await this.weightsOf(component);
    const native = getNative();
    const exec = new native.Executor(JSON.stringify(plan), this.options.threads ? { threads: this.options.threads } : {});
    for (const w of plan.weights) {
      if (!file.has(w.name)) {
        throw new Error(`${file.path}: missing weight "${w.name}" (the ${component} plan expects shape [${w.shape.join(', ')}])`);
      }
      // a tensor-parallel shard (w.slice) is cut from the full checkpoint tensor
      exec.bindWeight(w.name, planWeightData(w, file.tensor(w.name), `${file.path} (${component} plan)`));
    }
    r = { plan, exec };
    this.runners.set(key, r);
    return r;
  }

  private static async forward(r: Runner): Promise<void> {
    for (const s of r.plan.segments) await r.exec.run(s.name);
  }

  private static setInputs(r: Runner, inputs: Record<string, Float32Array>): void {
    for (const io of r.plan.inputs) {
      const v = inputs[io.name];
      if (!v) throw new Error(`${r.plan.model}/${r.plan.component} plan input "${io.name}" was not provided`);
      if (v.length !== product(io.shape)) {
        throw new Error(`${r.plan.component} input "${io.name}": ${v.length} values, plan shape [${io.shape.join(', ')}] needs ${product(io.shape)}`);
      }
      r.exec.setInput(io.name, v);
    }
  }

  private static output(r: Runner, name: string): Float32Array {
    const io = r.plan.outputs.find((o) => o.name === name);
    if (!io) throw new Error(`${r.plan.component} plan has no output "${name}" (outputs: ${r.plan.outputs.map((o) => o.name).join(', ')})`);
    const out = new Float32Array(product(io.shape));
    r.exec.getOutput(name, out);
    return out;
  }

  private dims(batch: number, height: number, width: number): PlanDims {
    return { batch, height, width, textTokens: this.textTokens };
  }

  /** Text encoder: prompts -> encoder_hidden_states [B, T, D] and pooled_projections [B, Dp]. */
  async encodePrompt(prompts: string[], height = 32, width = 32, encoder?: TextEncoderRun): Promise<{
    encoderHiddenStates: Float32Array;
    pooledProjections: Float32Array;
    inputIds: number[][];
    unknownWords: string[];
    tokenizeMs: number;
  }> {
    const B = prompts.length;
    const tTok = performance.now();
    const enc = prompts.map((p) => this.tokenizer.encode(p));
    const tokenizeMs = performance.now() - tTok;
    const T = this.textTokens;
    const ids = new Float32Array(B * T);
    const mask = new Float32Array(B * T);
    enc.forEach((e, b) => {
      ids.set(e.inputIds, b * T);
      mask.set(e.attentionMask, b * T);
    });
    let out: { encoderHiddenStates: Float32Array; pooledProjections: Float32Array };
    if (encoder) out = await encoder(ids, mask);
    else {
      const r = await this.runner('text_encoder', this.dims(B, height, width));
      Pipeline.setInputs(r, { input_ids: ids, attention_mask: mask });
      await Pipeline.forward(r);
      out = { encoderHiddenStates: Pipeline.output(r, 'encoder_hidden_states'), pooledProjections: Pipeline.output(r, 'pooled_projections') };
    }
    return {
      ...out,
      inputIds: enc.map((e) => e.inputIds),
      unknownWords: [...new Set(enc.flatMap((e) => e.unknown))],
      tokenizeMs,
    };
  }

  /** One transformer forward (velocity). `timestep` is the model input (t / 1000), one per batch item. */
  async transformer(inputs: {
    hiddenStates: Float32Array;
    encoderHiddenStates: Float32Array;
    pooledProjections: Float32Array;
    timestep: Float32Array;
    batch: number;
    height: number;
    width: number;
  }): Promise<Float32Array> {
    const g = this.geometry(inputs.height, inputs.width);
    const r = await this.runner('transformer', this.dims(inputs.batch, inputs.height, inputs.width));
    Pipeline.setInputs(r, {
      hidden_states: inputs.hiddenStates,
      encoder_hidden_states: inputs.encoderHiddenStates,
      pooled_projections: inputs.pooledProjections,
      timestep: inputs.timestep,
      img_ids: imageIds(g.latentHeight / 2, g.latentWidth / 2),
      txt_ids: textIds(this.textTokens),
    });
    if (this.cacheSession) await this.cacheSession.forward(r.plan, r.exec);
    else await Pipeline.forward(r);
    return Pipeline.output(r, 'output');
  }

  /**
   * VAE decoder: VAE-space latents [B, C, h, w] -> raw decoder output [B, 3, H, W]. `tiling`: diffusers'
   * tiled_decode when the latents exceed one tile (each tile through the plan compiled for its size).
   */
  async decodeVaeSpace(z: Float32Array, batch: number, height: number, width: number, opts: { tiling?: boolean } = {}): Promise<Float32Array> {
    const grid = opts.tiling ? this.vaeTileGrid(height, width) : null;
    if (grid) return tiledDecode(z, batch, this.latentChannels, this.vaeOutChannels, grid, (tile, t) => this.decodeVaeTile(tile, batch, t, grid));
    const r = await this.runner('vae', this.dims(batch, height, width));
    Pipeline.setInputs(r, { latents: z });
    await Pipeline.forward(r);
    return Pipeline.output(r, 'sample');
  }

  /** The tile grid of a tiled decode at this image size, or null when the latents fit one tile (no tiling). */
  vaeTileGrid(height: number, width: number): VaeTileGrid | null {
    const g = this.geometry(height, width);
    return needsTiling(g.latentHeight, g.latentWidth, this.vaeTiling) ? tileGrid(g.latentHeight, g.latentWidth, this.vaeScale, this.vaeTiling) : null;
  }

  /** Image dims of each distinct tile size of a grid (the VAE plans a tiled decode needs). */
  vaeTileDims(batch: number, grid: VaeTileGrid): PlanDims[] {
    return tileShapes(grid).map(([h, w]) => this.dims(batch, h * grid.scale, w * grid.scale));
  }

  /** Decodes one latent tile [B, C, t.h, t.w] with the VAE plan of its size -> [B, 3, t.h*scale, t.w*scale]. */
  async decodeVaeTile(tile: Float32Array, batch: number, t: VaeTile, grid: VaeTileGrid): Promise<Float32Array> {
    const r = await this.runner('vae', this.dims(batch, t.h * grid.scale, t.w * grid.scale));
    Pipeline.setInputs(r, { latents: tile });
    await Pipeline.forward(r);
    return Pipeline.output(r, 'sample');
  }


  /** packed latents -> VAE space: unpack(x) / scaling_factor + shift_factor (float32) */
  toVaeSpace(packed: Float32Array, batch: number, height: number, width: number): Float32Array {
    const g = this.geometry(height, width);
    return latentsToVaeSpace(packed, batch, g.latentChannels, g.latentHeight, g.latentWidth, this.scalingFactor, this.shiftFactor);
  }

  /** The seeded initial noise, packed [B, tokens, channels] (torch.randn-compatible, see rng.ts). */
  noise(seed: number, batch: number, height: number, width: number): Float32Array {
    const g = this.geometry(height, width);
    const raw = torchRandn(batch * g.latentChannels * g.latentHeight * g.latentWidth, seed);
    return packLatents(raw, batch, g.latentChannels, g.latentHeight, g.latentWidth);
  }

  private queue: Promise<unknown> = Promise.resolve();
  /** the request's cache session while a cached generate runs */
  private cacheSession: TransformerCacheSession | null = null;

  /**
   * Text-to-image (FluxPipeline semantics). Concurrent calls on one pipeline run one after the other
   * (they share the executors' arenas).
   */
  generate(opts: GenerateOptions): Promise<GenerateResult> {
    const run = this.queue.then(
      () => this.generateNow(opts),
      () => this.generateNow(opts),
    );
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async generateNow(opts: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const steps = opts.steps ?? 28;
    if (!Number.isInteger(steps) || steps < 1) throw new UserError(`--steps must be an integer >= 1, got ${opts.steps}`);
    const height = opts.height ?? 32;
    const width = opts.width ?? 32;
    const g = this.geometry(height, width);
    const batch = opts.batch ?? 1;
    if (!Number.isInteger(batch) || batch < 1) throw new UserError(`batch must be an integer >= 1, got ${batch}`);
    if (typeof opts.prompt !== 'string') throw new UserError('--prompt is required');
    const seed = opts.seed ?? 0;
    if (opts.latents === undefined && (!Number.isSafeInteger(seed) || seed < 0)) {
      throw new UserError(`--seed must be a non-negative integer, got ${opts.seed}`);
    }
    const numel = batch * g.tokens * g.packedChannels;
    if (opts.latents && opts.latents.length !== numel) {
      throw new UserError(`latents must have shape [${batch}, ${g.tokens}, ${g.packedChannels}] (${numel} values) for ${height}x${width}, got ${opts.latents.length} values`);
    }

    // setup: executors for these shapes (first call only), timed separately
    const ts = performance.now();
    const dims = this.dims(batch, height, width);
    await this.runner('text_encoder', dims);
    await this.runner('transformer', dims);
    // a tiled decode never runs the full-size VAE plan (diffusers' tiled_decode): one executor per tile size
    const grid = opts.vaeTiling ? this.vaeTileGrid(height, width) : null;
    for (const d of grid ? this.vaeTileDims(batch, grid) : [dims]) await this.runner('vae', d);
    const setup = performance.now() - ts;

    const prompts = new Array<string>(batch).fill(opts.prompt);
    const tTe = performance.now();
    const text = await this.encodePrompt(prompts, height, width);
    const tokenize = text.tokenizeMs;
    const textEncoder = performance.now() - tTe - tokenize;

    const cfgScale = trueCfgScale(opts);
    const doCfg = cfgScale !== null;
    const negText = doCfg ? await this.encodePrompt(new Array<string>(batch).fill(opts.negativePrompt!), height, width) : null;
    this.cacheSession = opts.cache ? new TransformerCacheSession(getNative(), opts.cache, { steps, separateCfg: doCfg }) : null;
    if (this.cacheSession) {
      const tr = await this.runner('transformer', dims);
      try {
        this.cacheSession.prepare(tr.plan, tr.exec);
      } catch (e) {
        this.cacheSession = null;
        throw new UserError((e as Error).message);
      }
    }
    const session = this.cacheSession;
    try {
    const x = opts.latents ? Float32Array.from(opts.latents) : this.noise(seed, batch, height, width);
    const schedule = fluxSchedule(steps, g.tokens, this.scheduler);
    const tDen = performance.now();
    await denoiseLoop({
      x,
      schedule,
      steps,
      batch,
      pos: text,
      neg: negText,
      cfgScale: cfgScale ?? 1,
      velocity: (t: TextEmbeds, timestep: Float32Array) =>
        this.transformer({ hiddenStates: x, encoderHiddenStates: t.encoderHiddenStates, pooledProjections: t.pooledProjections, timestep, batch, height, width }),
      ...(opts.onStep ? { onStep: opts.onStep } : {}),
    });
    const denoise = performance.now() - tDen;

    const tVae = performance.now();
    const decoded = await this.decodeVaeSpace(this.toVaeSpace(x, batch, height, width), batch, height, width, { tiling: opts.vaeTiling === true });
    const images: Uint8Array[] = [];
    for (let b = 0; b < batch; b++) images.push(toUint8HWC(decoded, this.vaeOutChannels, height, width, b));
    const vae = performance.now() - tVae;

    return {
      image: images[0]!,
      images,
      width,
      height,
      latents: x,
      latentsShape: [batch, g.tokens, g.packedChannels],
      decoded,
      steps,
      seed: opts.latents ? null : seed,
      inputIds: text.inputIds[0]!,
      unknownWords: text.unknownWords,
      schedule,
      timings: { tokenize, textEncoder, denoise, perStep: denoise / steps, vae, setup, total: performance.now() - t0 },
      ...(session ? { cache: session.result() } : {}),
    };
    } finally {
      this.cacheSession = null;
    }
  }

  /** worker threads of the executors (null before the first forward pass) */
  threads(): number | null {
    for (const r of this.runners.values()) return typeof r.exec.threads === 'function' ? r.exec.threads() : (this.options.threads ?? null);
    return this.options.threads ?? null;
  }

  /** bytes of the executors' arenas */
  arenaBytes(): number {
    let n = 0;
    for (const r of this.runners.values()) n += r.exec.arenaBytes();
    return n;
  }
}

/**
 * Loads a pipeline: `model` is a shipped model name ('tiny-flux', assets under <package>/models/) or a
 * directory with model_index.json, tokenizer/, text_encoder/, transformer/, vae/, scheduler/.
 */
export async function loadPipeline(model: string, options: PipelineOptions = {}): Promise<Pipeline> {
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 1)) {
    throw new UserError(`--threads must be an integer >= 1, got ${options.threads}`);
  }
  const { name, dir } = resolveModelDir(model);
  // the native addon is loaded on the first forward pass (so inputs can be validated without it)
  return new Pipeline(name, dir, options);
}
