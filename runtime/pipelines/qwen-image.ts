// diffusers QwenImagePipeline (text-to-image) on compiled plans: the prompt in Qwen-Image's chat template ->
// Qwen2.5-VL's text model, last hidden state, the template's 34 tokens dropped -> FlowMatch Euler (dynamic
// shift, stretched to shift_terminal) over QwenImageTransformer2DModel with true CFG and its norm rescale
// (cond then uncond: Cache-DiT's separate-CFG order) -> latents unpacked, de-normalised with the VAE's
// per-channel mean / std -> AutoencoderKLQwenImage (the Wan decoder, one frame) -> uint8 pixels.
import path from 'node:path';
import { ComponentRunners, localExecutor, resolvePlan, SerialQueue, runnerOutput, setRunnerInputs, forwardRunner, shapeKey, type CachedForward, type ComponentExecutor, type Runner } from '../component-runners.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { denormalize, quantizeHWC } from '../image.ts';
import { latentGeometry, packLatents, qwenImageRopeIds, unpackLatents, type LatentGeometry } from '../latents.ts';
import { componentConfig, configNumber, UserError, type PipelineFamily } from '../model-dir.ts';
import { loadNative } from '../native.ts';
import type { Component, Plan } from '../plan.ts';
import type { PipelineCacheResult } from '../pipeline-cache.ts';
import type { BaseGenerateOptions, PipelineOptions, StageTimings } from '../pipeline.ts';
import { torchRandn } from '../rng.ts';
import { eulerStep, fluxSchedule, loadSchedulerConfig, transformerTimestep, type FlowMatchSchedulerConfig, type Schedule } from '../scheduler.ts';
import { assertFinite, checkLatents, checkRequest } from '../request-checks.ts';
import { rankTransformer, type RankOption, type RankPrep } from './rank-option.ts';
import { decodeWanVae, toWanVaeSpace, wanVaeLayout, type WanVaeLayout } from './wan-vae.ts';

/** QwenImagePipeline's prompt_template_encode and the tokens of its prefix the pipeline drops */
const TEMPLATE =
  '<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n';
const DROP = 34;
/** tokenizer_max_length */
const MAX_TOKENS = 1024;

/** QwenImagePipeline: steps 50, 1024 x 1024, true CFG (true_cfg_scale 4) when a negative prompt is given */
export interface QwenImageGenerateOptions extends BaseGenerateOptions {
  trueCfgScale?: number;
  /** decode the latents (default true; the ranks of a multi-rank run other than 0 skip it) */
  decode?: boolean;
}

export interface QwenImageOptions extends Omit<PipelineOptions, 'rank'> {
  generatedDir: string;
  /** a rank: the transformer runs this rank's plans of a parallel lowering, by text tokens */
  rank?: RankOption;
}

export interface QwenImageResult {
  image: Uint8Array;
  images: Uint8Array[];
  width: number;
  height: number;
  /** final packed latents [B, tokens, 64] */
  latents: Float32Array;
  latentsShape: [number, number, number];
  steps: number;
  seed: number | null;
  inputIds: number[];
  schedule: Schedule;
  timings: StageTimings;
  cache?: PipelineCacheResult;
}

export class QwenImagePipeline {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  private readonly components: ComponentRunners;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
  private readonly vae: WanVaeLayout;
  /** VAE pixels per latent pixel (2^len(temperal_downsample)) */
  private readonly vaeScale: number;
  private readonly textDim: number;
  private readonly queue = new SerialQueue();

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly options: QwenImageOptions,
    readonly family: PipelineFamily,
  ) {
    this.components = new ComponentRunners(name, dir, { generatedDir: options.generatedDir, ...(options.threads ? { threads: options.threads } : {}), ...(options.device ? { device: options.device } : {}) });
    this.scheduler = loadSchedulerConfig(path.join(dir, 'scheduler', 'scheduler_config.json'));
    this.tokenizer = HfTokenizer.fromDir(path.join(dir, 'tokenizer'));
    this.configs.transformer = componentConfig(dir, 'transformer');
    // Qwen2_5_VLConfig nests the language model's fields under text_config (transformers 5)
    const te = componentConfig(dir, 'text_encoder');
    const teFile = path.join(dir, 'text_encoder', 'config.json');
    const text = (te.text_config as Record<string, unknown> | undefined) ?? te;
    if (!text || typeof text !== 'object') throw new UserError(`${teFile}: field "text_config" must be an object`);
    this.configs.text_encoder = { ...text, weight_prefix: 'model.', output_hidden_state: -1 };
    const vaeFile = path.join(dir, 'vae', 'config.json');
    this.configs.vae = componentConfig(dir, 'vae');
    this.vae = wanVaeLayout(this.configs.vae, vaeFile);
    const td = this.configs.vae.temperal_downsample;
    if (!Array.isArray(td)) throw new UserError(`${vaeFile}: field "temperal_downsample" must be a list of booleans, got ${JSON.stringify(td)}`);
    this.vaeScale = 2 ** td.length;
    const tfFile = path.join(dir, 'transformer', 'config.json');
    this.textDim = configNumber(this.configs.transformer, 'joint_attention_dim', tfFile, { int: true, min: 1 });
    const inCh = configNumber(this.configs.transformer, 'in_channels', tfFile, { int: true, min: 1 });
    if (inCh !== 4 * this.vae.zDim) throw new UserError(`${tfFile}: in_channels ${inCh} is not 4 x the VAE's z_dim ${this.vae.zDim} (2x2 packing)`);
    const hd = configNumber(text, 'hidden_size', teFile, { int: true, min: 1 });
    if (hd !== this.textDim) throw new UserError(`${tfFile}: joint_attention_dim ${this.textDim} differs from the text encoder's hidden_size ${hd}`);
    if (this.configs.transformer.guidance_embeds === true) throw new UserError(`${tfFile}: guidance_embeds=true (a guidance-distilled Qwen-Image) is not supported yet`);
  }

  /** QwenImagePipeline's default size: default_sample_size 128 x vae_scale_factor */
  defaultSize(): { height: number; width: number } {
    return { height: 128 * this.vaeScale, width: 128 * this.vaeScale };
  }

  geometry(height: number, width: number): LatentGeometry {
    const mult = this.vaeScale * 2;
    for (const [flag, v] of [['height', height], ['width', width]] as const) {
      if (!Number.isInteger(v) || v <= 0 || v % mult !== 0) throw new UserError(`--${flag} must be a positive multiple of ${mult} (the VAE scale ${this.vaeScale} x 2x2 packing), got ${v}`);
    }
    return latentGeometry(height, width, this.vaeScale, this.vae.zDim);
  }

  private request(component: Component, dims: Record<string, number>) {
    return { model: this.name, dims, config: this.configs[component]! };
  }

  private planFor(component: Component, dims: Record<string, number>, want: Record<string, number[]>): Promise<Plan> {
    return resolvePlan(this.components, component, want, { given: this.options.plans?.[component], ...(this.options.planProvider ? { provider: this.options.planProvider } : {}), request: this.request(component, dims) }, (p) =>
      component !== 'vae' || (p as { dims?: Record<string, number> }).dims?.chunk === 1,
    );
  }

  private textRunner(batch: number, tokens: number): Promise<Runner> {
    const dims = { batch, textTokens: tokens };
    // the vision tower and the LM head are not part of the text encoder's plan
    return this.components.runner('text_encoder', `${batch}x${tokens}`, () => this.planFor('text_encoder', dims, { input_ids: [batch, tokens] }), {
      mayLeave: (n) => n.startsWith('visual.') || n === 'lm_head.weight',
    });
  }

  private readonly rankTransformers = new Map<number, ComponentExecutor>();

  private async transformerExecutor(batch: number, g: LatentGeometry, tokens: number): Promise<ComponentExecutor> {
    const rank = this.options.rank;
    if (rank) return rankTransformer(this.rankTransformers, rank, tokens, () => this.components.weightsOf('transformer'), this.options.threads);
    const dims = { batch, height: g.height, width: g.width, textTokens: tokens };
    const want = { hidden_states: [batch, g.tokens, g.packedChannels], encoder_hidden_states: [batch, tokens, this.textDim] };
    return localExecutor(await this.components.runner('transformer', shapeKey([batch, g.tokens, tokens]), () => this.planFor('transformer', dims, want)));
  }

  private vaeRunner(height: number, width: number): Promise<Runner> {
    const dims = { batch: 1, height, width, chunk: 1 };
    const want = { latents: [1, this.vae.zDim, height / this.vaeScale, width / this.vaeScale] };
    // one frame: the chunk-1 plan, which leaves the temporal upsampling convs
    return this.components.runner('vae', `${height}x${width}`, () => this.planFor('vae', dims, want), { mayLeave: (n) => n.includes('.upsamplers.0.time_conv.') });
  }

  /** the prompt's token ids in the template (truncated as the pipeline does) */
  private templateIds(prompt: string): number[] {
    return this.tokenizer.encodeTruncated(TEMPLATE.replace('{}', prompt), MAX_TOKENS + DROP);
  }

  /** what the ranks of a multi-rank run need (runtime/pipelines/multi-rank.ts) */
  async prepareRanks(opts: QwenImageGenerateOptions): Promise<RankPrep> {
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    this.geometry(height, width);
    const { batch } = checkRequest(opts, 50);
    const prompts = [opts.prompt, ...(opts.negativePrompt !== undefined && (opts.trueCfgScale ?? 4) > 1 ? [opts.negativePrompt] : [])];
    const transformer: RankPrep['transformer'] = {};
    const te: Plan[] = [];
    for (const p of prompts) {
      const L = this.templateIds(p).length;
      te.push((await this.textRunner(batch, L)).plan);
      transformer[L - DROP] = this.request('transformer', { batch, height, width, textTokens: L - DROP });
    }
    const { latents: _l, onStep: _o, ...rest } = opts;
    return { transformer, plans: { text_encoder: te, vae: (await this.vaeRunner(height, width)).plan }, opts: { ...rest, height, width, batch, steps: opts.steps ?? 50, seed: opts.seed ?? 0 } };
  }

  /** the template around each prompt, Qwen2.5-VL's last hidden state, the template prefix dropped: [B, T, D] */
  async encodePrompt(prompts: string[]): Promise<{ embeds: Float32Array; tokens: number; inputIds: number[][] }> {
    const enc = prompts.map((p) => this.templateIds(p));
    // padding=True pads to the longest prompt: this pipeline encodes equal prompts only (batch = copies)
    const L = enc[0]!.length;
    if (enc.some((e) => e.length !== L)) throw new UserError('QwenImagePipeline here encodes a batch of one prompt (repeated); prompts of different token lengths are not supported yet');
    if (L <= DROP) throw new Error(`the prompt template gave ${L} tokens, not more than the ${DROP} the pipeline drops (is this Qwen-Image's tokenizer?)`);
    const B = prompts.length;
    const ids = new Float32Array(B * L);
    enc.forEach((e, b) => ids.set(e, b * L));
    const r = await this.textRunner(B, L);
    setRunnerInputs(r, { input_ids: ids, attention_mask: new Float32Array(B * L).fill(1), position_ids: Float32Array.from({ length: L }, (_, i) => i) });
    await forwardRunner(r);
    const h = runnerOutput(r, 'hidden_states');
    const T = L - DROP;
    const D = this.textDim;
    const embeds = new Float32Array(B * T * D);
    for (let b = 0; b < B; b++) embeds.set(h.subarray((b * L + DROP) * D, (b + 1) * L * D), b * T * D);
    return { embeds, tokens: T, inputIds: enc };
  }

  private async velocity(ex: ComponentExecutor, x: Float32Array, text: { embeds: Float32Array; tokens: number }, timestep: Float32Array, g: LatentGeometry, session: CachedForward | null): Promise<Float32Array> {
    const ids = qwenImageRopeIds(g.latentHeight / 2, g.latentWidth / 2, text.tokens);
    const B = timestep.length;
    ex.setInputs({
      hidden_states: x,
      encoder_hidden_states: text.embeds,
      timestep,
      joint_attention_mask: new Float32Array(B * (text.tokens + g.tokens)).fill(1),
      txt_rope_ids: ids.txt,
      img_rope_ids: ids.img,
    });
    if (session) await session.forward();
    else await ex.forward();
    return ex.output('output');
  }

  generate(opts: QwenImageGenerateOptions): Promise<QwenImageResult> {
    return this.queue.run(() => this.generateNow(opts));
  }

  private async generateNow(opts: QwenImageGenerateOptions): Promise<QwenImageResult> {
    const t0 = performance.now();
    const { steps, batch, seed } = checkRequest(opts, 50);
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    const g = this.geometry(height, width);
    const scale = opts.trueCfgScale ?? 4.0;
    if (!Number.isFinite(scale)) throw new UserError(`--true-cfg-scale must be a number, got ${opts.trueCfgScale}`);
    const doCfg = scale > 1 && opts.negativePrompt !== undefined;
    const numel = batch * g.tokens * g.packedChannels;
    checkLatents(opts.latents, [batch, g.tokens, g.packedChannels], `${height}x${width}`);
    loadNative();

    const tTe = performance.now();
    const pos = await this.encodePrompt(new Array<string>(batch).fill(opts.prompt));
    const neg = doCfg ? await this.encodePrompt(new Array<string>(batch).fill(opts.negativePrompt!)) : null;
    const textEncoder = performance.now() - tTe;
    const ts = performance.now();
    const tr = await this.transformerExecutor(batch, g, pos.tokens);
    const trNeg = neg ? await this.transformerExecutor(batch, g, neg.tokens) : null;
    const decode = opts.decode !== false;
    if (decode) await this.vaeRunner(height, width);
    const setup = performance.now() - ts;
    // caching: Cache-DiT's separate CFG contexts need one executor for both branches; the two text
    // lengths give two plans here, so a cached run needs equal lengths
    let session: CachedForward | null = null;
    if (opts.cache) {
      if (neg && neg.tokens !== pos.tokens) throw new UserError(`caching with true CFG needs the prompt and the negative prompt to encode to the same length here (${pos.tokens} and ${neg.tokens} tokens)`);
      try {
        session = tr.cacheSession(opts.cache, { steps, separateCfg: doCfg });
      } catch (e) {
        throw new UserError((e as Error).message);
      }
    }

    const x = opts.latents ? Float32Array.from(opts.latents) : packLatents(torchRandn(numel, seed), batch, g.latentChannels, g.latentHeight, g.latentWidth);
    const schedule = fluxSchedule(steps, g.tokens, this.scheduler);
    const timestep = new Float32Array(batch);
    const tDen = performance.now();
    for (let i = 0; i < steps; i++) {
      const tStep = performance.now();
      timestep.fill(transformerTimestep(schedule, i));
      const v = await this.velocity(tr, x, pos, timestep, g, session);
      if (neg) {
        const u = await this.velocity(session ? tr : trNeg!, x, neg, timestep, g, session);
        rescaledCfg(v, u, scale, g.packedChannels);
      }
      eulerStep(x, v, schedule, i);
      assertFinite(x, `the latents after denoising step ${i + 1} of ${steps} (the transformer's output)`);
      opts.onStep?.({ step: i + 1, steps, timestep: schedule.timesteps[i]!, sigma: schedule.sigmas[i]!, ms: performance.now() - tStep });
    }
    const denoise = performance.now() - tDen;

    const tVae = performance.now();
    const unpacked = unpackLatents(x, batch, g.latentChannels, g.latentHeight, g.latentWidth);
    const images: Uint8Array[] = [];
    const per = g.latentChannels * g.latentHeight * g.latentWidth;
    for (let b = 0; b < (decode ? batch : 0); b++) {
      const z = toWanVaeSpace(unpacked.subarray(b * per, (b + 1) * per), this.vae);
      const [frame] = await decodeWanVae(z, 1, g.latentHeight, g.latentWidth, this.vae.zDim, () => this.vaeRunner(height, width));
      assertFinite(frame!, "the VAE decoder's image");
      images.push(quantizeHWC(denormalize(frame!), 3, height, width));
    }
    const vae = performance.now() - tVae;
    return {
      image: images[0]!,
      images,
      width,
      height,
      latents: x,
      latentsShape: [batch, g.tokens, g.packedChannels],
      steps,
      seed: opts.latents ? null : seed,
      inputIds: pos.inputIds[0]!,
      schedule,
      timings: { tokenize: 0, textEncoder, denoise, perStep: denoise / steps, vae, setup, total: performance.now() - t0 },
      ...(session ? { cache: session.result() } : {}),
    };
  }

  threads(): number | null {
    return this.components.threads();
  }

  arenaBytes(): number {
    return this.components.arenaBytes();
  }
}

/**
 * QwenImagePipeline's true CFG, written into `cond`: comb = neg + scale * (cond - neg), then
 * comb * ||cond|| / ||comb|| per token over the channels (torch.norm, float32 results)
 */
export function rescaledCfg(cond: Float32Array, neg: Float32Array, scale: number, channels: number): void {
  const f = Math.fround;
  const sc = f(scale);
  for (let r = 0; r < cond.length; r += channels) {
    let cn = 0;
    let nn = 0;
    const comb = new Float32Array(channels);
    for (let c = 0; c < channels; c++) {
      const p = cond[r + c]!;
      const v = f(neg[r + c]! + f(sc * f(p - neg[r + c]!)));
      comb[c] = v;
      cn += p * p;
      nn += v * v;
    }
    const ratio = f(f(Math.sqrt(cn)) / f(Math.sqrt(nn)));
    for (let c = 0; c < channels; c++) cond[r + c] = f(comb[c]! * ratio);
  }
}

/** A QwenImagePipeline directory (model_index.json `_class_name` QwenImagePipeline) on the native runtime. */
export function loadQwenImagePipeline(dir: string, options: QwenImageOptions, family: PipelineFamily): QwenImagePipeline {
  return new QwenImagePipeline(family.planModel, dir, options, family);
}
