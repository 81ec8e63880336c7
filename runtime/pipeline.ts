// The FLUX text-to-image pipeline (FluxPipeline semantics, models/tiny-flux/README.md): tokenizer ->
// text encoder -> FlowMatch Euler loop over the transformer -> VAE decode -> uint8 pixels.
// Forward passes run plans (plan.json) on the native executor with its async `run`, so the event loop
// never blocks. The runtime never imports the compiler: plans come from generated/<model>/<component>/
// plan.json, from `options.plans`, or from `options.planProvider` (the CLI compiles missing sizes).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertFinite, checkLatents, checkRequest } from './request-checks.ts';
import { ComponentRunners, forwardRunner, localExecutor, SerialQueue, runnerOutput, setRunnerInputs, shapeKey, type CachedForward, type ComponentExecutor, type Runner } from './component-runners.ts';
import type { Communicator } from './comm/communicator.ts';
import { rankExecutor, type RankExecutor } from './parallel/rank-executor.ts';
import { WordTokenizer } from './tokenizer.ts';
import { HfTokenizer } from './hf-tokenizer.ts';
import { componentConfig, configNumber, familyOf, readJson, TINY_FLUX_FAMILY, UserError, type PipelineFamily } from './model-dir.ts';
import { fluxSchedule, loadSchedulerConfig, type FlowMatchSchedulerConfig, type Schedule } from './scheduler.ts';
import { packLatents, latentsToVaeSpace, imageIds, textIds, latentGeometry, type LatentGeometry } from './latents.ts';
import { toUint8HWC } from './image.ts';
import { torchRandn } from './rng.ts';
import type { Component, Plan } from './plan.ts';
import { loadNative, type Native } from './native.ts';
import type { PipelineCacheOptions, PipelineCacheResult } from './pipeline-cache.ts';
import { needsTiling, tileGrid, tileShapes, tiledDecode, tiledDecodeParallel, vaeTilingConfig, type VaeTile, type VaeTileGrid, type VaeTilingConfig } from './vae-tiling.ts';
import { denoiseLoop, type TextEmbeds } from './denoise.ts';

export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Models shipped with the package (assets under models/<name>/). */
export const SHIPPED_MODELS = ['tiny-flux'] as const;

export { UserError } from './model-dir.ts';

/**
 * FluxPipeline's true CFG switch (`do_true_cfg = true_cfg_scale > 1 and a negative prompt`): the scale, or
 * null when CFG is off. tiny-flux takes the scale from `guidanceScale` (it has no guidance embedding);
 * FLUX.1 from `trueCfgScale`, its `guidanceScale` being the distilled guidance embedding.
 */
export function trueCfgScale(opts: Pick<GenerateOptions, 'negativePrompt' | 'guidanceScale' | 'trueCfgScale'>, family: PipelineFamily = TINY_FLUX_FAMILY): number | null {
  const tiny = family.text === 'tiny';
  const g = (tiny ? opts.guidanceScale : opts.trueCfgScale) ?? 1;
  if (typeof g !== 'number' || !Number.isFinite(g)) throw new UserError(`--${tiny ? 'guidance-scale' : 'true-cfg-scale'} must be a number, got ${tiny ? opts.guidanceScale : opts.trueCfgScale}`);
  return opts.negativePrompt !== undefined && g > 1 ? g : null;
}

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

/** The dims a component's plan is parameterised by (compilePlan's `dims` for that component). */
export function componentDims(component: Component, d: PlanDims): Record<string, number> {
  switch (component) {
    case 'text_encoder':
      return { batch: d.batch, textTokens: d.clipTokens ?? d.textTokens };
    case 'text_encoder_2':
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

/** What to compile for a component: the registered model, its dims and the directory's config. */
export interface PlanRequest {
  model: string;
  dims: Record<string, number>;
  /** the directory's config.json of the component (bookkeeping keys removed), where the family reads it */
  config?: Record<string, unknown>;
}

export type PlanProvider = (component: Component, dims: PlanDims, request: PlanRequest) => Plan | Promise<Plan>;

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
  /**
   * A rank of a multi-rank run (runtime/pipeline-parallel.ts): the transformer runs this rank's plan of a
   * parallel lowering, and with TE-P the text encoder its tensor-parallel plan, on ParallelExecutors.
   */
  rank?: { comm: Communicator; transformerPlan: Plan; textEncoderPlan?: Plan; textEncoder2Plan?: Plan };
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
  /** Cache-DiT caching on the transformer's block lists (runtime/pipeline-cache.ts) */
  cache?: PipelineCacheOptions;
  /** the negative prompt of CFG */
  negativePrompt?: string;
  /** the text encoder's token count (`max_sequence_length`) */
  maxSequenceLength?: number;
}

/** FluxPipeline: steps default 28, latents packed [batch, tokens, channels], true CFG with the negative prompt */
export interface GenerateOptions extends BaseGenerateOptions {
  /**
   * tiny-flux: FluxPipeline `true_cfg_scale` (default 1: no CFG; CFG runs when > 1 and a negative prompt is
   * given). FLUX.1: `guidance_scale`, the distilled guidance embedding (default 3.5).
   */
  guidanceScale?: number;
  /** FLUX.1: FluxPipeline `true_cfg_scale` (default 1): true CFG when > 1 and a negative prompt is given */
  trueCfgScale?: number;
  /** diffusers `vae.enable_tiling()`: decode in overlapping tiles when the latents exceed one tile (runtime/vae-tiling.ts) */
  vaeTiling?: boolean;
  /**
   * 'local' (default): decode here; 'none': skip the VAE (a rank that does not decode); 'parallel': VAE-P on
   * a rank, tile #c decoded by rank c % world and blended on rank 0, every rank gets the image (without
   * tiling, every rank decodes the whole image)
   */
  decode?: 'local' | 'none' | 'parallel';
  /** called before each denoising step */
  beforeStep?: (step: number) => void;
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
  /** raw VAE decoder output [batch, 3, H, W] (empty with decode 'none') */
  decoded: Float32Array;
  /** VAE tiles this process decoded (an untiled decode counts 1; decode 'none': 0) */
  vaeTiles: number;
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

/** the input whose shape identifies the dims a plan was built for */
const KEY_INPUT: Record<Component, string> = {
  text_encoder: 'input_ids',
  text_encoder_2: 'input_ids',
  transformer: 'hidden_states',
  vae: 'latents',
};

/** FluxPipeline's default `max_sequence_length` (and its limit) */
const FLUX_MAX_SEQUENCE_LENGTH = 512;


/** The text conditioning of a batch of prompts. */
export interface EncodedPrompt {
  encoderHiddenStates: Float32Array;
  pooledProjections: Float32Array;
  /** the ids the transformer's text comes from (tiny-flux's words, FLUX.1's T5) */
  inputIds: number[][];
  /** FLUX.1: CLIP's ids */
  clipInputIds?: number[][];
  unknownWords: string[];
  tokenizeMs: number;
}

/**
 * The row CLIPTextModel pools (transformers CLIPTextTransformer): with the legacy eos_token_id 2 of the
 * openai configs, the argmax of the ids (the EOS token has the largest id); else the first EOS token.
 */
export function clipPoolIndex(ids: readonly number[], eosTokenId: number): number {
  if (eosTokenId === 2) {
    let best = 0;
    for (let i = 1; i < ids.length; i++) if (ids[i]! > ids[best]!) best = i;
    return best;
  }
  const i = ids.indexOf(eosTokenId);
  return i < 0 ? 0 : i;
}

export class Pipeline {
  /** tiny-flux's word tokenizer (null for a FLUX.1 directory: `clipTokenizer` / `t5Tokenizer`) */
  readonly tokenizer: WordTokenizer | null;
  /** FLUX.1: CLIP's tokenizer (tokenizer/) and T5's (tokenizer_2/) from the directory's tokenizer.json */
  readonly clipTokenizer: HfTokenizer | null = null;
  readonly t5Tokenizer: HfTokenizer | null = null;
  /** CLIP's token count (tokenizer model_max_length, 77) */
  readonly clipTokens: number = 0;
  /** CLIP's eos_token_id (text_encoder/config.json): where the pooled output is taken (clipPoolIndex) */
  private readonly clipEosTokenId: number = 0;
  /** FLUX.1: the transformer has a guidance embedding (dev; schnell has none) */
  readonly guidanceEmbeds: boolean = false;
  /** the directory's component configs the plans are compiled with (FLUX.1) */
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
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
  private readonly components: ComponentRunners;

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly options: PipelineOptions,
    readonly family: PipelineFamily = TINY_FLUX_FAMILY,
  ) {
    this.components = new ComponentRunners(name, dir, { generatedDir: options.generatedDir ?? path.join(PACKAGE_ROOT, 'generated'), ...(options.threads ? { threads: options.threads } : {}), ...(options.device ? { device: options.device } : {}) });
    this.scheduler = loadSchedulerConfig(path.join(dir, 'scheduler', 'scheduler_config.json'));
    const vaeFile = path.join(dir, 'vae', 'config.json');
    const vae = readJson(vaeFile);
    const boc = vae.block_out_channels;
    if (!Array.isArray(boc) || boc.length < 1 || !boc.every((c) => Number.isInteger(c) && c > 0)) {
      throw new UserError(`${vaeFile}: field "block_out_channels" must be a non-empty list of positive integers, got ${JSON.stringify(boc)}`);
    }
    this.vaeScale = 2 ** (boc.length - 1);
    this.latentChannels = configNumber(vae, 'latent_channels', vaeFile, { int: true, min: 1, fallback: 4 });
    this.scalingFactor = configNumber(vae, 'scaling_factor', vaeFile, { fallback: 1 });
    this.shiftFactor = vae.shift_factor === null ? 0 : configNumber(vae, 'shift_factor', vaeFile, { fallback: 0 });
    this.vaeTiling = vaeTilingConfig(vae, vaeFile);
    this.vaeOutChannels = configNumber(vae, 'out_channels', vaeFile, { int: true, min: 1, fallback: 3 });
    for (const c of family.dirConfigs) this.configs[c] = componentConfig(dir, c);
    if (family.text === 'tiny') {
      this.tokenizer = WordTokenizer.fromDir(path.join(dir, 'tokenizer'));
      this.textTokens = this.tokenizer.maxLength;
    } else {
      this.tokenizer = null;
      this.clipTokenizer = HfTokenizer.fromDir(path.join(dir, 'tokenizer'));
      this.t5Tokenizer = HfTokenizer.fromDir(path.join(dir, 'tokenizer_2'));
      // FluxPipeline: tokenizer_max_length = tokenizer.model_max_length (77)
      this.clipTokens = this.clipTokenizer.modelMaxLength ?? 77;
      this.clipEosTokenId = configNumber(this.configs.text_encoder!, 'eos_token_id', path.join(dir, 'text_encoder', 'config.json'), { int: true, min: 0 });
      this.textTokens = FLUX_MAX_SEQUENCE_LENGTH;
      const tf = this.configs.transformer!;
      const g = tf.guidance_embeds;
      if (typeof g !== 'boolean') throw new UserError(`${path.join(dir, 'transformer', 'config.json')}: field "guidance_embeds" must be true or false, got ${JSON.stringify(g)}`);
      this.guidanceEmbeds = g;
    }
  }

  /** the pipeline's default image size (FluxPipeline: default_sample_size 128 x vae_scale_factor; tiny-flux 32) */
  defaultSize(): { height: number; width: number } {
    const s = this.family.text === 'clip_t5' ? 128 * this.vaeScale : 32;
    return { height: s, width: s };
  }

  /** Validates height/width (positive multiples of vaeScale * 2) and returns the latent geometry. */
  geometry(height: number, width: number): LatentGeometry {
    const mult = this.vaeScale * 2;
    for (const [flag, v] of [
      ['height', height],
      ['width', width],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0 || v % mult !== 0) {
        throw new UserError(`--${flag} must be a positive multiple of ${mult} (the VAE scale ${this.vaeScale} x 2x2 packing), e.g. ${mult * 4} or ${mult * 8}; got ${v}`);
      }
    }
    return latentGeometry(height, width, this.vaeScale, this.latentChannels);
  }

  /** The compile request for a component at these dims (the plan provider's third argument). */
  planRequest(component: Component, d: PlanDims): PlanRequest {
    const cfg = this.configs[component];
    return { model: this.name, dims: componentDims(component, d), ...(cfg ? { config: cfg } : {}) };
  }

  /** a plan built from this directory's config: every config key the plan records agrees */
  private configMatches(component: Component, p: Plan): boolean {
    const cfg = this.configs[component];
    if (!cfg) return true;
    const planCfg = (p as { config?: Record<string, unknown> }).config ?? {};
    return Object.entries(planCfg).every(([k, v]) => !(k in cfg) || JSON.stringify(cfg[k]) === JSON.stringify(v));
  }

  private expectedKeyShape(component: Component, d: PlanDims): number[] {
    const g = latentGeometry(d.height, d.width, this.vaeScale, this.latentChannels);
    switch (component) {
      case 'text_encoder':
        return [d.batch, d.clipTokens ?? d.textTokens];
      case 'text_encoder_2':
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
      !!p &&
      p.component === component &&
      shapeKey(p.inputs.find((i) => i.name === KEY_INPUT[component])?.shape ?? []) === shapeKey(want) &&
      (component !== 'transformer' || shapeKey(p.inputs.find((i) => i.name === 'encoder_hidden_states')?.shape.slice(0, 2) ?? []) === shapeKey([dims.batch, dims.textTokens])) &&
      this.configMatches(component, p);
    for (const given of [this.options.plans?.[component]].flat()) if (fits(given)) return given;
    const shipped = this.components.shippedPlan(component);
    if (fits(shipped)) return shipped;
    if (this.options.planProvider) {
      const p = await this.options.planProvider(component, dims, this.planRequest(component, dims));
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
  runner(component: Component, dims: PlanDims): Promise<Runner> {
    return this.components.runner(component, shapeKey(this.expectedKeyShape(component, dims)), () => this.planFor(component, dims));
  }

  /** The plan dims of a request (text tokens: the transformer's; CLIP's count beside them for FLUX.1). */
  dims(batch: number, height: number, width: number, textTokens = this.textTokens): PlanDims {
    return { batch, height, width, textTokens, ...(this.family.text === 'clip_t5' ? { clipTokens: this.clipTokens } : {}) };
  }

  /** Text encoder: prompts -> encoder_hidden_states [B, T, D] and pooled_projections [B, Dp]. */
  async encodePrompt(prompts: string[], height = 32, width = 32, encoder?: TextEncoderRun, textTokens = this.textTokens): Promise<EncodedPrompt> {
    if (this.family.text === 'clip_t5') return this.encodeClipT5(prompts, height, width, textTokens);
    const B = prompts.length;
    const tTok = performance.now();
    const tokenizer = this.tokenizer!;
    const enc = prompts.map((p) => tokenizer.encode(p));
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
      const te = await this.textExecutor('text_encoder', this.dims(B, height, width));
      te.setInputs({ input_ids: ids, attention_mask: mask });
      await te.forward();
      out = { encoderHiddenStates: await te.output('encoder_hidden_states'), pooledProjections: await te.output('pooled_projections') };
    }
    return {
      ...out,
      inputIds: enc.map((e) => e.inputIds),
      unknownWords: [...new Set(enc.flatMap((e) => e.unknown))],
      tokenizeMs,
    };
  }

  /**
   * FluxPipeline.encode_prompt: CLIP (77 tokens, pooled output at the EOS token) -> pooled_projections, T5
   * (`textTokens` = max_sequence_length) -> encoder_hidden_states. No attention masks: FluxPipeline passes
   * none to either encoder.
   */
  private async encodeClipT5(prompts: string[], height: number, width: number, textTokens: number): Promise<EncodedPrompt> {
    const B = prompts.length;
    const tTok = performance.now();
    const clip = prompts.map((p) => this.clipTokenizer!.encode(p, this.clipTokens));
    const t5 = prompts.map((p) => this.t5Tokenizer!.encode(p, textTokens));
    const tokenizeMs = performance.now() - tTok;
    const L = this.clipTokens;
    const clipIds = new Float32Array(B * L);
    const poolMask = new Float32Array(B * L);
    clip.forEach((e, b) => {
      clipIds.set(e.ids, b * L);
      poolMask[b * L + clipPoolIndex(e.ids, this.clipEosTokenId)] = 1;
    });
    const t5Ids = new Float32Array(B * textTokens);
    t5.forEach((e, b) => t5Ids.set(e.ids, b * textTokens));
    const d = this.dims(B, height, width, textTokens);
    const rc = await this.textExecutor('text_encoder', d);
    rc.setInputs({ input_ids: clipIds, pool_mask: poolMask });
    await rc.forward();
    const rt = await this.textExecutor('text_encoder_2', d);
    rt.setInputs({ input_ids: t5Ids });
    await rt.forward();
    return {
      encoderHiddenStates: await rt.output('last_hidden_state'),
      pooledProjections: await rc.output('pooler_output'),
      inputIds: t5.map((e) => e.ids),
      clipInputIds: clip.map((e) => e.ids),
      unknownWords: [],
      tokenizeMs,
    };
  }

  /** The transformer plan's inputs by name (FluxTransformer2DModel.forward's arguments), for one rank or many. */
  transformerInputs(inputs: {
    hiddenStates: Float32Array;
    encoderHiddenStates: Float32Array;
    pooledProjections: Float32Array;
    timestep: Float32Array;
    height: number;
    width: number;
    textTokens: number;
    guidance?: Float32Array;
  }): Record<string, Float32Array> {
    const g = this.geometry(inputs.height, inputs.width);
    const ins: Record<string, Float32Array> = {
      hidden_states: inputs.hiddenStates,
      encoder_hidden_states: inputs.encoderHiddenStates,
      pooled_projections: inputs.pooledProjections,
      timestep: inputs.timestep,
      img_ids: imageIds(g.latentHeight / 2, g.latentWidth / 2),
      txt_ids: textIds(inputs.textTokens),
    };
    if (inputs.guidance) ins.guidance = inputs.guidance;
    return ins;
  }

  /** FluxPipeline's guidance input: full([B], guidance_scale) when the transformer embeds it (FLUX.1-dev). */
  guidanceInput(batch: number, guidanceScale: number | undefined): Float32Array | undefined {
    if (this.family.text !== 'clip_t5' || !this.guidanceEmbeds) return undefined;
    const g = guidanceScale ?? 3.5;
    if (!Number.isFinite(g)) throw new UserError(`--guidance-scale must be a number, got ${guidanceScale}`);
    return new Float32Array(batch).fill(g);
  }

  /** The T5 token count of a request (FluxPipeline max_sequence_length, at most 512); tiny-flux: its fixed count. */
  textTokensFor(maxSequenceLength: number | undefined): number {
    const T = maxSequenceLength ?? this.textTokens;
    if (this.family.text === 'clip_t5') {
      if (!Number.isInteger(T) || T < 1 || T > FLUX_MAX_SEQUENCE_LENGTH) {
        throw new UserError(`--max-sequence-length must be an integer in 1..${FLUX_MAX_SEQUENCE_LENGTH} (FluxPipeline's limit), got ${maxSequenceLength}`);
      }
    } else if (T !== this.textTokens) {
      throw new UserError(`--max-sequence-length: ${this.name} encodes exactly ${this.textTokens} text tokens, got ${maxSequenceLength}`);
    }
    return T;
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
    /** text tokens (default: the pipeline's) */
    textTokens?: number;
    /** FLUX.1-dev's distilled guidance, one per batch item (when the transformer has guidance_embeds) */
    guidance?: Float32Array;
  }): Promise<Float32Array> {
    const T = inputs.textTokens ?? this.textTokens;
    const ex = await this.transformerExecutor(this.dims(inputs.batch, inputs.height, inputs.width, T));
    ex.setInputs(this.transformerInputs({ ...inputs, textTokens: T }));
    if (this.cacheSession) await this.cacheSession.forward();
    else await ex.forward();
    return ex.output('output');
  }

  private rankTransformer: RankExecutor | null = null;
  private readonly rankTextEncoders = new Map<Component, ComponentExecutor>();

  /** the transformer's executor at these dims: a local runner, or this rank's plan of a parallel lowering */
  private async transformerExecutor(d: PlanDims): Promise<ComponentExecutor> {
    const rank = this.options.rank;
    // a rank's plan holds its split of the inputs: its ParallelExecutor checks the full sizes it is given
    if (!rank) return localExecutor(await this.runner('transformer', d));
    this.rankTransformer ??= rankExecutor(rank.comm, rank.transformerPlan, await this.components.weightsOf('transformer'), this.options.threads ? { threads: this.options.threads } : {});
    return this.rankTransformer;
  }

  /** a text encoder's executor: TE-P on a rank (its tensor-parallel plan, collective on every rank), else local */
  private async textExecutor(component: 'text_encoder' | 'text_encoder_2', d: PlanDims): Promise<ComponentExecutor> {
    const rank = this.options.rank;
    const plan = component === 'text_encoder' ? rank?.textEncoderPlan : rank?.textEncoder2Plan;
    if (!rank || !plan) return localExecutor(await this.runner(component, d));
    let ex = this.rankTextEncoders.get(component);
    if (!ex) {
      ex = rankExecutor(rank.comm, plan, await this.components.weightsOf(component), this.options.threads ? { threads: this.options.threads } : {});
      this.rankTextEncoders.set(component, ex);
    }
    return ex;
  }

  /** ms this rank's transformer spent in collectives (0 on one rank) */
  transformerCommMs(): number {
    return this.rankTransformer?.exec.stats.commMs ?? 0;
  }

  /**
   * VAE decoder: VAE-space latents [B, C, h, w] -> raw decoder output [B, 3, H, W]. `tiling`: diffusers'
   * tiled_decode when the latents exceed one tile (each tile through the plan compiled for its size).
   */
  async decodeVaeSpace(z: Float32Array, batch: number, height: number, width: number, opts: { tiling?: boolean } = {}): Promise<Float32Array> {
    const grid = opts.tiling ? this.vaeTileGrid(height, width) : null;
    if (grid) return tiledDecode(z, batch, this.latentChannels, this.vaeOutChannels, grid, (tile, t) => this.decodeVaeTile(tile, batch, t, grid));
    const r = await this.runner('vae', this.dims(batch, height, width));
    setRunnerInputs(r, { latents: z });
    await forwardRunner(r);
    return runnerOutput(r, 'sample');
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
    setRunnerInputs(r, { latents: tile });
    await forwardRunner(r);
    return runnerOutput(r, 'sample');
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

  private readonly queue = new SerialQueue();
  /** the request's cache session while a cached generate runs */
  private cacheSession: CachedForward | null = null;

  /**
   * Text-to-image (FluxPipeline semantics). Concurrent calls on one pipeline run one after the other
   * (they share the executors' arenas).
   */
  generate(opts: GenerateOptions): Promise<GenerateResult> {
    return this.queue.run(() => this.generateNow(opts));
  }

  private async generateNow(opts: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const { steps, batch, seed } = checkRequest(opts, 28);
    const flux1 = this.family.text === 'clip_t5';
    // FluxPipeline's default size: default_sample_size (128) x vae_scale_factor
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    const textTokens = this.textTokensFor(opts.maxSequenceLength);
    if (!flux1 && opts.trueCfgScale !== undefined) throw new UserError(`--true-cfg-scale is for FLUX.1 directories; ${this.name} takes the CFG scale as --guidance-scale`);
    const g = this.geometry(height, width);
    const guidance = this.guidanceInput(batch, opts.guidanceScale);
    checkLatents(opts.latents, [batch, g.tokens, g.packedChannels], `${height}x${width}`);

    // setup: executors for these shapes (first call only), timed separately
    const ts = performance.now();
    const dims = this.dims(batch, height, width, textTokens);
    if (!this.options.rank?.textEncoderPlan) await this.runner('text_encoder', dims);
    if (flux1 && !this.options.rank?.textEncoder2Plan) await this.runner('text_encoder_2', dims);
    const tr = await this.transformerExecutor(dims);
    const decodeMode = opts.decode ?? 'local';
    if (decodeMode === 'parallel' && !this.options.rank) throw new Error("decode 'parallel' (VAE-P) runs on the ranks of a multi-rank run");
    // a tiled decode never runs the full-size VAE plan (diffusers' tiled_decode): one executor per tile size
    const grid = opts.vaeTiling ? this.vaeTileGrid(height, width) : null;
    if (decodeMode !== 'none') for (const d of grid ? this.vaeTileDims(batch, grid) : [dims]) await this.runner('vae', d);
    const setup = performance.now() - ts;

    const prompts = new Array<string>(batch).fill(opts.prompt);
    const tTe = performance.now();
    const text = await this.encodePrompt(prompts, height, width, undefined, textTokens);
    const tokenize = text.tokenizeMs;
    const textEncoder = performance.now() - tTe - tokenize;

    const cfgScale = trueCfgScale(opts, this.family);
    const doCfg = cfgScale !== null;
    const negText = doCfg ? await this.encodePrompt(new Array<string>(batch).fill(opts.negativePrompt!), height, width, undefined, textTokens) : null;
    if (opts.cache) {
      try {
        this.cacheSession = tr.cacheSession(opts.cache, { steps, separateCfg: doCfg });
      } catch (e) {
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
        this.transformer({ hiddenStates: x, encoderHiddenStates: t.encoderHiddenStates, pooledProjections: t.pooledProjections, timestep, batch, height, width, textTokens, ...(guidance ? { guidance } : {}) }),
      ...(opts.onStep ? { onStep: opts.onStep } : {}),
      ...(opts.beforeStep ? { beforeStep: opts.beforeStep } : {}),
    });
    const denoise = performance.now() - tDen;

    const tVae = performance.now();
    let decoded: Float32Array = new Float32Array(0);
    let vaeTiles = 0;
    if (decodeMode === 'parallel' && grid) {
      decoded = await tiledDecodeParallel(this.options.rank!.comm, this.toVaeSpace(x, batch, height, width), batch, this.latentChannels, this.vaeOutChannels, grid, (tile, t) => {
        vaeTiles++;
        return this.decodeVaeTile(tile, batch, t, grid);
      });
    } else if (decodeMode !== 'none') {
      decoded = await this.decodeVaeSpace(this.toVaeSpace(x, batch, height, width), batch, height, width, { tiling: opts.vaeTiling === true });
      vaeTiles = grid ? grid.tiles.length : 1;
    }
    assertFinite(decoded, "the VAE decoder's image");
    const images: Uint8Array[] = [];
    if (decoded.length) for (let b = 0; b < batch; b++) images.push(toUint8HWC(decoded, this.vaeOutChannels, height, width, b));
    const vae = performance.now() - tVae;

    return {
      image: images[0]!,
      images,
      width,
      height,
      latents: x,
      latentsShape: [batch, g.tokens, g.packedChannels],
      decoded,
      vaeTiles,
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
    return this.components.threads();
  }

  /** bytes of the executors' arenas */
  arenaBytes(): number {
    return this.components.arenaBytes();
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
  const { name, dir, family } = resolveModelDir(model);
  const other: Record<string, string> = { WanPipeline: 'loadWanPipeline (runtime/pipelines/wan.ts)', QwenImagePipeline: 'loadQwenImagePipeline (runtime/pipelines/qwen-image.ts)' };
  if (other[family.pipelineClass]) throw new UserError(`${dir}: a ${family.pipelineClass} directory; load it with ${other[family.pipelineClass]} (the CLI's generate takes any of them)`);
  // the native addon is loaded on the first forward pass (so inputs can be validated without it)
  return new Pipeline(name, dir, options, family);
}
