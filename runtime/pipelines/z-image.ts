// The Z-Image family's spec (diffusers ZImagePipeline, text-to-image): the prompt in Qwen3's chat template
// (thinking on: no think block) -> Qwen3's second-to-last hidden state over the prompt's own tokens ->
// FlowMatch Euler over torch.linspace(1, 1/N, N) sigmas (the scheduler's static shift) over
// ZImageTransformer2DModel, whose output the pipeline negates; CFG when guidance_scale > 0 as
// `pos + scale * (pos - neg)` (cond then uncond: Cache-DiT's separate-CFG order) -> latents / scaling_factor +
// shift_factor -> AutoencoderKL -> uint8 pixels. The latents keep diffusers' layout [B, 16, H/8, W/8]; this
// file does the transformer's patchify_and_embed (2x2 patches, channels innermost, padded to 32 tokens).
import path from 'node:path';
import { forwardRunner, runnerOutput, setRunnerInputs, shapeKey } from '../component-runners.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { toUint8HWC } from '../image.ts';
import { loadRgbImage, type RgbImage } from '../image-input.ts';
import { toVaeScale } from '../latents.ts';
import { componentConfig, configNumber, readJson, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { BaseGenerateOptions } from '../pipeline.ts';
import { assertFinite, cfgScaleOf, checkRequest, maxSequenceLengthOf } from '../request-checks.ts';
import { MT19937, torchRandn, torchRandnFrom } from '../rng.ts';
import { eulerSampler, fluxSchedule, loadSchedulerConfig, torchLinspace32, type FlowMatchSchedulerConfig, type Schedule } from '../scheduler.ts';
import type { GenerateResult } from './flux.ts';
import { encodePosterior, fromStartStep, imageToImage, scaleNoise, VAE_ENCODER_WEIGHTS, type ImageToImage } from './image-to-image.ts';
import { checkImageSize, imageResult, vaeLayout } from './image-output.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';

/** ZImagePipeline._encode_prompt: apply_chat_template([{role: user}], add_generation_prompt, enable_thinking=True) */
const TEMPLATE = '<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n';
/** diffusers' SEQ_MULTI_OF: caption and image tokens are padded to a multiple of it */
const SEQ_MULTIPLE = 32;

/** ZImagePipeline: steps 50, 1024 x 1024, guidance_scale 5 (CFG when > 0, negative prompt '' by default), max_sequence_length 512 */
export interface ZImageGenerateOptions extends BaseGenerateOptions {
  guidanceScale?: number;
  /** ZImageImg2ImgPipeline's `image` (a PNG / JPEG path or RGB pixels); the size defaults to the image's, rounded down to a multiple of 16 */
  image?: string | RgbImage;
  /** ZImageImg2ImgPipeline's `strength` in [0, 1] (default 0.6) */
  strength?: number;
}

/** the image result (latents [B, 16, H/8, W/8], diffusers' layout) */
export type ZImageResult = Omit<GenerateResult, 'decoded' | 'vaeTiles' | 'unknownWords' | 'latentsShape'> & { latentsShape: [number, number, number, number] };

interface ZRequest extends ResolvedRequest {
  /** latent size and patch grid */
  lh: number;
  lw: number;
  /** image tokens (patches) and the padded count */
  tokens: number;
  tokensPadded: number;
  maxTokens: number;
  /** image-to-image (ZImageImg2ImgPipeline) */
  img2img: ImageToImage | null;
}

interface ZText extends EncodedText {
  /** caption features padded to `padded` rows by repeating the last [B, padded, D] */
  embeds: Float32Array;
  /** the prompt's tokens, and the padded count */
  tokens: number;
  padded: number;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;

export class ZImageSpec implements PipelineSpec<ZImageGenerateOptions, ZRequest, ZText, Uint8Array[], ZImageResult> {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
  readonly vaeScale: number;
  readonly latentChannels: number;
  readonly scalingFactor: number;
  readonly shiftFactor: number;
  private readonly capDim: number;
  readonly imageToImage = true;

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
    this.scheduler = loadSchedulerConfig(path.join(dir, 'scheduler', 'scheduler_config.json'));
    this.tokenizer = HfTokenizer.fromDir(path.join(dir, 'tokenizer'));
    for (const c of family.dirConfigs) this.configs[c] = componentConfig(dir, c);
    // Qwen3Model: its keys carry no "model." prefix; q/k norms always; the pipeline reads hidden_states[-2]
    this.configs.text_encoder = { ...this.configs.text_encoder, weight_prefix: '', qk_norm: true, output_hidden_state: -2 };
    const vaeFile = path.join(dir, 'vae', 'config.json');
    ({ vaeScale: this.vaeScale, latentChannels: this.latentChannels, scalingFactor: this.scalingFactor, shiftFactor: this.shiftFactor } = vaeLayout(readJson(vaeFile), vaeFile));
    const tfFile = path.join(dir, 'transformer', 'config.json');
    const tf = this.configs.transformer!;
    this.capDim = configNumber(tf, 'cap_feat_dim', tfFile, { int: true, min: 1 });
    const inCh = configNumber(tf, 'in_channels', tfFile, { int: true, min: 1 });
    if (inCh !== this.latentChannels) throw new UserError(`${tfFile}: in_channels ${inCh} differs from the VAE's latent_channels ${this.latentChannels} (${vaeFile})`);
    const teFile = path.join(dir, 'text_encoder', 'config.json');
    const hd = configNumber(this.configs.text_encoder, 'hidden_size', teFile, { int: true, min: 1 });
    if (hd !== this.capDim) throw new UserError(`${tfFile}: cap_feat_dim ${this.capDim} differs from the text encoder's hidden_size ${hd} (${teFile})`);
  }

  /** ZImagePipeline's default size: 1024 x 1024 */
  defaultSize(): { height: number; width: number } {
    return { height: 1024, width: 1024 };
  }

  /** the latent size (prepare_latents: 2 * (size // (vae_scale * 2))) after checking the size */
  geometry(height: number, width: number): { lh: number; lw: number; tokens: number } {
    checkImageSize(height, width, this.vaeScale);
    const lh = height / this.vaeScale;
    const lw = width / this.vaeScale;
    return { lh, lw, tokens: (lh / 2) * (lw / 2) };
  }

  private need(component: Component, key: string, dims: Record<string, number>, want: Record<string, number[]>, extra: Partial<PlanNeed> = {}): PlanNeed {
    return { component, key, dims, want, config: this.configs[component]!, ...extra };
  }

  private textNeed(batch: number, tokens: number): PlanNeed {
    // hidden_states[-2]: the last layer and the final norm never run (their weights stay unread)
    const last = (this.configs.text_encoder!.num_hidden_layers as number) - 1;
    const unread = (n: string): boolean => n === 'norm.weight' || n.startsWith(`layers.${last}.`);
    return this.need('text_encoder', `${batch}x${tokens}`, { batch, textTokens: tokens }, { input_ids: [batch, tokens] }, { textParallel: true, mayLeave: unread });
  }

  private transformerNeedAt(q: ZRequest, padded: number): PlanNeed {
    const want = { hidden_states: [q.batch, q.tokensPadded, 4 * this.latentChannels], encoder_hidden_states: [q.batch, padded, this.capDim] };
    return this.need('transformer', shapeKey([q.batch, q.tokensPadded, padded]), { batch: q.batch, height: q.height, width: q.width, textTokens: padded }, want);
  }

  private vaeNeed(batch: number, height: number, width: number): PlanNeed {
    return this.need('vae', shapeKey([batch, height, width]), { batch, height, width }, { latents: [batch, this.latentChannels, height / this.vaeScale, width / this.vaeScale] });
  }

  /** the VAE encoder of one image (the vae/ checkpoint's encoder half) */
  private encoderNeed(height: number, width: number): PlanNeed {
    // the vae's config: the encoder is the same AutoencoderKL
    return this.need('vae', shapeKey([1, height, width]), { batch: 1, height, width }, { sample: [1, 3, height, width] }, { component: 'vae_encoder', ...VAE_ENCODER_WEIGHTS });
  }

  /** the prompt's ids in the chat template, truncated to max_sequence_length */
  private templateIds(prompt: string, maxTokens: number): number[] {
    return this.tokenizer.encodeTruncated(TEMPLATE.replace('{}', prompt), maxTokens);
  }

  resolve(opts: ZImageGenerateOptions): ZRequest {
    const { steps, batch, seed } = checkRequest(opts, 50);
    // ZImageImg2ImgPipeline: the size of the image (VaeImageProcessor rounds it down to a multiple of 16)
    const image = opts.image !== undefined ? loadRgbImage(opts.image, '--image') : null;
    const m = this.vaeScale * 2;
    const height = opts.height ?? (image ? image.height - (image.height % m) : this.defaultSize().height);
    const width = opts.width ?? (image ? image.width - (image.width % m) : this.defaultSize().width);
    const g = this.geometry(height, width);
    const scale = cfgScaleOf(opts.guidanceScale, 5.0);
    const maxTokens = maxSequenceLengthOf(opts.maxSequenceLength, 512);
    // do_classifier_free_guidance = guidance_scale > 0, the negative prompt '' by default
    const doCfg = scale > 0;
    const img2img = imageToImage(image ?? undefined, opts.strength, 0.6, steps, height, width);
    return {
      steps: img2img ? img2img.fullSteps - img2img.startStep : steps,
      batch,
      seed,
      height,
      width,
      prompt: opts.prompt,
      negativePrompt: doCfg ? (opts.negativePrompt ?? '') : null,
      cfgScale: doCfg ? scale : null,
      latentsShape: [batch, this.latentChannels, g.lh, g.lw],
      latentsFor: `${height}x${width}`,
      lh: g.lh,
      lw: g.lw,
      tokens: g.tokens,
      tokensPadded: roundUp(g.tokens, SEQ_MULTIPLE),
      maxTokens,
      img2img,
    };
  }

  needs(q: ZRequest, decode: DecodeMode): PlanNeed[] {
    if (decode === 'parallel') throw new UserError('--parallel-vae is not supported for ZImagePipeline yet (rank 0 decodes)');
    const out: PlanNeed[] = [];
    for (const p of [q.prompt, ...(q.negativePrompt !== null ? [q.negativePrompt] : [])]) {
      const L = this.templateIds(p, q.maxTokens).length;
      out.push(this.textNeed(q.batch, L), this.transformerNeedAt(q, roundUp(L, SEQ_MULTIPLE)));
    }
    if (decode !== 'none') out.push(this.vaeNeed(q.batch, q.height, q.width));
    if (q.img2img) out.push(this.encoderNeed(q.height, q.width));
    return out;
  }

  encode(q: ZRequest, prompts: string[]): Promise<ZText> {
    return this.encodePrompt(prompts, q.maxTokens);
  }

  /**
   * Qwen3's hidden_states[-2] over each prompt's own tokens (diffusers runs the 512 padded ids and keeps the
   * unmasked rows; causal attention makes those rows the same), padded to a multiple of 32 rows by repeating
   * the last one (patchify_and_embed's caption padding).
   */
  async encodePrompt(prompts: string[], maxTokens = 512): Promise<ZText> {
    const t0 = performance.now();
    const enc = prompts.map((p) => this.templateIds(p, maxTokens));
    const tokenizeMs = performance.now() - t0;
    const L = enc[0]!.length;
    if (enc.some((e) => e.length !== L)) throw new UserError('ZImagePipeline here encodes a batch of one prompt (repeated); prompts of different token lengths are not supported yet');
    const B = prompts.length;
    const ids = new Float32Array(B * L);
    enc.forEach((e, b) => ids.set(e, b * L));
    const te = await this.ctx.executor(this.textNeed(B, L));
    te.setInputs({ input_ids: ids, attention_mask: new Float32Array(B * L).fill(1), position_ids: Float32Array.from({ length: L }, (_, i) => i) });
    await te.forward();
    const h = await te.output('hidden_states');
    const D = this.capDim;
    const T = roundUp(L, SEQ_MULTIPLE);
    const embeds = new Float32Array(B * T * D);
    for (let b = 0; b < B; b++) {
      embeds.set(h.subarray(b * L * D, (b + 1) * L * D), b * T * D);
      const last = h.subarray(((b + 1) * L - 1) * D, (b + 1) * L * D);
      for (let r = L; r < T; r++) embeds.set(last, (b * T + r) * D);
    }
    return { embeds, tokens: L, padded: T, inputIds: enc, tokenizeMs };
  }

  transformerNeed(q: ZRequest, text: ZText): PlanNeed {
    return this.transformerNeedAt(q, text.padded);
  }

  /** latents [B, C, h, w] -> patches [B, N (padded), 2*2*C] with (p_h, p_w, c) innermost, the last patch repeated as padding */
  patchify(q: ZRequest, x: Float32Array): Float32Array {
    const C = this.latentChannels;
    const { lh, lw, tokens: N, tokensPadded: Np, batch: B } = q;
    const w2 = lw / 2;
    const out = new Float32Array(B * Np * 4 * C);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < Np; t++) {
        const tok = Math.min(t, N - 1);
        const y = Math.floor(tok / w2);
        const xx = tok % w2;
        const o = (b * Np + t) * 4 * C;
        for (let dy = 0; dy < 2; dy++)
          for (let dx = 0; dx < 2; dx++)
            for (let c = 0; c < C; c++) out[o + (dy * 2 + dx) * C + c] = x[((b * C + c) * lh + 2 * y + dy) * lw + 2 * xx + dx]!;
      }
    }
    return out;
  }

  /** one transformer forward at step timestep `t` (the model input), unpatchified [B, C, h, w]: the model's output before the pipeline negates it */
  async transformerOnce(q: ZRequest, x: Float32Array, text: ZText, t: number): Promise<Float32Array> {
    const ex = await this.ctx.executor(this.transformerNeed(q, text));
    ex.setInputs(this.transformerInputs(q, x, text, new Float32Array(q.batch).fill(t)));
    await ex.forward();
    return this.unpatchify(q, await ex.output('output'), 1);
  }

  /** the pipeline's noise_pred from the model output: -unpatchify(v) */
  private negUnpatchify(q: ZRequest, v: Float32Array): Float32Array {
    return this.unpatchify(q, v, -1);
  }

  /** the inverse of patchify on the first N tokens, times sign */
  private unpatchify(q: ZRequest, v: Float32Array, sign: 1 | -1): Float32Array {
    const C = this.latentChannels;
    const { lh, lw, tokens: N, tokensPadded: Np, batch: B } = q;
    const w2 = lw / 2;
    const out = new Float32Array(B * C * lh * lw);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < N; t++) {
        const y = Math.floor(t / w2);
        const xx = t % w2;
        const o = (b * Np + t) * 4 * C;
        for (let dy = 0; dy < 2; dy++)
          for (let dx = 0; dx < 2; dx++)
            for (let c = 0; c < C; c++) out[((b * C + c) * lh + 2 * y + dy) * lw + 2 * xx + dx] = sign * v[o + (dy * 2 + dx) * C + c]!;
      }
    return out;
  }

  transformerInputs(q: ZRequest, x: Float32Array, text: ZText, timestep: Float32Array): Record<string, Float32Array> {
    const { tokens: N, tokensPadded: Np, lw } = q;
    const T = text.padded;
    const w2 = lw / 2;
    const xMask = new Float32Array(Np);
    xMask.fill(1, N);
    const capMask = new Float32Array(T);
    capMask.fill(1, text.tokens);
    // create_coordinate_grid: caption (1 + i, 0, 0); image (T + 1, y, x); image padding (0, 0, 0)
    const capIds = new Float32Array(T * 3);
    for (let i = 0; i < T; i++) capIds[i * 3] = 1 + i;
    const imgIds = new Float32Array(Np * 3);
    for (let t = 0; t < N; t++) imgIds.set([T + 1, Math.floor(t / w2), t % w2], t * 3);
    return { hidden_states: this.patchify(q, x), x_pad_mask: xMask, encoder_hidden_states: text.embeds, cap_pad_mask: capMask, timestep, img_rope_ids: imgIds, cap_rope_ids: capIds };
  }

  noise(q: ZRequest): Float32Array | Promise<Float32Array> {
    return q.img2img ? this.noisedImage(q, q.img2img) : torchRandn(q.latentsShape.reduce((a, b) => a * b, 1), q.seed);
  }

  /** ZImageImg2ImgPipeline.prepare_latents: the image's scaled posterior sample, then the noise, from one generator; scale_noise */
  private async noisedImage(q: ZRequest, i: ImageToImage): Promise<Float32Array> {
    const gen = new MT19937(q.seed);
    const z = await encodePosterior(await this.ctx.runner(this.encoderNeed(q.height, q.width)), i.image, gen, this);
    return scaleNoise(z, torchRandnFrom(gen, q.batch * z.length), this.schedule(q).sigmas[0]!);
  }

  /** ZImagePipeline's schedule (torch.linspace sigmas), from image-to-image's first kept step */
  private schedule(q: ZRequest): Schedule {
    const n = q.img2img ? q.img2img.fullSteps : q.steps;
    const s = fluxSchedule(n, q.tokens, this.scheduler, torchLinspace32(1, 1 / n, n));
    return q.img2img ? fromStartStep(s, q.img2img.startStep) : s;
  }

  /** FlowMatch Euler over torch.linspace sigmas; the model input (1000 - t) / 1000; v = -model output, unpatchified */
  sampler(q: ZRequest) {
    const schedule = this.schedule(q);
    const euler = eulerSampler(schedule);
    return {
      ...euler,
      modelTimestep: (i: number) => Math.fround(Math.fround(1000 - schedule.timesteps[i]!) / 1000),
      step: (v: Float32Array, i: number, x: Float32Array) => euler.step(this.negUnpatchify(q, v), i, x),
    };
  }

  /** ZImagePipeline's CFG: pos + scale * (pos - neg), float32 */
  combineCfg(q: ZRequest, cond: Float32Array, uncond: Float32Array): void {
    const s = Math.fround(q.cfgScale!);
    for (let k = 0; k < cond.length; k++) cond[k] = Math.fround(cond[k]! + Math.fround(s * Math.fround(cond[k]! - uncond[k]!)));
  }

  /** latents / scaling_factor + shift_factor -> AutoencoderKL -> raw decoder output [B, 3, H, W] */
  async decodeLatents(q: ZRequest, x: Float32Array): Promise<Float32Array> {
    const r = await this.ctx.runner(this.vaeNeed(q.batch, q.height, q.width));
    setRunnerInputs(r, { latents: toVaeScale(Float32Array.from(x), this.scalingFactor, this.shiftFactor) });
    await forwardRunner(r);
    return runnerOutput(r, 'sample');
  }

  async decode(q: ZRequest, x: Float32Array, mode: DecodeMode): Promise<Uint8Array[]> {
    if (mode === 'none') return [];
    const decoded = await this.decodeLatents(q, x);
    assertFinite(decoded, "the VAE decoder's image");
    return Array.from({ length: q.batch }, (_, b) => toUint8HWC(decoded, 3, q.height, q.width, b));
  }

  result(q: ZRequest, o: DenoiseOutcome<ZText>, images: Uint8Array[]): ZImageResult {
    return imageResult<ZText, [number, number, number, number]>(q, o, images);
  }
}
