// diffusers QwenImagePipeline (text-to-image) on compiled plans: the prompt in Qwen-Image's chat template ->
// Qwen2.5-VL's text model, last hidden state, the template's 34 tokens dropped -> FlowMatch Euler (dynamic
// shift, stretched to shift_terminal) over QwenImageTransformer2DModel with true CFG and its norm rescale
// (cond then uncond: Cache-DiT's separate-CFG order) -> latents unpacked, de-normalised with the VAE's
// per-channel mean / std -> AutoencoderKLQwenImage (the Wan decoder, one frame) -> uint8 pixels.
import path from 'node:path';
import { shapeKey } from '../component-runners.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { denormalize, quantizeHWC } from '../image.ts';
import { latentGeometry, packLatents, qwenImageRopeIds, unpackLatents, type LatentGeometry } from '../latents.ts';
import { componentConfig, configNumber, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { BaseGenerateOptions } from '../pipeline.ts';
import type { GenerateResult } from './flux.ts';
import { torchRandn } from '../rng.ts';
import { eulerSampler, fluxSchedule, loadSchedulerConfig, type FlowMatchSchedulerConfig } from '../scheduler.ts';
import { assertFinite, checkRequest } from '../request-checks.ts';
import { checkImageSize, imageResult } from './image-output.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';
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
}

interface QwenRequest extends ResolvedRequest {
  g: LatentGeometry;
}

interface QwenText extends EncodedText {
  embeds: Float32Array;
  /** text tokens after the template prefix is dropped */
  tokens: number;
}

/** FluxPipeline's image result without FLUX's raw decoder output, tile count and tiny-flux's unknown words (latents [B, tokens, 64]) */
export type QwenImageResult = Omit<GenerateResult, 'decoded' | 'vaeTiles' | 'unknownWords'>;

export class QwenImageSpec implements PipelineSpec<QwenImageGenerateOptions, QwenRequest, QwenText, Uint8Array[], QwenImageResult> {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
  private readonly vae: WanVaeLayout;
  /** VAE pixels per latent pixel (2^len(temperal_downsample)) */
  private readonly vaeScale: number;
  private readonly textDim: number;

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
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
    checkImageSize(height, width, this.vaeScale);
    return latentGeometry(height, width, this.vaeScale, this.vae.zDim);
  }

  private need(component: Component, key: string, dims: Record<string, number>, want: Record<string, number[]>, extra: Partial<PlanNeed> = {}): PlanNeed {
    return { component, key, dims, want, config: this.configs[component]!, ...extra };
  }

  private textNeed(batch: number, tokens: number): PlanNeed {
    // the vision tower and the LM head are not part of the text encoder's plan
    return this.need('text_encoder', `${batch}x${tokens}`, { batch, textTokens: tokens }, { input_ids: [batch, tokens] }, { mayLeave: (n) => n.startsWith('visual.') || n === 'lm_head.weight', textParallel: true });
  }

  private transformerNeedAt(batch: number, g: LatentGeometry, tokens: number): PlanNeed {
    const want = { hidden_states: [batch, g.tokens, g.packedChannels], encoder_hidden_states: [batch, tokens, this.textDim] };
    return this.need('transformer', shapeKey([batch, g.tokens, tokens]), { batch, height: g.height, width: g.width, textTokens: tokens }, want);
  }

  private vaeNeed(height: number, width: number): PlanNeed {
    // one frame: the chunk-1 plan, which leaves the temporal upsampling convs
    return this.need('vae', `${height}x${width}`, { batch: 1, height, width, chunk: 1 }, { latents: [1, this.vae.zDim, height / this.vaeScale, width / this.vaeScale] }, {
      also: (p) => (p as { dims?: Record<string, number> }).dims?.chunk === 1,
      mayLeave: (n) => n.includes('.upsamplers.0.time_conv.'),
    });
  }

  /** the prompt's token ids in the template (truncated as the pipeline does) */
  private templateIds(prompt: string): number[] {
    return this.tokenizer.encodeTruncated(TEMPLATE.replace('{}', prompt), MAX_TOKENS + DROP);
  }

  resolve(opts: QwenImageGenerateOptions): QwenRequest {
    const { steps, batch, seed } = checkRequest(opts, 50);
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    const g = this.geometry(height, width);
    const scale = opts.trueCfgScale ?? 4.0;
    if (!Number.isFinite(scale)) throw new UserError(`--true-cfg-scale must be a number, got ${opts.trueCfgScale}`);
    const doCfg = scale > 1 && opts.negativePrompt !== undefined;
    return {
      steps,
      batch,
      seed,
      height,
      width,
      g,
      prompt: opts.prompt,
      negativePrompt: doCfg ? opts.negativePrompt! : null,
      cfgScale: doCfg ? scale : null,
      latentsShape: [batch, g.tokens, g.packedChannels],
      latentsFor: `${height}x${width}`,
    };
  }

  needs(q: QwenRequest, decode: DecodeMode): PlanNeed[] {
    if (decode === 'parallel') throw new UserError('--parallel-vae is not supported for QwenImagePipeline yet (rank 0 decodes)');
    const out: PlanNeed[] = [];
    for (const p of [q.prompt, ...(q.negativePrompt !== null ? [q.negativePrompt] : [])]) {
      const L = this.templateIds(p).length;
      out.push(this.textNeed(q.batch, L), this.transformerNeedAt(q.batch, q.g, L - DROP));
    }
    if (decode !== 'none') out.push(this.vaeNeed(q.height, q.width));
    return out;
  }

  encode(_q: QwenRequest, prompts: string[]): Promise<QwenText> {
    return this.encodePrompt(prompts);
  }

  /** the template around each prompt, Qwen2.5-VL's last hidden state, the template prefix dropped: [B, T, D] */
  async encodePrompt(prompts: string[]): Promise<QwenText> {
    const t0 = performance.now();
    const enc = prompts.map((p) => this.templateIds(p));
    const tokenizeMs = performance.now() - t0;
    // padding=True pads to the longest prompt: this pipeline encodes equal prompts only (batch = copies)
    const L = enc[0]!.length;
    if (enc.some((e) => e.length !== L)) throw new UserError('QwenImagePipeline here encodes a batch of one prompt (repeated); prompts of different token lengths are not supported yet');
    if (L <= DROP) throw new Error(`the prompt template gave ${L} tokens, not more than the ${DROP} the pipeline drops (is this Qwen-Image's tokenizer?)`);
    const B = prompts.length;
    const ids = new Float32Array(B * L);
    enc.forEach((e, b) => ids.set(e, b * L));
    const te = await this.ctx.executor(this.textNeed(B, L));
    te.setInputs({ input_ids: ids, attention_mask: new Float32Array(B * L).fill(1), position_ids: Float32Array.from({ length: L }, (_, i) => i) });
    await te.forward();
    const h = await te.output('hidden_states');
    const T = L - DROP;
    const D = this.textDim;
    const embeds = new Float32Array(B * T * D);
    for (let b = 0; b < B; b++) embeds.set(h.subarray((b * L + DROP) * D, (b + 1) * L * D), b * T * D);
    return { embeds, tokens: T, inputIds: enc, tokenizeMs };
  }

  transformerNeed(q: QwenRequest, text: QwenText): PlanNeed {
    return this.transformerNeedAt(q.batch, q.g, text.tokens);
  }

  transformerInputs(q: QwenRequest, x: Float32Array, text: QwenText, timestep: Float32Array): Record<string, Float32Array> {
    const g = q.g;
    const ids = qwenImageRopeIds(g.latentHeight / 2, g.latentWidth / 2, text.tokens);
    return {
      hidden_states: x,
      encoder_hidden_states: text.embeds,
      timestep,
      joint_attention_mask: new Float32Array(q.batch * (text.tokens + g.tokens)).fill(1),
      txt_rope_ids: ids.txt,
      img_rope_ids: ids.img,
    };
  }

  noise(q: QwenRequest): Float32Array {
    const g = q.g;
    return packLatents(torchRandn(q.batch * g.tokens * g.packedChannels, q.seed), q.batch, g.latentChannels, g.latentHeight, g.latentWidth);
  }

  sampler(q: QwenRequest): ReturnType<typeof eulerSampler> {
    return eulerSampler(fluxSchedule(q.steps, q.g.tokens, this.scheduler));
  }

  combineCfg(q: QwenRequest, cond: Float32Array, uncond: Float32Array): void {
    rescaledCfg(cond, uncond, q.cfgScale!, q.g.packedChannels);
  }

  async decode(q: QwenRequest, x: Float32Array, mode: DecodeMode): Promise<Uint8Array[]> {
    const { g, batch, height, width } = q;
    const unpacked = unpackLatents(x, batch, g.latentChannels, g.latentHeight, g.latentWidth);
    const images: Uint8Array[] = [];
    const per = g.latentChannels * g.latentHeight * g.latentWidth;
    for (let b = 0; b < (mode === 'none' ? 0 : batch); b++) {
      const z = toWanVaeSpace(unpacked.subarray(b * per, (b + 1) * per), this.vae);
      const [frame] = await decodeWanVae(z, 1, g.latentHeight, g.latentWidth, this.vae.zDim, () => this.ctx.runner(this.vaeNeed(height, width)));
      assertFinite(frame!, "the VAE decoder's image");
      images.push(quantizeHWC(denormalize(frame!), 3, height, width));
    }
    return images;
  }

  result(q: QwenRequest, o: DenoiseOutcome<QwenText>, images: Uint8Array[]): QwenImageResult {
    return imageResult<QwenText, [number, number, number]>(q, o, images);
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
