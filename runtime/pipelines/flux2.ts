// The FLUX.2-Klein family's spec (diffusers Flux2KleinPipeline, text-to-image): the prompt in Qwen3's chat
// template (thinking off), padded to max_sequence_length -> Qwen3's hidden states 9, 18 and 27 side by side
// over every row, padding included -> FlowMatch Euler over np.linspace(1, 1/N, N) sigmas shifted by FLUX.2's
// empirical mu -> Flux2Transformer2DModel on the packed latents -> CFG (the base model, guidance_scale > 1:
// `neg + scale * (cond - neg)` with the negative prompt "") -> AutoencoderKLFlux2's BatchNorm statistics
// undone, 2x2 unpatchified -> the decoder -> uint8 pixels. The latents keep diffusers' packed layout
// [B, tokens, 4 * latent_channels]; patchify then pack is FLUX.1's packing (runtime/latents.ts).
import path from 'node:path';
import { forwardRunner, runnerOutput, setRunnerInputs, shapeKey } from '../component-runners.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { toUint8HWC } from '../image.ts';
import { ComponentWeights } from '../io/weights.ts';
import { unpackLatents } from '../latents.ts';
import { componentConfig, configNumber, readJson, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { BaseGenerateOptions } from '../pipeline.ts';
import { assertFinite, checkRequest } from '../request-checks.ts';
import { torchRandn } from '../rng.ts';
import { eulerSampler, fluxSchedule, loadSchedulerConfig, type FlowMatchSchedulerConfig } from '../scheduler.ts';
import type { GenerateResult } from './flux.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';

/** Flux2KleinPipeline._get_qwen3_prompt_embeds: apply_chat_template([{role: user}], add_generation_prompt, enable_thinking=False) */
const TEMPLATE = '<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';
/** the pipeline's text_encoder_out_layers default */
export const KLEIN_TEXT_LAYERS = [9, 18, 27];

/** Flux2KleinPipeline: steps 50, 1024 x 1024, guidance_scale 4 (CFG when > 1 unless the model is distilled), max_sequence_length 512 */
export interface Flux2GenerateOptions extends BaseGenerateOptions {
  guidanceScale?: number;
}

export type Flux2Result = Omit<GenerateResult, 'decoded' | 'vaeTiles' | 'unknownWords'>;

interface Flux2Request extends ResolvedRequest {
  /** packed token grid and count */
  h2: number;
  w2: number;
  tokens: number;
  maxTokens: number;
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

export class Flux2KleinSpec implements PipelineSpec<Flux2GenerateOptions, Flux2Request, Flux2Text, Uint8Array[], Flux2Result> {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: FlowMatchSchedulerConfig;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
  readonly vaeScale: number;
  readonly latentChannels: number;
  private readonly textDim: number;
  /** model_index.json is_distilled: guidance_scale is ignored (no CFG) */
  readonly distilled: boolean;
  /** the VAE's BatchNorm over the patchified latents: running mean and sqrt(running_var + eps), float32 [4C] */
  private bn: { mean: Float32Array; std: Float32Array } | null = null;
  private readonly bnEps: number;

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
    this.scheduler = loadSchedulerConfig(path.join(dir, 'scheduler', 'scheduler_config.json'));
    if (!this.scheduler.use_dynamic_shifting) throw new UserError(`${path.join(dir, 'scheduler', 'scheduler_config.json')}: Flux2KleinPipeline passes mu, which needs "use_dynamic_shifting": true`);
    this.tokenizer = HfTokenizer.fromDir(path.join(dir, 'tokenizer'));
    for (const c of family.dirConfigs) this.configs[c] = componentConfig(dir, c);
    const index = readJson(path.join(dir, 'model_index.json'));
    this.distilled = index.is_distilled === true;
    // Qwen3ForCausalLM: keys under "model."; q/k norms always; hidden_states 9, 18, 27 stacked
    this.configs.text_encoder = { ...this.configs.text_encoder, weight_prefix: 'model.', qk_norm: true, output_hidden_states: KLEIN_TEXT_LAYERS };
    const vaeFile = path.join(dir, 'vae', 'config.json');
    const vae = this.configs.vae!;
    const boc = vae.block_out_channels;
    if (!Array.isArray(boc) || boc.length < 1) throw new UserError(`${vaeFile}: field "block_out_channels" must be a non-empty list, got ${JSON.stringify(boc)}`);
    this.vaeScale = 2 ** (boc.length - 1);
    this.latentChannels = configNumber(vae, 'latent_channels', vaeFile, { int: true, min: 1 });
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
    const want = { hidden_states: [q.batch, q.tokens, 4 * this.latentChannels], encoder_hidden_states: [q.batch, q.maxTokens, this.textDim] };
    return this.need('transformer', shapeKey([q.batch, q.tokens, q.maxTokens]), { batch: q.batch, height: q.height, width: q.width, textTokens: q.maxTokens }, want);
  }

  private vaeNeed(batch: number, height: number, width: number): PlanNeed {
    // the decoder's plan leaves the encoder and the BatchNorm statistics (read by the pipeline) unbound
    const mayLeave = (n: string): boolean => n.startsWith('encoder.') || n.startsWith('quant_conv.') || n.startsWith('bn.');
    return this.need('vae', shapeKey([batch, height, width]), { batch, height, width }, { latents: [batch, this.latentChannels, height / this.vaeScale, width / this.vaeScale] }, { mayLeave });
  }

  resolve(opts: Flux2GenerateOptions): Flux2Request {
    const { steps, batch, seed } = checkRequest(opts, 50);
    const height = opts.height ?? this.defaultSize().height;
    const width = opts.width ?? this.defaultSize().width;
    const mult = this.vaeScale * 2;
    for (const [flag, v] of [['height', height], ['width', width]] as const) {
      if (!Number.isInteger(v) || v <= 0 || v % mult !== 0) throw new UserError(`--${flag} must be a positive multiple of ${mult} (the VAE scale ${this.vaeScale} x 2x2 patches), got ${v}`);
    }
    const scale = opts.guidanceScale ?? 4.0;
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new UserError(`--guidance-scale must be a number, got ${opts.guidanceScale}`);
    const maxTokens = opts.maxSequenceLength ?? 512;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new UserError(`--max-sequence-length must be an integer >= 1, got ${opts.maxSequenceLength}`);
    // do_classifier_free_guidance: guidance_scale > 1 and not is_distilled; the negative prompt is always ""
    const doCfg = scale > 1 && !this.distilled;
    if (opts.negativePrompt !== undefined && opts.negativePrompt !== '') throw new UserError('--negative-prompt: Flux2KleinPipeline always uses the empty negative prompt');
    const h2 = height / mult;
    const w2 = width / mult;
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
    };
  }

  needs(q: Flux2Request, decode: DecodeMode): PlanNeed[] {
    if (decode === 'parallel') throw new UserError('--parallel-vae is not supported for Flux2KleinPipeline yet (rank 0 decodes)');
    const out = [this.textNeed(q.batch, q.maxTokens), this.transformerNeed(q)];
    if (decode !== 'none') out.push(this.vaeNeed(q.batch, q.height, q.width));
    return out;
  }

  async encode(q: Flux2Request, prompts: string[]): Promise<Flux2Text> {
    const t0 = performance.now();
    const enc = prompts.map((p) => this.tokenizer.encode(TEMPLATE.replace('{}', p), q.maxTokens));
    const tokenizeMs = performance.now() - t0;
    const B = prompts.length;
    const L = q.maxTokens;
    const ids = new Float32Array(B * L);
    const mask = new Float32Array(B * L);
    enc.forEach((e, b) => {
      ids.set(e.ids, b * L);
      mask.set(e.attentionMask, b * L);
    });
    const te = await this.ctx.executor(this.textNeed(B, L));
    te.setInputs({ input_ids: ids, attention_mask: mask, position_ids: Float32Array.from({ length: L }, (_, i) => i) });
    await te.forward();
    return { embeds: await te.output('hidden_states'), inputIds: enc.map((e) => e.ids), tokenizeMs };
  }

  /** _prepare_text_ids (0, 0, 0, l) and _prepare_latent_ids (0, y, x, 0) */
  transformerInputs(q: Flux2Request, x: Float32Array, text: Flux2Text, timestep: Float32Array): Record<string, Float32Array> {
    const txt = new Float32Array(q.maxTokens * 4);
    for (let l = 0; l < q.maxTokens; l++) txt[l * 4 + 3] = l;
    const img = new Float32Array(q.tokens * 4);
    for (let t = 0; t < q.tokens; t++) img.set([0, Math.floor(t / q.w2), t % q.w2, 0], t * 4);
    return { hidden_states: x, encoder_hidden_states: text.embeds, timestep, img_ids: img, txt_ids: txt };
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
    return eulerSampler(fluxSchedule(q.steps, q.tokens, this.scheduler, undefined, empiricalMu(q.tokens, q.steps)));
  }

  /** neg + scale * (cond - neg), float32 */
  combineCfg(q: Flux2Request, cond: Float32Array, uncond: Float32Array): void {
    const s = Math.fround(q.cfgScale!);
    for (let k = 0; k < cond.length; k++) cond[k] = Math.fround(uncond[k]! + Math.fround(s * Math.fround(cond[k]! - uncond[k]!)));
  }

  /** the VAE's bn.running_mean / running_var, read once */
  private async bnStats(): Promise<{ mean: Float32Array; std: Float32Array }> {
    if (this.bn) return this.bn;
    const w = await ComponentWeights.open(path.join(this.ctx.dir, 'vae'));
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
    const r = await this.ctx.runner(this.vaeNeed(q.batch, q.height, q.width));
    setRunnerInputs(r, { latents: await this.vaeLatents(q, x) });
    await forwardRunner(r);
    const decoded = runnerOutput(r, 'sample');
    assertFinite(decoded, "the VAE decoder's image");
    return Array.from({ length: q.batch }, (_, b) => toUint8HWC(decoded, 3, q.height, q.width, b));
  }

  result(q: Flux2Request, o: DenoiseOutcome<Flux2Text>, images: Uint8Array[]): Flux2Result {
    return {
      image: images[0]!,
      images,
      width: q.width,
      height: q.height,
      latents: o.latents,
      latentsShape: q.latentsShape as [number, number, number],
      steps: q.steps,
      seed: o.seed,
      inputIds: o.pos.inputIds[0]!,
      schedule: (o.sampler as ReturnType<typeof eulerSampler>).schedule,
      timings: o.timings,
      ...(o.cache ? { cache: o.cache } : {}),
    };
  }
}
