// The FLUX.2-Klein family's spec (diffusers Flux2KleinPipeline, text-to-image): the prompt in Qwen3's chat
// template (thinking off), padded to max_sequence_length -> Qwen3's hidden states 9, 18 and 27 side by side
// over every row, padding included -> FlowMatch Euler over np.linspace(1, 1/N, N) sigmas shifted by FLUX.2's
// empirical mu -> Flux2Transformer2DModel on the packed latents -> CFG (the base model, guidance_scale > 1:
// `neg + scale * (cond - neg)` with the negative prompt "") -> AutoencoderKLFlux2's BatchNorm statistics
// undone, 2x2 unpatchified -> the decoder -> uint8 pixels. The latents keep diffusers' packed layout
// [B, tokens, 4 * latent_channels]; patchify then pack is FLUX.1's packing (runtime/latents.ts).
// Editing: each reference image (one or several) is center-cropped to a multiple of 2 x the VAE scale (scaled
// to 1024^2 pixels first when larger), encoded (the posterior's mean), BatchNorm-normalized and packed; its
// tokens follow the latents' in every forward, with position ids (10 + 10 i, y, x, 0); the velocity of the
// latents' own tokens steps them. The output size defaults to the first image's.
import path from 'node:path';
import { combineCfg } from '../denoise.ts';
import { forwardRunner, runnerOutput, setRunnerInputs, shapeKey } from '../component-runners.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { loadRgbImage, resizeLanczos, vaeImageInput, type RgbImage } from '../image-input.ts';
import { packLatents, unpackLatents } from '../latents.ts';
import { configNumber, readJson, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { BaseGenerateOptions } from '../pipeline.ts';
import type { PipelineCacheOptions } from '../pipeline-cache.ts';
import { assertFinite, cfgScaleOf, checkRequest, maxSequenceLengthOf } from '../request-checks.ts';
import { torchRandn } from '../rng.ts';
import { eulerSampler, fluxSchedule, type FlowMatchSchedulerConfig } from '../scheduler.ts';
import type { GenerateResult } from './flux.ts';
import { batchIds, checkImageSize, decodeToImages, imageResult, readFlowMatchDir, vaeLayout } from './image-output.ts';
import { VAE_ENCODER_WEIGHTS } from './image-to-image.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';

/** Flux2KleinPipeline._get_qwen3_prompt_embeds: apply_chat_template([{role: user}], add_generation_prompt, enable_thinking=False) */
const TEMPLATE = '<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';
/** the pipeline's text_encoder_out_layers default */
export const KLEIN_TEXT_LAYERS = [9, 18, 27];

/** Flux2KleinPipeline: steps 50, 1024 x 1024, guidance_scale 4 (CFG when > 1 unless the model is distilled), max_sequence_length 512 */
export interface Flux2GenerateOptions extends BaseGenerateOptions {
  guidanceScale?: number;
  /** reference images to edit from (PNG / JPEG paths or RGB pixels): one, or several (multi-reference editing) */
  image?: string | RgbImage | (string | RgbImage)[];
  /** refused with a clear error: the image-to-image pipelines' strength has no meaning here */
  strength?: number;
}

/** a reference image as the pipeline encodes it: [1, 3, h, w] in [-1, 1] and its packed token grid */
interface ReferenceImage {
  pixels: Float32Array;
  height: number;
  width: number;
  h2: number;
  w2: number;
}

export type Flux2Result = Omit<GenerateResult, 'decoded' | 'vaeTiles' | 'unknownWords'>;

interface Flux2Request extends ResolvedRequest {
  /** packed token grid and count */
  h2: number;
  w2: number;
  tokens: number;
  maxTokens: number;
  /** editing: the reference images, their tokens in all, and (after prepareInputs) their packed latents and ids */
  refs: ReferenceImage[];
  refTokens: number;
  refLatents: Float32Array | null;
  refIds: Float32Array | null;
}

interface Flux2Text extends EncodedText {
  /** [B, maxTokens, 3 * hidden]: every row, the padding's too (the transformer sees them all) */
  embeds: Float32Array;
}

/** FLUX.2's compute_empirical_mu (black-forest-labs/flux2 sampling.py), float64 */
export function empiricalMu(imageSeqLen: number, steps: number): number {
  const [a1, b1] = [8.73809524e-5, 1.89833333];
  const [a2, b2] = [0.00016927, 0.45666666];
  if (imageSeqLen > 4300) return a2 * imageSeqLen + b2;
  const m200 = a2 * imageSeqLen + b2;
  const m10 = a1 * imageSeqLen + b1;
  const a = (m200 - m10) / 190.0;
  const b = m200 - 200.0 * a;
  return a * steps + b;
}

/** [B, N, K] latents and the [R, K] reference tokens -> [B, N + R, K] (the references repeated over the batch) */
function concatTokens(x: Float32Array, ref: Float32Array, batch: number): Float32Array {
  const per = x.length / batch;
  const out = new Float32Array(batch * (per + ref.length));
  for (let b = 0; b < batch; b++) {
    out.set(x.subarray(b * per, (b + 1) * per), b * (per + ref.length));
    out.set(ref, b * (per + ref.length) + per);
  }
  return out;
}

/** PIL's crop((left, top, left + width, top + height)) with left / top = (size - new) // 2 */
function centerCrop(img: RgbImage, width: number, height: number): RgbImage {
  if (width === img.width && height === img.height) return img;
  const left = Math.floor((img.width - width) / 2);
  const top = Math.floor((img.height - height) / 2);
  const pixels = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) pixels.set(img.pixels.subarray(((top + y) * img.width + left) * 3, ((top + y) * img.width + left + width) * 3), y * width * 3);
  return { width, height, pixels };
}

export class Flux2KleinSpec implements PipelineSpec<Flux2GenerateOptions, Flux2Request, Flux2Text, Uint8Array[], Flux2Result> {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>>;
  readonly vaeScale: number;
  readonly latentChannels: number;
  private readonly textDim: number;
  /** model_index.json is_distilled: guidance_scale is ignored (no CFG) */
  readonly distilled: boolean;
  /** reference images (editing), several allowed */
  readonly imageToImage = true;
  readonly multiImage = true;
  /** the VAE's BatchNorm over the patchified latents: running mean and sqrt(running_var + eps), float32 [4C] */
  private bn: { mean: Float32Array; std: Float32Array } | null = null;
  private readonly bnEps: number;

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
    ({ scheduler: this.scheduler, tokenizer: this.tokenizer, configs: this.configs } = readFlowMatchDir(dir, family, { passesMu: true }));
    const index = readJson(path.join(dir, 'model_index.json'));
    this.distilled = index.is_distilled === true;
    // Qwen3ForCausalLM: keys under "model."; q/k norms always; hidden_states 9, 18, 27 stacked
    this.configs.text_encoder = { ...this.configs.text_encoder, weight_prefix: 'model.', qk_norm: true, output_hidden_states: KLEIN_TEXT_LAYERS };
    const vaeFile = path.join(dir, 'vae', 'config.json');
    const vae = this.configs.vae!;
    ({ vaeScale: this.vaeScale, latentChannels: this.latentChannels } = vaeLayout(vae, vaeFile, { scaling: false }));
    this.bnEps = configNumber(vae, 'batch_norm_eps', vaeFile, { fallback: 1e-4 });
    const ps = vae.patch_size;
    if (ps !== undefined && JSON.stringify(ps) !== '[2,2]') throw new UserError(`${vaeFile}: field "patch_size" must be [2, 2] (the pipeline's 2x2 patchify), got ${JSON.stringify(ps)}`);
    // AutoencoderKLFlux2 has no latent scaling: the decoder takes the latents as they are
    this.configs.vae = { ...vae, scaling_factor: 1, shift_factor: null };
    const tfFile = path.join(dir, 'transformer', 'config.json');
    // the transformer's token grid follows the VAE's scale (vae_scale_factor x 2x2 patches)
    const tf = (this.configs.transformer = { ...this.configs.transformer!, vae_scale_factor: this.vaeScale });
    this.textDim = configNumber(tf, 'joint_attention_dim', tfFile, { int: true, min: 1 });
    const inCh = configNumber(tf, 'in_channels', tfFile, { int: true, min: 1 });
    if (inCh !== 4 * this.latentChannels) throw new UserError(`${tfFile}: in_channels ${inCh} is not 4 x the VAE's latent_channels ${this.latentChannels} (${vaeFile})`);
    const teFile = path.join(dir, 'text_encoder', 'config.json');
    const hd = configNumber(this.configs.text_encoder, 'hidden_size', teFile, { int: true, min: 1 });
    const L = configNumber(this.configs.text_encoder, 'num_hidden_layers', teFile, { int: true, min: 1 });
    if (L < Math.max(...KLEIN_TEXT_LAYERS)) throw new UserError(`${teFile}: num_hidden_layers ${L} is fewer than the layers Flux2KleinPipeline stacks (${KLEIN_TEXT_LAYERS.join(', ')})`);
    if (KLEIN_TEXT_LAYERS.length * hd !== this.textDim) throw new UserError(`${tfFile}: joint_attention_dim ${this.textDim} is not ${KLEIN_TEXT_LAYERS.length} x the text encoder's hidden_size ${hd} (${teFile})`);
  }

  /**
   * Cache-DiT's FLUX.2 examples: the single-stream list gets 3 x the residual-diff threshold (its diffs carry the
   * dual blocks' accumulated error), unless the request names its own modifiers
   */
  alignCache(opts: PipelineCacheOptions): PipelineCacheOptions {
    const rdt = opts.cache?.residual_diff_threshold;
    if (opts.modifiers || rdt === undefined) return opts;
    return { ...opts, modifiers: { 'blocks:single_transformer_blocks': { cache_config: { residual_diff_threshold: 3 * rdt } } } };
  }

  defaultSize(): { height: number; width: number } {
    // default_sample_size 128 x vae_scale_factor
    return { height: 128 * this.vaeScale, width: 128 * this.vaeScale };
  }

  private need(component: Component, key: string, dims: Record<string, number>, want: Record<string, number[]>, extra: Partial<PlanNeed> = {}): PlanNeed {
    return { component, key, dims, want, config: this.configs[component]!, ...extra };
  }

  private textNeed(batch: number, tokens: number): PlanNeed {
    // the layers after the last stacked one, the final norm and the LM head never run
    const last = Math.max(...KLEIN_TEXT_LAYERS);
    const unread = (n: string): boolean => n === 'model.norm.weight' || n === 'lm_head.weight' || Number(/^model\.layers\.(\d+)\./.exec(n)?.[1] ?? -1) >= last;
    return this.need('text_encoder', `${batch}x${tokens}`, { batch, textTokens: tokens }, { input_ids: [batch, tokens] }, { textParallel: true, mayLeave: unread });
  }

  transformerNeed(q: Flux2Request): PlanNeed {
    const want = { hidden_states: [q.batch, q.tokens + q.refTokens, 4 * this.latentChannels], encoder_hidden_states: [q.batch, q.maxTokens, this.textDim] };
    return this.need('transformer', shapeKey([q.batch, q.tokens, q.refTokens, q.maxTokens]), { batch: q.batch, height: q.height, width: q.width, textTokens: q.maxTokens, ...(q.refTokens ? { refTokens: q.refTokens } : {}) }, want);
  }

  /** the VAE encoder at one reference image's size (the vae/ checkpoint's encoder half) */
  private encoderNeed(height: number, width: number): PlanNeed {
    return this.need('vae', shapeKey([1, height, width]), { batch: 1, height, width }, { sample: [1, 3, height, width] }, { component: 'vae_encoder', folder: 'vae', mayLeave: (n) => VAE_ENCODER_WEIGHTS.mayLeave(n) || n.startsWith('bn.') });
  }

  /**
   * Flux2KleinPipeline's reference-image preprocessing: check_image_input (sides >= 64, aspect <= 8), PIL Lanczos
   * to 1024^2 pixels when larger, rounded down to a multiple of 2 x the VAE scale by a center crop, to [-1, 1]
   */
  private referenceImage(src: string | RgbImage, what: string): ReferenceImage {
    let img = loadRgbImage(src, what);
    if (img.width < 64 || img.height < 64) throw new UserError(`${what}: ${img.width}x${img.height} is too small; Flux2KleinPipeline needs both sides at least 64 px`);
    if (Math.max(img.width / img.height, img.height / img.width) > 8) throw new UserError(`${what}: ${img.width}x${img.height} has an aspect ratio over 8:1, which Flux2KleinPipeline refuses`);
    const area = 1024 * 1024;
    if (img.width * img.height > area) {
      const scale = Math.sqrt(area / (img.width * img.height));
      img = resizeLanczos(img, Math.floor(img.width * scale), Math.floor(img.height * scale));
    }
    const m = this.vaeScale * 2;
    const width = img.width - (img.width % m);
    const height = img.height - (img.height % m);
    return { pixels: vaeImageInput(centerCrop(img, width, height), height, width), height, width, h2: height / m, w2: width / m };
  }

  private vaeNeed(batch: number, height: number, width: number): PlanNeed {
    // the decoder's plan leaves the encoder and the BatchNorm statistics (read by the pipeline) unbound
    const mayLeave = (n: string): boolean => n.startsWith('encoder.') || n.startsWith('quant_conv.') || n.startsWith('bn.');
    return this.need('vae', shapeKey([batch, height, width]), { batch, height, width }, { latents: [batch, this.latentChannels, height / this.vaeScale, width / this.vaeScale] }, { mayLeave });
  }

  resolve(opts: Flux2GenerateOptions): Flux2Request {
    const { steps, batch, seed } = checkRequest(opts, 50);
    if (opts.strength !== undefined) throw new UserError('--strength: Flux2KleinPipeline edits from reference images without a strength (the latents start from noise)');
    const srcs = opts.image === undefined ? [] : Array.isArray(opts.image) ? opts.image : [opts.image];
    const refs = srcs.map((src, i) => this.referenceImage(src, srcs.length > 1 ? `--image ${i + 1}` : '--image'));
    // the output size defaults to the first reference image's
    const height = opts.height ?? refs[0]?.height ?? this.defaultSize().height;
    const width = opts.width ?? refs[0]?.width ?? this.defaultSize().width;
    checkImageSize(height, width, this.vaeScale);
    const scale = cfgScaleOf(opts.guidanceScale, 4.0);
    const maxTokens = maxSequenceLengthOf(opts.maxSequenceLength, 512);
    // do_classifier_free_guidance: guidance_scale > 1 and not is_distilled; the negative prompt is always ""
    const doCfg = scale > 1 && !this.distilled;
    if (opts.negativePrompt !== undefined && opts.negativePrompt !== '') throw new UserError('--negative-prompt: Flux2KleinPipeline always uses the empty negative prompt');
    const h2 = height / (2 * this.vaeScale);
    const w2 = width / (2 * this.vaeScale);
    return {
      steps,
      batch,
      seed,
      height,
      width,
      prompt: opts.prompt,
      negativePrompt: doCfg ? '' : null,
      cfgScale: doCfg ? scale : null,
      latentsShape: [batch, h2 * w2, 4 * this.latentChannels],
      latentsFor: `${height}x${width}`,
      h2,
      w2,
      tokens: h2 * w2,
      maxTokens,
      refs,
      refTokens: refs.reduce((a, r) => a + r.h2 * r.w2, 0),
      refLatents: null,
      refIds: null,
    };
  }

  needs(q: Flux2Request, decode: DecodeMode): PlanNeed[] {
    if (decode === 'parallel') throw new UserError('--parallel-vae is not supported for Flux2KleinPipeline yet (rank 0 decodes)');
    const out = [this.textNeed(q.batch, q.maxTokens), this.transformerNeed(q), ...q.refs.map((r) => this.encoderNeed(r.height, r.width))];
    if (decode !== 'none') out.push(this.vaeNeed(q.batch, q.height, q.width));
    return out;
  }

  /**
   * prepare_image_latents: each reference image's posterior mean (sample_mode "argmax"), patchified,
   * normalized by the BatchNorm statistics, packed; the images' tokens in order with ids (10 + 10 i, y, x, 0)
   */
  async prepareInputs(q: Flux2Request): Promise<void> {
    if (!q.refs.length) return;
    const { mean, std } = await this.bnStats();
    const C = this.latentChannels;
    const K = 4 * C;
    q.refLatents = new Float32Array(q.refTokens * K);
    q.refIds = new Float32Array(q.refTokens * 4);
    let t0 = 0;
    for (const [i, r] of q.refs.entries()) {
      const enc = await this.ctx.runner(this.encoderNeed(r.height, r.width));
      setRunnerInputs(enc, { sample: r.pixels });
      await forwardRunner(enc);
      const moments = runnerOutput(enc, 'moments');
      const lh = 2 * r.h2;
      const lw = 2 * r.w2;
      const packed = packLatents(moments.subarray(0, C * lh * lw), 1, C, lh, lw);
      assertFinite(packed, `the VAE encoder's latents of reference image ${i + 1}`);
      for (let j = 0; j < packed.length; j++) q.refLatents[t0 * K + j] = Math.fround(Math.fround(packed[j]! - mean[j % K]!) / std[j % K]!);
      for (let t = 0; t < r.h2 * r.w2; t++) q.refIds.set([10 + 10 * i, Math.floor(t / r.w2), t % r.w2, 0], (t0 + t) * 4);
      t0 += r.h2 * r.w2;
    }
  }

  async encode(q: Flux2Request, prompts: string[]): Promise<Flux2Text> {
    const t0 = performance.now();
    const enc = prompts.map((p) => this.tokenizer.encode(TEMPLATE.replace('{}', p), q.maxTokens));
    const tokenizeMs = performance.now() - t0;
    const B = prompts.length;
    const L = q.maxTokens;
    const { ids, mask } = batchIds(enc, L);
    const te = await this.ctx.executor(this.textNeed(B, L));
    te.setInputs({ input_ids: ids, attention_mask: mask, position_ids: Float32Array.from({ length: L }, (_, i) => i) });
    await te.forward();
    return { embeds: await te.output('hidden_states'), inputIds: enc.map((e) => e.ids), tokenizeMs };
  }

  /** _prepare_text_ids (0, 0, 0, l) and _prepare_latent_ids (0, y, x, 0) */
  transformerInputs(q: Flux2Request, x: Float32Array, text: Flux2Text, timestep: Float32Array): Record<string, Float32Array> {
    const txt = new Float32Array(q.maxTokens * 4);
    for (let l = 0; l < q.maxTokens; l++) txt[l * 4 + 3] = l;
    const img = new Float32Array((q.tokens + q.refTokens) * 4);
    for (let t = 0; t < q.tokens; t++) img.set([0, Math.floor(t / q.w2), t % q.w2, 0], t * 4);
    if (!q.refLatents) return { hidden_states: x, encoder_hidden_states: text.embeds, timestep, img_ids: img, txt_ids: txt };
    // editing: every batch item's latents, then the reference tokens
    img.set(q.refIds!, q.tokens * 4);
    return { hidden_states: concatTokens(x, q.refLatents, q.batch), encoder_hidden_states: text.embeds, timestep, img_ids: img, txt_ids: txt };
  }

  /** prepare_latents: randn [B, 4C, h2, w2] from the seed, then _pack_latents to [B, h2 * w2, 4C] */
  noise(q: Flux2Request): Float32Array {
    const K = 4 * this.latentChannels;
    const n = torchRandn(q.batch * K * q.tokens, q.seed);
    const out = new Float32Array(n.length);
    for (let b = 0; b < q.batch; b++) for (let k = 0; k < K; k++) for (let t = 0; t < q.tokens; t++) out[(b * q.tokens + t) * K + k] = n[(b * K + k) * q.tokens + t]!;
    return out;
  }

  /** FlowMatch Euler over np.linspace(1, 1/N, N) with compute_empirical_mu(tokens, N) */
  sampler(q: Flux2Request) {
    const euler = eulerSampler(fluxSchedule(q.steps, q.tokens, this.scheduler, undefined, empiricalMu(q.tokens, q.steps)));
    if (!q.refTokens) return euler;
    // noise_pred[:, :latents.size(1)]: the reference tokens' velocity is dropped
    const K = 4 * this.latentChannels;
    const own = (v: Float32Array): Float32Array => {
      const out = new Float32Array(q.batch * q.tokens * K);
      for (let b = 0; b < q.batch; b++) out.set(v.subarray(b * (q.tokens + q.refTokens) * K, (b * (q.tokens + q.refTokens) + q.tokens) * K), b * q.tokens * K);
      return out;
    };
    return { ...euler, step: (v: Float32Array, i: number, x: Float32Array) => euler.step(own(v), i, x) };
  }

  combineCfg(q: Flux2Request, cond: Float32Array, uncond: Float32Array): void {
    combineCfg(cond, uncond, q.cfgScale!);
  }

  /** the VAE's bn.running_mean / running_var, read once */
  private async bnStats(): Promise<{ mean: Float32Array; std: Float32Array }> {
    if (this.bn) return this.bn;
    const w = await this.ctx.weights('vae');
    const K = 4 * this.latentChannels;
    const read = (name: string): Float32Array => {
      if (!w.has(name)) throw new UserError(`${w.path}: the checkpoint has no ${name} (AutoencoderKLFlux2's BatchNorm statistics)`);
      const t = w.tensor(name);
      if (t.data.length !== K) throw new UserError(`${w.fileOf(name)}: ${name} has ${t.data.length} values, expected ${K} (4 x latent_channels)`);
      return t.data;
    };
    const mean = Float32Array.from(read('bn.running_mean'));
    const v = read('bn.running_var');
    const eps = Math.fround(this.bnEps);
    const std = Float32Array.from(v, (x) => Math.fround(Math.sqrt(Math.fround(x + eps))));
    this.bn = { mean, std };
    return this.bn;
  }

  /** the decoder's input: x * bn_std + bn_mean per packed channel, unpatchified [B, C, H/vae, W/vae] (output_type="latent") */
  async vaeLatents(q: Flux2Request, x: Float32Array): Promise<Float32Array> {
    const { mean, std } = await this.bnStats();
    const K = 4 * this.latentChannels;
    const y = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) y[i] = Math.fround(Math.fround(x[i]! * std[i % K]!) + mean[i % K]!);
    return unpackLatents(y, q.batch, this.latentChannels, 2 * q.h2, 2 * q.w2);
  }

  async decode(q: Flux2Request, x: Float32Array, mode: DecodeMode): Promise<Uint8Array[]> {
    if (mode === 'none') return [];
    return decodeToImages(await this.ctx.runner(this.vaeNeed(q.batch, q.height, q.width)), { latents: await this.vaeLatents(q, x) }, q);
  }

  result(q: Flux2Request, o: DenoiseOutcome<Flux2Text>, images: Uint8Array[]): Flux2Result {
    return imageResult<Flux2Text, [number, number, number]>(q, o, images);
  }
}
