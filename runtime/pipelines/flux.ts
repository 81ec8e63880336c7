// The FLUX family's spec (diffusers FluxPipeline; models/tiny-flux/README.md for the shipped toy): tiny-flux's
// word tokenizer + encoder, or FLUX.1's CLIP (pooled, at the EOS token) + T5 -> FlowMatch Euler (dynamic shift
// from the image size) over FluxTransformer2DModel with packed latents, img_ids / txt_ids, the distilled
// guidance embedding (FLUX.1-dev) and true CFG with a negative prompt -> unpack, / scaling_factor +
// shift_factor -> AutoencoderKL (tiled with vaeTiling; VAE-P over the ranks with decode 'parallel').
// With an `image`: FluxImg2ImgPipeline (the image through the VAE encoder, sampled and scaled, noised to the
// first of the steps `strength` keeps). A FluxFillPipeline directory (FLUX.1-Fill) takes an image and a
// `mask` too: the masked image's latents and the 8x8-unshuffled mask go beside the latents into every step.
import path from 'node:path';
import { forwardRunner, runnerOutput, setRunnerInputs, shapeKey } from '../component-runners.ts';
import { combineCfg } from '../denoise.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { toUint8HWC } from '../image.ts';
import { loadRgbImage, maskInput, type RgbImage } from '../image-input.ts';
import { imageIds, latentGeometry, latentsToVaeSpace, packLatents, textIds, type LatentGeometry } from '../latents.ts';
import { componentConfig, configNumber, readJson, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { PipelineCacheResult } from '../pipeline-cache.ts';
import type { BaseGenerateOptions, PlanDims, StageTimings } from '../pipeline.ts';
import { assertFinite, batchItems, checkRequest } from '../request-checks.ts';
import { MT19937, torchRandn, torchRandnFrom } from '../rng.ts';
import { eulerSampler, fluxSchedule, loadSchedulerConfig, type FlowMatchSchedulerConfig, type Schedule } from '../scheduler.ts';
import { WordTokenizer } from '../tokenizer.ts';
import { needsTiling, tileGrid, tileShapes, tiledDecode, tiledDecodeParallel, vaeTilingConfig, type VaeTile, type VaeTileGrid, type VaeTilingConfig } from '../vae-tiling.ts';
import { concatRows, encodePosterior, fromStartStep, imageToImage, scaleNoise, VAE_ENCODER_WEIGHTS, type ImageToImage } from './image-to-image.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';

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
   * FluxImg2ImgPipeline's `image`: a PNG path or RGB pixels, resized to height x width as diffusers does (PIL
   * Lanczos); the result starts from it, noised by `strength`
   */
  image?: string | RgbImage;
  /** FluxImg2ImgPipeline's `strength` in [0, 1] (default 0.6; FluxFillPipeline 1): how much noise the image gets */
  strength?: number;
  /** FluxFillPipeline's `mask_image` (a PNG / JPEG path or RGB pixels): white repaints, black keeps */
  mask?: string | RgbImage;
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

/** The text conditioning of a batch of prompts. */
export interface EncodedPrompt extends EncodedText {
  encoderHiddenStates: Float32Array;
  pooledProjections: Float32Array;
  /** FLUX.1: CLIP's ids */
  clipInputIds?: number[][];
  unknownWords: string[];
}

interface FluxRequest extends ResolvedRequest {
  textTokens: number;
  g: LatentGeometry;
  guidance: Float32Array | undefined;
  vaeTiling: boolean;
  /** image-to-image: the preprocessed image [1, 3, H, W], and the first step of the full schedule that runs */
  img2img: ImageToImage | null;
  /** inpainting (FluxFillPipeline): the binarized mask [H * W]; `cond` (the masked image's latents and the mask, packed per token) once made */
  fill: { mask: Float32Array; cond?: Float32Array } | null;
}

interface FluxDecoded {
  decoded: Float32Array;
  vaeTiles: number;
}

/** FluxPipeline's default `max_sequence_length` (and its limit) */
const FLUX_MAX_SEQUENCE_LENGTH = 512;

/** the input whose shape identifies the dims a plan was built for */
const KEY_INPUT: Record<Component, string> = { text_encoder: 'input_ids', text_encoder_2: 'input_ids', transformer: 'hidden_states', vae: 'latents', vae_encoder: 'sample' };

/** The dims a component's plan is parameterised by (compilePlan's `dims` for that component). */
export function componentDims(component: Component, d: PlanDims): Record<string, number> {
  switch (component) {
    case 'text_encoder':
      return { batch: d.batch, textTokens: d.clipTokens ?? d.textTokens };
    case 'text_encoder_2':
      return { batch: d.batch, textTokens: d.textTokens };
    case 'vae':
    case 'vae_encoder':
      return { batch: d.batch, height: d.height, width: d.width };
    case 'transformer':
      return { batch: d.batch, height: d.height, width: d.width, textTokens: d.textTokens };
  }
}

/**
 * FluxPipeline's true CFG switch (`do_true_cfg = true_cfg_scale > 1 and a negative prompt`): the scale, or
 * null when CFG is off. tiny-flux takes the scale from `guidanceScale` (it has no guidance embedding);
 * FLUX.1 from `trueCfgScale`, its `guidanceScale` being the distilled guidance embedding.
 */
export function trueCfgScale(opts: Pick<GenerateOptions, 'negativePrompt' | 'guidanceScale' | 'trueCfgScale'>, tiny: boolean): number | null {
  const g = (tiny ? opts.guidanceScale : opts.trueCfgScale) ?? 1;
  if (typeof g !== 'number' || !Number.isFinite(g)) throw new UserError(`--${tiny ? 'guidance-scale' : 'true-cfg-scale'} must be a number, got ${tiny ? opts.guidanceScale : opts.trueCfgScale}`);
  return opts.negativePrompt !== undefined && g > 1 ? g : null;
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

export class FluxSpec implements PipelineSpec<GenerateOptions, FluxRequest, EncodedPrompt, FluxDecoded, GenerateResult> {
  /** batched requests: each item its own prompt and seed (the server's batching) */
  readonly batching = true;
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
  private readonly tiny: boolean;
  readonly imageToImage = true;
  /** a FluxFillPipeline directory: inpainting with an image and a mask */
  readonly inpainting: boolean;
  /** the transformer's input channels per token (FLUX.1-Fill: latents + masked image latents + mask, 384) */
  private readonly transformerInChannels: number;
  /** each request's one generator (diffusers' `generator`): the posterior samples and the noise, in call order */
  private readonly generators = new WeakMap<FluxRequest, MT19937>();

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
    this.tiny = family.text === 'tiny';
    this.inpainting = family.pipelineClass === 'FluxFillPipeline';
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
    if (this.tiny) {
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
      const g = this.configs.transformer!.guidance_embeds;
      if (typeof g !== 'boolean') throw new UserError(`${path.join(dir, 'transformer', 'config.json')}: field "guidance_embeds" must be true or false, got ${JSON.stringify(g)}`);
      this.guidanceEmbeds = g;
    }
    const packed = this.latentChannels * 4;
    this.transformerInChannels = this.tiny ? packed : configNumber(this.configs.transformer!, 'in_channels', path.join(dir, 'transformer', 'config.json'), { int: true, min: 1 });
    const want = this.inpainting ? packed * 2 + 4 * this.vaeScale * this.vaeScale : packed;
    if (this.transformerInChannels !== want) {
      throw new UserError(`${path.join(dir, 'transformer', 'config.json')}: field "in_channels" must be ${want} for ${family.pipelineClass} with this VAE (${this.inpainting ? 'latents, masked image latents and the unshuffled mask' : '2x2-packed latent channels'}), got ${this.transformerInChannels}`);
    }
  }

  /** the pipeline's default image size (FluxPipeline: default_sample_size 128 x vae_scale_factor; tiny-flux 32) */
  defaultSize(): { height: number; width: number } {
    const s = this.tiny ? 32 : 128 * this.vaeScale;
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

  /** The plan dims of a request (text tokens: the transformer's; CLIP's count beside them for FLUX.1). */
  dims(batch: number, height: number, width: number, textTokens = this.textTokens): PlanDims {
    return { batch, height, width, textTokens, ...(this.tiny ? {} : { clipTokens: this.clipTokens }) };
  }

  /** the executor need of a component at these dims */
  need(component: Component, d: PlanDims): PlanNeed {
    const want = this.expectedKeyShape(component, d);
    const cfg = this.configs[component === 'vae_encoder' ? 'vae' : component];
    const n: PlanNeed = { component, key: shapeKey(want), dims: componentDims(component, d), want: { [KEY_INPUT[component]]: want }, ...(cfg ? { config: cfg } : {}) };
    if (component === 'vae_encoder') return { ...n, ...VAE_ENCODER_WEIGHTS };
    if (component === 'transformer') return { ...n, key: shapeKey([...want, d.textTokens]), also: (p) => shapeKey(p.inputs.find((i) => i.name === 'encoder_hidden_states')?.shape.slice(0, 2) ?? []) === shapeKey([d.batch, d.textTokens]) };
    if (component === 'text_encoder' || component === 'text_encoder_2') return { ...n, textParallel: true };
    return n;
  }

  private expectedKeyShape(component: Component, d: PlanDims): number[] {
    switch (component) {
      case 'text_encoder':
        return [d.batch, d.clipTokens ?? d.textTokens];
      case 'text_encoder_2':
        return [d.batch, d.textTokens];
      case 'transformer': {
        const g = latentGeometry(d.height, d.width, this.vaeScale, this.latentChannels);
        return [d.batch, g.tokens, this.transformerInChannels];
      }
      case 'vae':
        // exact division (not the packing geometry): VAE tiles may have any latent size
        return [d.batch, this.latentChannels, d.height / this.vaeScale, d.width / this.vaeScale];
      case 'vae_encoder':
        return [d.batch, 3, d.height, d.width];
    }
  }

  /** FluxPipeline's guidance input: full([B], guidance_scale) when the transformer embeds it (FLUX.1-dev). */
  guidanceInput(batch: number, guidanceScale: number | undefined): Float32Array | undefined {
    if (this.tiny || !this.guidanceEmbeds) return undefined;
    const g = guidanceScale ?? 3.5;
    if (!Number.isFinite(g)) throw new UserError(`--guidance-scale must be a number, got ${guidanceScale}`);
    return new Float32Array(batch).fill(g);
  }

  /** The T5 token count of a request (FluxPipeline max_sequence_length, at most 512); tiny-flux: its fixed count. */
  textTokensFor(maxSequenceLength: number | undefined): number {
    const T = maxSequenceLength ?? this.textTokens;
    if (!this.tiny) {
      if (!Number.isInteger(T) || T < 1 || T > FLUX_MAX_SEQUENCE_LENGTH) {
        throw new UserError(`--max-sequence-length must be an integer in 1..${FLUX_MAX_SEQUENCE_LENGTH} (FluxPipeline's limit), got ${maxSequenceLength}`);
      }
    } else if (T !== this.textTokens) {
      throw new UserError(`--max-sequence-length: ${this.ctx.model} encodes exactly ${this.textTokens} text tokens, got ${maxSequenceLength}`);
    }
    return T;
  }

  resolve(opts: GenerateOptions): FluxRequest {
    // FluxFillPipeline: 50 steps, guidance 30, strength 1, an image and a mask
    const items = batchItems(opts);
    const { steps, batch, seed } = checkRequest(items ? { ...opts, batch: items.length } : opts, this.inpainting ? 50 : 28);
    if (this.inpainting && (opts.image === undefined || opts.mask === undefined)) throw new UserError(`${this.family.pipelineClass} inpaints: give --image and --mask (white repaints)`);
    // FluxPipeline's default size: default_sample_size (128) x vae_scale_factor
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    const textTokens = this.textTokensFor(opts.maxSequenceLength);
    if (this.tiny && opts.trueCfgScale !== undefined) throw new UserError(`--true-cfg-scale is for FLUX.1 directories; ${this.ctx.model} takes the CFG scale as --guidance-scale`);
    const g = this.geometry(height, width);
    const cfgScale = trueCfgScale(opts, this.tiny);
    const img2img = imageToImage(opts.image, opts.strength, this.inpainting ? 1 : 0.6, steps, height, width);
    return {
      steps: img2img ? img2img.fullSteps - img2img.startStep : steps,
      batch,
      seed,
      height,
      width,
      prompt: opts.prompt,
      negativePrompt: cfgScale === null ? null : opts.negativePrompt!,
      cfgScale,
      latentsShape: [batch, g.tokens, g.packedChannels],
      latentsFor: `${height}x${width}`,
      textTokens,
      g,
      guidance: this.guidanceInput(batch, opts.guidanceScale ?? (this.inpainting ? 30 : undefined)),
      vaeTiling: opts.vaeTiling === true,
      img2img,
      fill: opts.mask !== undefined ? { mask: maskInput(loadRgbImage(opts.mask, '--mask'), height, width) } : null,
      ...(items ? { prompts: items.map((i) => i.prompt), seeds: items.map((i) => i.seed) } : {}),
    };
  }

  needs(q: FluxRequest, decode: DecodeMode): PlanNeed[] {
    const d = this.dims(q.batch, q.height, q.width, q.textTokens);
    const out = [this.need('text_encoder', d), ...(this.tiny ? [] : [this.need('text_encoder_2', d)]), this.need('transformer', d)];
    if (q.img2img) out.push(this.need('vae_encoder', this.dims(1, q.height, q.width)));
    // a tiled decode never runs the full-size VAE plan (diffusers' tiled_decode): one executor per tile size
    const grid = q.vaeTiling ? this.vaeTileGrid(q.height, q.width) : null;
    if (decode !== 'none') for (const v of grid ? this.vaeTileDims(q.batch, grid) : [d]) out.push(this.need('vae', v));
    return out;
  }

  encode(q: FluxRequest, prompts: string[]): Promise<EncodedPrompt> {
    return this.encodePrompt(prompts, q.height, q.width, q.textTokens);
  }

  /** Text encoder: prompts -> encoder_hidden_states [B, T, D] and pooled_projections [B, Dp]. */
  async encodePrompt(prompts: string[], height = 32, width = 32, textTokens = this.textTokens): Promise<EncodedPrompt> {
    if (!this.tiny) return this.encodeClipT5(prompts, height, width, textTokens);
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
    const te = await this.ctx.executor(this.need('text_encoder', this.dims(B, height, width)));
    te.setInputs({ input_ids: ids, attention_mask: mask });
    await te.forward();
    return {
      encoderHiddenStates: await te.output('encoder_hidden_states'),
      pooledProjections: await te.output('pooled_projections'),
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
    const rc = await this.ctx.executor(this.need('text_encoder', d));
    rc.setInputs({ input_ids: clipIds, pool_mask: poolMask });
    await rc.forward();
    const rt = await this.ctx.executor(this.need('text_encoder_2', d));
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

  transformerNeed(q: FluxRequest): PlanNeed {
    return this.need('transformer', this.dims(q.batch, q.height, q.width, q.textTokens));
  }

  transformerInputs(q: FluxRequest, x: Float32Array, text: EncodedPrompt, timestep: Float32Array): Record<string, Float32Array> {
    return this.inputsAt(q.height, q.width, q.textTokens, { hiddenStates: q.fill ? this.withFillCondition(q, x) : x, encoderHiddenStates: text.encoderHiddenStates, pooledProjections: text.pooledProjections, timestep, ...(q.guidance ? { guidance: q.guidance } : {}) });
  }

  /** FluxFillPipeline's transformer input: cat((latents, masked image latents + mask), dim=2) */
  private withFillCondition(q: FluxRequest, x: Float32Array): Float32Array {
    return concatRows(x, q.fill!.cond!, q.batch * q.g.tokens);
  }

  /** The transformer plan's inputs by name (FluxTransformer2DModel.forward's arguments). */
  private inputsAt(height: number, width: number, textTokens: number, i: { hiddenStates: Float32Array; encoderHiddenStates: Float32Array; pooledProjections: Float32Array; timestep: Float32Array; guidance?: Float32Array }): Record<string, Float32Array> {
    const g = this.geometry(height, width);
    const ins: Record<string, Float32Array> = {
      hidden_states: i.hiddenStates,
      encoder_hidden_states: i.encoderHiddenStates,
      pooled_projections: i.pooledProjections,
      timestep: i.timestep,
      img_ids: imageIds(g.latentHeight / 2, g.latentWidth / 2),
      txt_ids: textIds(textTokens),
    };
    if (i.guidance) ins.guidance = i.guidance;
    return ins;
  }

  /** One transformer forward (velocity) at these dims, uncached. `timestep` is the model input (t / 1000), one per batch item. */
  async transformer(i: {
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
    const T = i.textTokens ?? this.textTokens;
    const ex = await this.ctx.executor(this.need('transformer', this.dims(i.batch, i.height, i.width, T)));
    ex.setInputs(this.inputsAt(i.height, i.width, T, i));
    await ex.forward();
    return ex.output('output');
  }

  noise(q: FluxRequest): Float32Array | Promise<Float32Array> {
    if (q.img2img) return this.noisedImage(q, q.img2img);
    if (!q.seeds) return this.seededNoise(q.seed, q.batch, q.height, q.width);
    // batched requests: each item's noise from its own seed, as it would be alone
    const per = this.seededNoise(q.seeds[0]!, 1, q.height, q.width).length;
    const out = new Float32Array(q.batch * per);
    q.seeds.forEach((s, b) => out.set(this.seededNoise(s, 1, q.height, q.width), b * per));
    return out;
  }

  /**
   * FluxImg2ImgPipeline.prepare_latents: the image's scaled posterior sample (encodePosterior), then the
   * noise, from the request's one generator (as diffusers' `generator`); scale_noise to the first kept step
   */
  private async noisedImage(q: FluxRequest, i: ImageToImage): Promise<Float32Array> {
    const { g } = q;
    const gen = this.generator(q);
    const z = await this.encodeSample(q, i.image, gen);
    const noise = torchRandnFrom(gen, q.batch * z.length);
    const x = scaleNoise(z, noise, this.schedule(q).sigmas[0]!);
    return packLatents(x, q.batch, g.latentChannels, g.latentHeight, g.latentWidth);
  }

  /** the VAE encoder's scaled posterior sample of one image [C, h, w] */
  private async encodeSample(q: FluxRequest, image: Float32Array, gen: MT19937): Promise<Float32Array> {
    const r = await this.ctx.runner(this.need('vae_encoder', this.dims(1, q.height, q.width)));
    return encodePosterior(r, image, gen, this);
  }

  /** the request's one generator, made on first use */
  private generator(q: FluxRequest): MT19937 {
    let g = this.generators.get(q);
    if (!g) this.generators.set(q, (g = new MT19937(q.seed)));
    return g;
  }

  /**
   * FluxFillPipeline.prepare_mask_latents (after the latents, so its posterior sample is the generator's next
   * draw): the masked image (image * (1 - mask)) encoded and sampled, packed [B, tokens, 4C]; the mask
   * unshuffled 8x8 into vae_scale^2 channels and packed [B, tokens, 4 vae_scale^2]; concatenated per token.
   */
  async prepareInputs(q: FluxRequest): Promise<void> {
    if (!q.fill || q.fill.cond) return;
    const { g } = q;
    const { image } = q.img2img!;
    const mask = q.fill.mask;
    const HW = q.height * q.width;
    const masked = new Float32Array(image.length);
    for (let c = 0; c < 3; c++) for (let i = 0; i < HW; i++) masked[c * HW + i] = Math.fround(image[c * HW + i]! * (1 - mask[i]!));
    const z = await this.encodeSample(q, masked, this.generator(q));
    const { latentChannels: C, latentHeight: h, latentWidth: w } = g;
    const s = this.vaeScale;
    const zb = new Float32Array(q.batch * z.length);
    for (let b = 0; b < q.batch; b++) zb.set(z, b * z.length);
    const packedZ = packLatents(zb, q.batch, C, h, w);
    // mask [H, W] -> [s * s, h, w]: channel (i, j) holds the pixels (y * s + i, x * s + j)
    const m = new Float32Array(q.batch * s * s * h * w);
    for (let i = 0; i < s; i++)
      for (let j = 0; j < s; j++)
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) m[((i * s + j) * h + y) * w + x] = mask[(y * s + i) * q.width + x * s + j]!;
    for (let b = 1; b < q.batch; b++) m.copyWithin(b * s * s * h * w, 0, s * s * h * w);
    const packedM = packLatents(m, q.batch, s * s, h, w);
    q.fill.cond = concatRows(packedZ, packedM, q.batch * g.tokens);
  }

  /** the schedule the request runs: FluxPipeline's, or image-to-image's steps from its first kept step */
  private schedule(q: FluxRequest): Schedule {
    if (!q.img2img) return fluxSchedule(q.steps, q.g.tokens, this.scheduler);
    return fromStartStep(fluxSchedule(q.img2img.fullSteps, q.g.tokens, this.scheduler), q.img2img.startStep);
  }

  /** The seeded initial noise, packed [B, tokens, channels] (torch.randn-compatible, see rng.ts). */
  seededNoise(seed: number, batch: number, height: number, width: number): Float32Array {
    const g = this.geometry(height, width);
    const raw = torchRandn(batch * g.latentChannels * g.latentHeight * g.latentWidth, seed);
    return packLatents(raw, batch, g.latentChannels, g.latentHeight, g.latentWidth);
  }

  sampler(q: FluxRequest): ReturnType<typeof eulerSampler> {
    return eulerSampler(this.schedule(q));
  }

  combineCfg(q: FluxRequest, cond: Float32Array, uncond: Float32Array): void {
    combineCfg(cond, uncond, q.cfgScale!);
  }

  async decode(q: FluxRequest, x: Float32Array, mode: DecodeMode): Promise<FluxDecoded> {
    if (mode === 'none') return { decoded: new Float32Array(0), vaeTiles: 0 };
    const { batch, height, width } = q;
    const grid = q.vaeTiling || mode === 'parallel' ? this.vaeTileGrid(height, width) : null;
    const z = this.toVaeSpace(x, batch, height, width);
    if (mode === 'parallel' && grid) {
      if (!this.ctx.comm) throw new Error("decode 'parallel' (VAE-P) runs on the ranks of a multi-rank run");
      let vaeTiles = 0;
      const decoded = await tiledDecodeParallel(this.ctx.comm, z, batch, this.latentChannels, this.vaeOutChannels, grid, (tile, t) => {
        vaeTiles++;
        return this.decodeVaeTile(tile, batch, t, grid);
      });
      assertFinite(decoded, "the VAE decoder's image");
      return { decoded, vaeTiles };
    }
    const decoded = await this.decodeVaeSpace(z, batch, height, width, { tiling: q.vaeTiling });
    assertFinite(decoded, "the VAE decoder's image");
    return { decoded, vaeTiles: q.vaeTiling && grid ? grid.tiles.length : 1 };
  }

  /**
   * VAE decoder: VAE-space latents [B, C, h, w] -> raw decoder output [B, 3, H, W]. `tiling`: diffusers'
   * tiled_decode when the latents exceed one tile (each tile through the plan compiled for its size).
   */
  async decodeVaeSpace(z: Float32Array, batch: number, height: number, width: number, opts: { tiling?: boolean } = {}): Promise<Float32Array> {
    const grid = opts.tiling ? this.vaeTileGrid(height, width) : null;
    if (grid) return tiledDecode(z, batch, this.latentChannels, this.vaeOutChannels, grid, (tile, t) => this.decodeVaeTile(tile, batch, t, grid));
    const r = await this.ctx.runner(this.need('vae', this.dims(batch, height, width)));
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
    const r = await this.ctx.runner(this.need('vae', this.dims(batch, t.h * grid.scale, t.w * grid.scale)));
    setRunnerInputs(r, { latents: tile });
    await forwardRunner(r);
    return runnerOutput(r, 'sample');
  }

  /** packed latents -> VAE space: unpack(x) / scaling_factor + shift_factor (float32) */
  toVaeSpace(packed: Float32Array, batch: number, height: number, width: number): Float32Array {
    const g = this.geometry(height, width);
    return latentsToVaeSpace(packed, batch, g.latentChannels, g.latentHeight, g.latentWidth, this.scalingFactor, this.shiftFactor);
  }

  result(q: FluxRequest, o: DenoiseOutcome<EncodedPrompt>, d: FluxDecoded): GenerateResult {
    const images: Uint8Array[] = [];
    if (d.decoded.length) for (let b = 0; b < q.batch; b++) images.push(toUint8HWC(d.decoded, this.vaeOutChannels, q.height, q.width, b));
    return {
      image: images[0]!,
      images,
      width: q.width,
      height: q.height,
      latents: o.latents,
      latentsShape: [q.batch, q.g.tokens, q.g.packedChannels],
      decoded: d.decoded,
      vaeTiles: d.vaeTiles,
      steps: q.steps,
      seed: o.seed,
      inputIds: o.pos.inputIds[0]!,
      unknownWords: o.pos.unknownWords,
      schedule: (o.sampler as ReturnType<typeof eulerSampler>).schedule,
      timings: o.timings,
      ...(o.cache ? { cache: o.cache } : {}),
    };
  }
}
