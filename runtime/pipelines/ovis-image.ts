// The Ovis-Image family's spec (diffusers OvisImagePipeline, text-to-image): the system prompt and the prompt in
// Qwen3's chat template (thinking off), padded to max_sequence_length + 28 -> Qwen3's last hidden state, zero at
// the padding, its first 28 rows (the template's prefix) dropped -> FlowMatch Euler over np.linspace(1, 1/N, N)
// sigmas with calculate_shift's mu over OvisImageTransformer2DModel on FLUX-packed latents -> CFG when
// guidance_scale > 1 (`neg + scale * (cond - neg)`, the negative prompt "" by default) -> FLUX.1's AutoencoderKL
// -> uint8 pixels. The latents keep diffusers' packed layout [B, tokens, 4 * latent_channels].
import path from 'node:path';
import { shapeKey } from '../component-runners.ts';
import { combineCfg } from '../denoise.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { imageIds, latentGeometry, latentsToVaeSpace, packLatents, type LatentGeometry } from '../latents.ts';
import { configNumber, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { BaseGenerateOptions } from '../pipeline.ts';
import { cfgScaleOf, checkRequest, maxSequenceLengthOf } from '../request-checks.ts';
import { torchRandn } from '../rng.ts';
import { eulerSampler, fluxSchedule, type FlowMatchSchedulerConfig } from '../scheduler.ts';
import type { Flux2Result } from './flux2.ts';
import { batchIds, checkImageSize, decodeToImages, imageResult, readFlowMatchDir, vaeLayout } from './image-output.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';

/** OvisImagePipeline.system_prompt, put before the user's prompt */
const SYSTEM_PROMPT = 'Describe the image by detailing the color, quantity, text, shape, size, texture, spatial relationships of the objects and background: ';
/** apply_chat_template([{role: user, content: system + prompt}], add_generation_prompt, enable_thinking=False) */
const TEMPLATE = '<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';
/** OvisImagePipeline.user_prompt_begin_id: the template's rows the embeddings drop */
const PROMPT_BEGIN = 28;

/** OvisImagePipeline: steps 50, 1024 x 1024, guidance_scale 5 (CFG when > 1), max_sequence_length 256 */
export interface OvisImageGenerateOptions extends BaseGenerateOptions {
  guidanceScale?: number;
}

interface OvisRequest extends ResolvedRequest {
  g: LatentGeometry;
  maxTokens: number;
}

interface OvisText extends EncodedText {
  /** [B, maxTokens, hidden] */
  embeds: Float32Array;
}

export class OvisImageSpec implements PipelineSpec<OvisImageGenerateOptions, OvisRequest, OvisText, Uint8Array[], Flux2Result> {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>>;
  readonly vaeScale: number;
  readonly latentChannels: number;
  private readonly textDim: number;
  private readonly scalingFactor: number;
  private readonly shiftFactor: number;

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
    ({ scheduler: this.scheduler, tokenizer: this.tokenizer, configs: this.configs } = readFlowMatchDir(dir, family, { passesMu: true }));
    // Qwen3Model: no "model." prefix; q/k norms; the last hidden state (after the final norm)
    this.configs.text_encoder = { ...this.configs.text_encoder, weight_prefix: '', qk_norm: true, output_hidden_state: -1 };
    const vaeFile = path.join(dir, 'vae', 'config.json');
    ({ vaeScale: this.vaeScale, latentChannels: this.latentChannels, scalingFactor: this.scalingFactor, shiftFactor: this.shiftFactor } = vaeLayout(this.configs.vae!, vaeFile));
    const tfFile = path.join(dir, 'transformer', 'config.json');
    // the token grid follows the VAE's scale; out_channels null means in_channels
    const tf = (this.configs.transformer = { ...this.configs.transformer!, vae_scale_factor: this.vaeScale, mlp_act: 'swiglu', guidance_embeds: false });
    this.textDim = configNumber(tf, 'joint_attention_dim', tfFile, { int: true, min: 1 });
    const inCh = configNumber(tf, 'in_channels', tfFile, { int: true, min: 1 });
    if (inCh !== 4 * this.latentChannels) throw new UserError(`${tfFile}: in_channels ${inCh} is not 4 x the VAE's latent_channels ${this.latentChannels} (${vaeFile})`);
    const teFile = path.join(dir, 'text_encoder', 'config.json');
    const hd = configNumber(this.configs.text_encoder, 'hidden_size', teFile, { int: true, min: 1 });
    if (hd !== this.textDim) throw new UserError(`${tfFile}: joint_attention_dim ${this.textDim} differs from the text encoder's hidden_size ${hd} (${teFile})`);
  }

  defaultSize(): { height: number; width: number } {
    return { height: 128 * this.vaeScale, width: 128 * this.vaeScale };
  }

  private need(component: Component, key: string, dims: Record<string, number>, want: Record<string, number[]>, extra: Partial<PlanNeed> = {}): PlanNeed {
    return { component, key, dims, want, config: this.configs[component]!, ...extra };
  }

  private textNeed(batch: number, tokens: number): PlanNeed {
    return this.need('text_encoder', `${batch}x${tokens}`, { batch, textTokens: tokens }, { input_ids: [batch, tokens] }, { textParallel: true });
  }

  transformerNeed(q: OvisRequest): PlanNeed {
    const want = { hidden_states: [q.batch, q.g.tokens, q.g.packedChannels], encoder_hidden_states: [q.batch, q.maxTokens, this.textDim] };
    return this.need('transformer', shapeKey([q.batch, q.g.tokens, q.maxTokens]), { batch: q.batch, height: q.height, width: q.width, textTokens: q.maxTokens }, want);
  }

  private vaeNeed(batch: number, height: number, width: number): PlanNeed {
    const mayLeave = (n: string): boolean => n.startsWith('encoder.') || n.startsWith('quant_conv.');
    return this.need('vae', shapeKey([batch, height, width]), { batch, height, width }, { latents: [batch, this.latentChannels, height / this.vaeScale, width / this.vaeScale] }, { mayLeave });
  }

  resolve(opts: OvisImageGenerateOptions): OvisRequest {
    const { steps, batch, seed } = checkRequest(opts, 50);
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    checkImageSize(height, width, this.vaeScale);
    const scale = cfgScaleOf(opts.guidanceScale, 5.0);
    const maxTokens = maxSequenceLengthOf(opts.maxSequenceLength, 256);
    const doCfg = scale > 1;
    const g = latentGeometry(height, width, this.vaeScale, this.latentChannels);
    return {
      steps,
      batch,
      seed,
      height,
      width,
      prompt: opts.prompt,
      negativePrompt: doCfg ? (opts.negativePrompt ?? '') : null,
      cfgScale: doCfg ? scale : null,
      latentsShape: [batch, g.tokens, g.packedChannels],
      latentsFor: `${height}x${width}`,
      g,
      maxTokens,
    };
  }

  needs(q: OvisRequest, decode: DecodeMode): PlanNeed[] {
    if (decode === 'parallel') throw new UserError('--parallel-vae is not supported for OvisImagePipeline yet (rank 0 decodes)');
    const out = [this.textNeed(q.batch, q.maxTokens + PROMPT_BEGIN), this.transformerNeed(q)];
    if (decode !== 'none') out.push(this.vaeNeed(q.batch, q.height, q.width));
    return out;
  }

  /** _get_ovis_prompt_embeds: last_hidden_state * attention_mask, without the first 28 rows */
  async encode(q: OvisRequest, prompts: string[]): Promise<OvisText> {
    const t0 = performance.now();
    const L = q.maxTokens + PROMPT_BEGIN;
    const enc = prompts.map((p) => this.tokenizer.encode(TEMPLATE.replace('{}', SYSTEM_PROMPT + p), L));
    const tokenizeMs = performance.now() - t0;
    const B = prompts.length;
    const { ids, mask } = batchIds(enc, L);
    const te = await this.ctx.executor(this.textNeed(B, L));
    te.setInputs({ input_ids: ids, attention_mask: mask, position_ids: Float32Array.from({ length: L }, (_, i) => i) });
    await te.forward();
    const h = await te.output('hidden_states');
    const D = this.textDim;
    const embeds = new Float32Array(B * q.maxTokens * D);
    for (let b = 0; b < B; b++)
      for (let r = 0; r < q.maxTokens; r++) {
        const src = b * L + PROMPT_BEGIN + r;
        if (mask[src]) embeds.set(h.subarray(src * D, (src + 1) * D), (b * q.maxTokens + r) * D);
      }
    return { embeds, inputIds: enc.map((e) => e.ids), tokenizeMs };
  }

  /** text ids (0, l, l); latent ids (0, y, x) as FluxPipeline's */
  transformerInputs(q: OvisRequest, x: Float32Array, text: OvisText, timestep: Float32Array): Record<string, Float32Array> {
    const txt = new Float32Array(q.maxTokens * 3);
    for (let l = 0; l < q.maxTokens; l++) txt.set([0, l, l], l * 3);
    return { hidden_states: x, encoder_hidden_states: text.embeds, timestep, img_ids: imageIds(q.g.latentHeight / 2, q.g.latentWidth / 2), txt_ids: txt };
  }

  /** prepare_latents: randn [B, C, h, w] from the seed, FLUX-packed */
  noise(q: OvisRequest): Float32Array {
    const { latentChannels: C, latentHeight: H, latentWidth: W } = q.g;
    return packLatents(torchRandn(q.batch * C * H * W, q.seed), q.batch, C, H, W);
  }

  sampler(q: OvisRequest) {
    return eulerSampler(fluxSchedule(q.steps, q.g.tokens, this.scheduler));
  }

  combineCfg(q: OvisRequest, cond: Float32Array, uncond: Float32Array): void {
    combineCfg(cond, uncond, q.cfgScale!);
  }

  async decode(q: OvisRequest, x: Float32Array, mode: DecodeMode): Promise<Uint8Array[]> {
    if (mode === 'none') return [];
    const latents = latentsToVaeSpace(x, q.batch, this.latentChannels, q.g.latentHeight, q.g.latentWidth, this.scalingFactor, this.shiftFactor);
    return decodeToImages(await this.ctx.runner(this.vaeNeed(q.batch, q.height, q.width)), { latents }, q);
  }

  result(q: OvisRequest, o: DenoiseOutcome<OvisText>, images: Uint8Array[]): Flux2Result {
    return imageResult<OvisText, [number, number, number]>(q, o, images);
  }
}
