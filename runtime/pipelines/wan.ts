// diffusers WanPipeline (Wan 2.1 text-to-video) on compiled plans: T5 tokenizer -> UMT5 (padding zeroed
// past each prompt's tokens) -> UniPC multistep loop over WanTransformer3DModel with classifier-free
// guidance (cond, then uncond: Cache-DiT's separate-CFG order) -> latents de-normalised with the VAE's
// per-channel mean/std -> AutoencoderKLWan decoded one latent frame at a time (models/autoencoder-kl-wan.ts:
// the causal caches go from one chunk's plan to the next) -> frames [F, H, W, 3] uint8.
import path from 'node:path';
import { assertFinite, cfgScaleOf, checkRequest, maxSequenceLengthOf } from '../request-checks.ts';
import { decodeWanVae, toWanVaeSpace, wanVaeLayout, type WanVaeLayout } from './wan-vae.ts';
import { shapeKey } from '../component-runners.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { quantizeHWC, denormalize } from '../image.ts';
import { videoRopeIds } from '../latents.ts';
import { componentConfig, configNumber, readJson, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import type { PipelineCacheResult } from '../pipeline-cache.ts';
import { combineCfg } from '../denoise.ts';
import { torchRandn } from '../rng.ts';
import { loadUniPCConfig, UniPCScheduler, type UniPCConfig } from '../schedulers/unipc.ts';
import type { BaseGenerateOptions, StageTimings } from '../pipeline.ts';
import type { DecodeMode, DenoiseOutcome, EncodedText, PipelineContext, PipelineSpec, PlanNeed, ResolvedRequest } from './spec.ts';

/**
 * WanPipeline: steps default 50, 480 x 832, 81 frames, CFG scale 5 with the empty negative prompt, latents
 * [batch, z_dim, latent frames, h, w], UMT5 at 512 tokens
 */
export interface VideoGenerateOptions extends BaseGenerateOptions {
  /** CFG scale (WanPipeline guidance_scale; CFG runs when > 1) */
  guidanceScale?: number;
  /** Wan 2.2: the CFG scale of the low-noise expert (transformer_2), default guidance_scale */
  guidanceScale2?: number;
  numFrames?: number;
}

/** a VideoGenerateOptions with the pipeline's defaults, validated */
export interface ResolvedVideoRequest extends ResolvedRequest {
  numFrames: number;
  /** latent frames and pixels */
  grid: { frames: number; h: number; w: number };
  tokens: number;
  guidanceScale: number;
  /** Wan 2.2: transformer_2's CFG scale */
  guidanceScale2: number;
  /** per step: the expert that runs it (0 transformer, 1 transformer_2; Wan 2.1: all 0) */
  experts: (0 | 1)[];
  /** latents [B, C, F', h, w] */
  shape: [number, number, number, number, number];
}

interface WanText extends EncodedText {
  embeds: Float32Array;
}

export interface VideoGenerateResult {
  /** per batch item: frames [F, H, W, 3] uint8 RGB */
  videos: Uint8Array[];
  numFrames: number;
  height: number;
  width: number;
  /** final latents [B, z_dim, F', h, w] (output_type="latent") */
  latents: Float32Array;
  latentsShape: [number, number, number, number, number];
  steps: number;
  seed: number | null;
  inputIds: number[];
  timesteps: Int32Array;
  sigmas: Float32Array;
  timings: StageTimings;
  cache?: PipelineCacheResult;
}

/** WanPipeline's prompt_clean without ftfy: html.unescape twice, whitespace runs to one space, strip */
export function promptClean(text: string): string {
  return unescapeHtml(unescapeHtml(text)).replace(/\s+/g, ' ').trim();
}

const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

/** the numeric and the common named character references (Python's html.unescape for those) */
function unescapeHtml(s: string): string {
  return s.replace(/&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);/g, (m, body: string) => {
    if (body[0] === '#') {
      const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    }
    return NAMED[body] ?? m;
  });
}

export class WanSpec implements PipelineSpec<VideoGenerateOptions, ResolvedVideoRequest, WanText, Uint8Array[], VideoGenerateResult> {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: UniPCConfig;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
  private readonly vae: WanVaeLayout;
  private readonly patch: [number, number, number];
  private readonly textDim: number;
  /** Wan 2.2 A14B: model_index.json boundary_ratio (transformer runs t >= ratio x num_train_timesteps, transformer_2 the rest) */
  readonly boundaryRatio: number | null = null;
  /** Wan 2.2: transformer_2/config.json */
  private readonly config2: Record<string, unknown> | null = null;

  constructor(
    private readonly ctx: PipelineContext,
    readonly family: PipelineFamily,
  ) {
    const dir = ctx.dir;
    this.scheduler = loadUniPCConfig(path.join(dir, 'scheduler', 'scheduler_config.json'));
    for (const c of family.dirConfigs) this.configs[c] = componentConfig(dir, c);
    this.tokenizer = HfTokenizer.fromDir(path.join(dir, 'tokenizer'));
    const vaeFile = path.join(dir, 'vae', 'config.json');
    this.vae = wanVaeLayout(this.configs.vae!, vaeFile);
    const zDim = this.vae.zDim;
    const tfFile = path.join(dir, 'transformer', 'config.json');
    const tf = this.configs.transformer!;
    const ps = tf.patch_size;
    if (!Array.isArray(ps) || ps.length !== 3 || !ps.every((x) => Number.isInteger(x) && x > 0)) {
      throw new UserError(`${tfFile}: field "patch_size" must be [t, h, w] positive integers, got ${JSON.stringify(ps)}`);
    }
    this.patch = ps as [number, number, number];
    const inCh = configNumber(tf, 'in_channels', tfFile, { int: true, min: 1 });
    if (inCh !== zDim) throw new UserError(`${tfFile}: in_channels ${inCh} differs from the VAE's z_dim ${zDim} (${vaeFile})`);
    this.textDim = configNumber(tf, 'text_dim', tfFile, { int: true, min: 1 });
    const teD = configNumber(this.configs.text_encoder!, 'd_model', path.join(dir, 'text_encoder', 'config.json'), { int: true, min: 1 });
    if (teD !== this.textDim) throw new UserError(`${tfFile}: text_dim ${this.textDim} differs from the text encoder's d_model ${teD}`);
    // Wan 2.2 A14B: a second expert and the boundary between them (WanPipeline's register_to_config fields)
    const idxFile = path.join(dir, 'model_index.json');
    const idx = readJson(idxFile);
    const br = idx.boundary_ratio;
    if (idx.expand_timesteps === true) throw new UserError(`${idxFile}: expand_timesteps=true (Wan 2.2 TI2V's per-token timesteps) is not supported yet`);
    if (idx.transformer_2 !== undefined && idx.transformer_2 !== null) {
      if (typeof br !== 'number' || !(br > 0 && br < 1)) throw new UserError(`${idxFile}: a transformer_2 needs "boundary_ratio" in (0, 1) (where the experts switch), got ${JSON.stringify(br)}`);
      const f2 = path.join(dir, 'transformer_2', 'config.json');
      const c2 = componentConfig(dir, 'transformer_2');
      for (const k of ['patch_size', 'in_channels', 'out_channels', 'text_dim'] as const) {
        if (JSON.stringify(c2[k]) !== JSON.stringify(tf[k])) throw new UserError(`${f2}: field "${k}" ${JSON.stringify(c2[k])} differs from transformer's ${JSON.stringify(tf[k])} (${tfFile}); the two experts take the same latents and text`);
      }
      this.config2 = c2;
      this.boundaryRatio = br;
    } else if (br !== undefined && br !== null) {
      throw new UserError(`${idxFile}: "boundary_ratio" ${JSON.stringify(br)} without a transformer_2 component`);
    }
  }

  /** latent channels (the VAE's z_dim) */
  get latentChannels(): number {
    return this.vae.zDim;
  }

  /** WanPipeline's defaults: 480 x 832, 81 frames */
  defaultSize(): { height: number; width: number; numFrames: number } {
    return { height: 480, width: 832, numFrames: 81 };
  }

  /** latent grid of a video: frames (F - 1) / 4 + 1, pixels / 8; refuses what WanPipeline's check_inputs refuses */
  geometry(height: number, width: number, numFrames: number): { frames: number; h: number; w: number } {
    const mult = this.vae.scaleSpatial * this.patch[1];
    for (const [flag, v] of [['height', height], ['width', width]] as const) {
      if (!Number.isInteger(v) || v <= 0 || v % mult !== 0) throw new UserError(`--${flag} must be a positive multiple of ${mult} (the VAE scale ${this.vae.scaleSpatial} x patch ${this.patch[1]}), got ${v}`);
    }
    const ft = this.vae.scaleTemporal;
    if (!Number.isInteger(numFrames) || numFrames < 1 || (numFrames - 1) % ft !== 0) {
      const lo = Math.max(1, Math.floor((numFrames - 1) / ft) * ft + 1);
      throw new UserError(`--num-frames must be ${ft}k+1 (1, ${ft + 1}, ${2 * ft + 1}, ..., the VAE compresses time ${ft}x after the first frame), got ${numFrames}; e.g. ${lo} or ${lo + ft}`);
    }
    return { frames: (numFrames - 1) / ft + 1, h: height / this.vae.scaleSpatial, w: width / this.vae.scaleSpatial };
  }

  private need(component: Component, key: string, dims: Record<string, number>, want: Record<string, number[]>, extra: Partial<PlanNeed> = {}): PlanNeed {
    const cfg = this.configs[component];
    return { component, key, dims, want, ...(cfg ? { config: cfg } : {}), ...extra };
  }

  private textNeed(batch: number, tokens: number): PlanNeed {
    return this.need('text_encoder', `${batch}x${tokens}`, { batch, textTokens: tokens }, { input_ids: [batch, tokens] }, { textParallel: true });
  }

  /** the transformer's need at these sizes (expert 1: Wan 2.2's transformer_2, its own config and checkpoint folder) */
  transformerNeedAt(batch: number, height: number, width: number, numFrames: number, tokens: number, expert: 0 | 1 = 0): PlanNeed {
    const g = this.geometry(height, width, numFrames);
    const want = { hidden_states: [batch, this.vae.zDim, g.frames, g.h, g.w], encoder_hidden_states: [batch, tokens, this.textDim] };
    const key = shapeKey([batch, g.frames, g.h, g.w, tokens]);
    const dims = { batch, frames: numFrames, height, width, textTokens: tokens };
    if (expert === 0) return this.need('transformer', key, dims, want);
    return { component: 'transformer', key: `transformer_2:${key}`, dims, want, config: this.config2!, folder: 'transformer_2' };
  }

  /** the VAE plan of chunk 1 (the first latent frame) or 2 (every later one) */
  private vaeNeed(height: number, width: number, chunk: 1 | 2): PlanNeed {
    const s = this.vae.scaleSpatial;
    return this.need('vae', `${height}x${width}-${chunk}`, { batch: 1, height, width, chunk }, { latents: [1, this.vae.zDim, height / s, width / s] }, {
      also: (p) => (p as { dims?: Record<string, number> }).dims?.chunk === chunk,
      // the first chunk skips the temporal upsampling convs: its plan leaves their weights
      ...(chunk === 1 ? { mayLeave: (n: string) => n.includes('.upsamplers.0.time_conv.') } : {}),
    });
  }

  /** A request with the pipeline's defaults filled in, validated before any work (errors name the flag). */
  resolve(opts: VideoGenerateOptions): ResolvedVideoRequest {
    const def = this.defaultSize();
    const { steps, batch, seed } = checkRequest(opts, 50);
    const height = opts.height ?? def.height;
    const width = opts.width ?? def.width;
    const numFrames = opts.numFrames ?? def.numFrames;
    const g = this.geometry(height, width, numFrames);
    const tokens = maxSequenceLengthOf(opts.maxSequenceLength, 512);
    const guidanceScale = cfgScaleOf(opts.guidanceScale, 5.0);
    const shape: [number, number, number, number, number] = [batch, this.vae.zDim, g.frames, g.h, g.w];
    // WanPipeline.do_classifier_free_guidance: guidance_scale > 1 (guidance_scale_2 only sets the low-noise stage's scale)
    const doCfg = guidanceScale > 1;
    if (opts.guidanceScale2 !== undefined && this.boundaryRatio === null) throw new UserError('--guidance-scale-2 is for Wan 2.2 directories (a transformer_2 and a boundary_ratio); this one has one transformer');
    const guidanceScale2 = opts.guidanceScale2 ?? guidanceScale;
    if (typeof guidanceScale2 !== 'number' || !Number.isFinite(guidanceScale2)) throw new UserError(`--guidance-scale-2 must be a number, got ${opts.guidanceScale2}`);
    // the expert of each step: t >= boundary_ratio x num_train_timesteps -> transformer, else transformer_2
    const sched = new UniPCScheduler(this.scheduler);
    sched.setTimesteps(steps);
    const boundary = this.boundaryRatio === null ? null : this.boundaryRatio * this.scheduler.num_train_timesteps;
    const experts = Array.from(sched.timesteps, (t): 0 | 1 => (boundary === null || t >= boundary ? 0 : 1));
    return {
      steps,
      height,
      width,
      numFrames,
      grid: g,
      tokens,
      batch,
      seed,
      prompt: opts.prompt,
      negativePrompt: doCfg ? (opts.negativePrompt ?? '') : null,
      cfgScale: doCfg ? guidanceScale : null,
      guidanceScale,
      guidanceScale2,
      experts,
      shape,
      latentsShape: shape,
      latentsFor: `${numFrames} frames of ${height}x${width}`,
    };
  }

  needs(q: ResolvedVideoRequest, decode: DecodeMode): PlanNeed[] {
    if (decode === 'parallel') throw new UserError('--parallel-vae is not supported for WanPipeline yet (rank 0 decodes)');
    const out = [this.textNeed(q.batch, q.tokens), ...[...new Set(q.experts)].map((e) => this.transformerNeedAt(q.batch, q.height, q.width, q.numFrames, q.tokens, e))];
    if (decode !== 'none') out.push(this.vaeNeed(q.height, q.width, 1));
    if (decode !== 'none' && q.grid.frames > 1) out.push(this.vaeNeed(q.height, q.width, 2));
    return out;
  }

  encode(q: ResolvedVideoRequest, prompts: string[]): Promise<WanText> {
    return this.encodePrompt(prompts, q.tokens);
  }

  /** UMT5 over padded ids -> prompt_embeds [B, T, D] zeroed past each prompt's tokens (WanPipeline) */
  async encodePrompt(prompts: string[], tokens: number): Promise<WanText> {
    const B = prompts.length;
    const t0 = performance.now();
    const enc = prompts.map((p) => this.tokenizer.encode(promptClean(p), tokens));
    const tokenizeMs = performance.now() - t0;
    const ids = new Float32Array(B * tokens);
    const mask = new Float32Array(B * tokens);
    enc.forEach((e, b) => {
      ids.set(e.ids, b * tokens);
      mask.set(e.attentionMask, b * tokens);
    });
    const te = await this.ctx.executor(this.textNeed(B, tokens));
    te.setInputs({ input_ids: ids, attention_mask: mask });
    await te.forward();
    const embeds = await te.output('last_hidden_state');
    const D = embeds.length / (B * tokens);
    enc.forEach((e, b) => {
      const n = e.attentionMask.reduce((a, x) => a + x, 0);
      embeds.fill(0, (b * tokens + n) * D, (b + 1) * tokens * D);
    });
    return { embeds, inputIds: enc.map((e) => e.ids), tokenizeMs };
  }

  transformerNeed(q: ResolvedVideoRequest, _text: WanText, step: number): PlanNeed {
    return this.transformerNeedAt(q.batch, q.height, q.width, q.numFrames, q.tokens, q.experts[step]!);
  }

  transformerInputs(q: ResolvedVideoRequest, x: Float32Array, text: WanText, timestep: Float32Array): Record<string, Float32Array> {
    return this.inputsAt(q.grid, x, text.embeds, timestep);
  }

  private inputsAt(g: { frames: number; h: number; w: number }, x: Float32Array, embeds: Float32Array, timestep: Float32Array): Record<string, Float32Array> {
    const [pt, ph, pw] = this.patch;
    return { hidden_states: x, timestep, encoder_hidden_states: embeds, rope_ids: videoRopeIds(g.frames / pt, g.h / ph, g.w / pw) };
  }

  /** one transformer forward at these dims (plan and weights on first use): velocity [B, C, F', h, w] */
  async transformerOnce(i: { hiddenStates: Float32Array; encoderHiddenStates: Float32Array; timestep: Float32Array; batch: number; height: number; width: number; numFrames: number; textTokens: number }): Promise<Float32Array> {
    const ex = await this.ctx.executor(this.transformerNeedAt(i.batch, i.height, i.width, i.numFrames, i.textTokens));
    ex.setInputs(this.inputsAt(this.geometry(i.height, i.width, i.numFrames), i.hiddenStates, i.encoderHiddenStates, i.timestep));
    await ex.forward();
    return ex.output('output');
  }

  /** the seeded initial noise [B, z, F', h, w] (torch.randn-compatible) */
  noise(q: ResolvedVideoRequest): Float32Array {
    return torchRandn(q.batch * this.vae.zDim * q.grid.frames * q.grid.h * q.grid.w, q.seed);
  }

  sampler(q: ResolvedVideoRequest): UniPCScheduler & { modelTimestep(i: number): number } {
    const sched = new UniPCScheduler(this.scheduler);
    sched.setTimesteps(q.steps);
    return Object.assign(sched, { modelTimestep: (i: number) => sched.timestepInput(i) });
  }

  combineCfg(q: ResolvedVideoRequest, cond: Float32Array, uncond: Float32Array, step: number): void {
    combineCfg(cond, uncond, q.experts[step] === 1 ? q.guidanceScale2 : q.guidanceScale);
  }

  /**
   * AutoencoderKLWan.decode of one video's VAE-space latents [z, F', h, w] -> frames [F, 3, H, W] in the
   * decoder's range, clamped to [-1, 1]: latent frame 0 through the chunk-1 plan, each later one through the
   * chunk-2 plan, every causal cache carried from one chunk to the next (zeros before the first).
   */
  async decodeVideo(z: Float32Array, frames: number, height: number, width: number): Promise<Float32Array[]> {
    const s = this.vae.scaleSpatial;
    return decodeWanVae(z, frames, height / s, width / s, this.vae.zDim, (chunk) => this.ctx.runner(this.vaeNeed(height, width, chunk)));
  }

  async decode(q: ResolvedVideoRequest, x: Float32Array, mode: DecodeMode): Promise<Uint8Array[]> {
    const { grid: g, height, width, numFrames } = q;
    const videos: Uint8Array[] = [];
    const per = this.vae.zDim * g.frames * g.h * g.w;
    for (let b = 0; b < (mode === 'none' ? 0 : q.batch); b++) {
      const z = toWanVaeSpace(x.subarray(b * per, (b + 1) * per), this.vae);
      const chunks = await this.decodeVideo(z, g.frames, height, width);
      chunks.forEach((ch, k) => assertFinite(ch, `the VAE decoder's frames of latent frame ${k}`));
      const frameSize = 3 * height * width;
      const video = new Uint8Array(numFrames * height * width * 3);
      let t = 0;
      for (const ch of chunks) {
        for (let k = 0; k + frameSize <= ch.length; k += frameSize) video.set(quantizeHWC(denormalize(ch.subarray(k, k + frameSize)), 3, height, width), t++ * frameSize);
      }
      if (t !== numFrames) throw new Error(`the VAE decoded ${t} frames, expected ${numFrames}`);
      videos.push(video);
    }
    return videos;
  }

  result(q: ResolvedVideoRequest, o: DenoiseOutcome<WanText>, videos: Uint8Array[]): VideoGenerateResult {
    const s = o.sampler as unknown as UniPCScheduler;
    return {
      videos,
      numFrames: q.numFrames,
      height: q.height,
      width: q.width,
      latents: o.latents,
      latentsShape: q.shape,
      steps: q.steps,
      seed: o.seed,
      inputIds: o.pos.inputIds[0]!,
      timesteps: s.timesteps,
      sigmas: s.sigmas,
      timings: o.timings,
      ...(o.cache ? { cache: o.cache } : {}),
    };
  }
}
