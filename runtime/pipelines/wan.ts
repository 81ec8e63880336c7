// diffusers WanPipeline (Wan 2.1 text-to-video) on compiled plans: T5 tokenizer -> UMT5 (padding zeroed
// past each prompt's tokens) -> UniPC multistep loop over WanTransformer3DModel with classifier-free
// guidance (cond, then uncond: Cache-DiT's separate-CFG order) -> latents de-normalised with the VAE's
// per-channel mean/std -> AutoencoderKLWan decoded one latent frame at a time (models/autoencoder-kl-wan.ts:
// the causal caches go from one chunk's plan to the next) -> frames [F, H, W, 3] uint8.
import path from 'node:path';
import { assertFinite, checkLatents, checkRequest } from '../request-checks.ts';
import { decodeWanVae, toWanVaeSpace, wanVaeLayout, type WanVaeLayout } from './wan-vae.ts';
import { ComponentRunners, forwardRunner, localExecutor, resolvePlan, SerialQueue, runnerOutput, setRunnerInputs, shapeKey, type CachedForward, type ComponentExecutor, type Runner } from '../component-runners.ts';
import { rankTransformer, type RankOption, type RankPrep } from './rank-option.ts';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { quantizeHWC, denormalize } from '../image.ts';
import { videoRopeIds } from '../latents.ts';
import { componentConfig, configNumber, UserError, type PipelineFamily } from '../model-dir.ts';
import { loadNative } from '../native.ts';
import type { Component, Plan } from '../plan.ts';
import type { PipelineCacheResult } from '../pipeline-cache.ts';
import { combineCfg } from '../denoise.ts';
import { torchRandn } from '../rng.ts';
import { loadUniPCConfig, UniPCScheduler, type UniPCConfig } from '../schedulers/unipc.ts';
import type { BaseGenerateOptions, PipelineOptions, StageTimings } from '../pipeline.ts';

/**
 * WanPipeline: steps default 50, 480 x 832, 81 frames, CFG scale 5 with the empty negative prompt, latents
 * [batch, z_dim, latent frames, h, w], UMT5 at 512 tokens
 */
export interface VideoGenerateOptions extends BaseGenerateOptions {
  /** CFG scale (WanPipeline guidance_scale; CFG runs when > 1) */
  guidanceScale?: number;
  numFrames?: number;
  /** decode the latents to frames (default true; the ranks of a multi-rank run other than 0 skip it) */
  decode?: boolean;
}

/** WanPipeline options: where plans come from; on a rank of a multi-rank run, its transformer plan */
export interface WanPipelineOptions extends Omit<PipelineOptions, 'rank'> {
  generatedDir: string;
  /** a rank: the transformer runs this rank's plans of a parallel lowering, by text tokens (text encoder and VAE stay local) */
  rank?: RankOption;
}

/** a VideoGenerateOptions with the pipeline's defaults, validated */
export interface ResolvedVideoRequest {
  steps: number;
  height: number;
  width: number;
  numFrames: number;
  /** latent frames and pixels */
  grid: { frames: number; h: number; w: number };
  tokens: number;
  batch: number;
  guidanceScale: number;
  doCfg: boolean;
  seed: number;
  /** latents [B, C, F', h, w] */
  shape: [number, number, number, number, number];
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

export class WanPipeline {
  readonly tokenizer: HfTokenizer;
  readonly scheduler: UniPCConfig;
  private readonly components: ComponentRunners;
  private readonly configs: Partial<Record<Component, Record<string, unknown>>> = {};
  private readonly vae: WanVaeLayout;
  private readonly patch: [number, number, number];
  private readonly textDim: number;
  private readonly queue = new SerialQueue();

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly options: WanPipelineOptions,
    readonly family: PipelineFamily,
  ) {
    this.components = new ComponentRunners(name, dir, { generatedDir: options.generatedDir, ...(options.threads ? { threads: options.threads } : {}), ...(options.device ? { device: options.device } : {}) });
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

  private request(component: Component, dims: Record<string, number>) {
    const cfg = this.configs[component];
    return { model: this.name, dims, ...(cfg ? { config: cfg } : {}) };
  }

  /** a given, shipped or provided plan whose inputs have these shapes and whose config is the directory's */
  private planFor(component: Component, dims: Record<string, number>, want: Record<string, number[]>): Promise<Plan> {
    return resolvePlan(this.components, component, want, { given: this.options.plans?.[component], ...(this.options.planProvider ? { provider: this.options.planProvider } : {}), request: this.request(component, dims) }, (p) =>
      component !== 'vae' || (p as { dims?: Record<string, number> }).dims?.chunk === dims.chunk,
    );
  }

  private textRunner(batch: number, tokens: number): Promise<Runner> {
    const dims = { batch, textTokens: tokens };
    return this.components.runner('text_encoder', `${batch}x${tokens}`, () => this.planFor('text_encoder', dims, { input_ids: [batch, tokens] }));
  }

  /** the transformer's compile request at these sizes (a multi-rank run compiles its per-rank plans from it) */
  transformerRequest(batch: number, height: number, width: number, numFrames: number, tokens: number) {
    return this.request('transformer', { batch, frames: numFrames, height, width, textTokens: tokens });
  }

  private readonly rankTransformers = new Map<number, ComponentExecutor>();

  /** the transformer's executor at these sizes: a local runner, or this rank's plan of a parallel lowering */
  private async transformerExecutor(batch: number, height: number, width: number, numFrames: number, tokens: number): Promise<ComponentExecutor> {
    const g = this.geometry(height, width, numFrames);
    const want = { hidden_states: [batch, this.vae.zDim, g.frames, g.h, g.w], encoder_hidden_states: [batch, tokens, this.textDim] };
    const rank = this.options.rank;
    // a rank's plan may hold its split of the inputs: its ParallelExecutor checks the full sizes it is given
    if (rank) return rankTransformer(this.rankTransformers, rank, tokens, () => this.components.weightsOf('transformer'), this.options.threads);
    const dims = { batch, frames: numFrames, height, width, textTokens: tokens };
    return localExecutor(await this.components.runner('transformer', shapeKey([batch, g.frames, g.h, g.w, tokens]), () => this.planFor('transformer', dims, want)));
  }

  /** the VAE plan of chunk 1 (the first latent frame) or 2 (every later one) */
  private vaeRunner(height: number, width: number, chunk: 1 | 2): Promise<Runner> {
    const dims = { batch: 1, height, width, chunk };
    const want = { latents: [1, this.vae.zDim, height / this.vae.scaleSpatial, width / this.vae.scaleSpatial] };
    // the first chunk skips the temporal upsampling convs: its plan leaves their weights
    return this.components.runner('vae', `${height}x${width}-${chunk}`, () => this.planFor('vae', dims, want), chunk === 1 ? { mayLeave: (n) => n.includes('.upsamplers.0.time_conv.') } : {});
  }

  /** UMT5 over padded ids -> prompt_embeds [B, T, D] zeroed past each prompt's tokens (WanPipeline) */
  async encodePrompt(prompts: string[], tokens: number): Promise<{ embeds: Float32Array; inputIds: number[][]; tokenizeMs: number }> {
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
    const r = await this.textRunner(B, tokens);
    setRunnerInputs(r, { input_ids: ids, attention_mask: mask });
    await forwardRunner(r);
    const embeds = runnerOutput(r, 'last_hidden_state');
    const D = embeds.length / (B * tokens);
    enc.forEach((e, b) => {
      const n = e.attentionMask.reduce((a, x) => a + x, 0);
      embeds.fill(0, (b * tokens + n) * D, (b + 1) * tokens * D);
    });
    return { embeds, inputIds: enc.map((e) => e.ids), tokenizeMs };
  }

  /** one transformer forward: velocity [B, C, F', h, w] */
  async transformer(
    ex: ComponentExecutor,
    inputs: { hiddenStates: Float32Array; encoderHiddenStates: Float32Array; timestep: Float32Array; grid: { frames: number; h: number; w: number } },
    session: CachedForward | null,
  ): Promise<Float32Array> {
    const [pt, ph, pw] = this.patch;
    const g = inputs.grid;
    ex.setInputs({
      hidden_states: inputs.hiddenStates,
      timestep: inputs.timestep,
      encoder_hidden_states: inputs.encoderHiddenStates,
      rope_ids: videoRopeIds(g.frames / pt, g.h / ph, g.w / pw),
    });
    if (session) await session.forward();
    else await ex.forward();
    return ex.output('output');
  }

  /** one transformer forward at these dims (plan and weights on first use): velocity [B, C, F', h, w] */
  async transformerOnce(i: { hiddenStates: Float32Array; encoderHiddenStates: Float32Array; timestep: Float32Array; batch: number; height: number; width: number; numFrames: number; textTokens: number }): Promise<Float32Array> {
    const ex = await this.transformerExecutor(i.batch, i.height, i.width, i.numFrames, i.textTokens);
    return this.transformer(ex, { ...i, grid: this.geometry(i.height, i.width, i.numFrames) }, null);
  }

  /**
   * AutoencoderKLWan.decode of one video's VAE-space latents [z, F', h, w] -> frames [F, 3, H, W] in the
   * decoder's range, clamped to [-1, 1]: latent frame 0 through the chunk-1 plan, each later one through the
   * chunk-2 plan, every causal cache carried from one chunk to the next (zeros before the first).
   */
  async decodeVideo(z: Float32Array, frames: number, height: number, width: number): Promise<Float32Array[]> {
    const s = this.vae.scaleSpatial;
    return decodeWanVae(z, frames, height / s, width / s, this.vae.zDim, (chunk) => this.vaeRunner(height, width, chunk));
  }

  /** the seeded initial noise [B, z, F', h, w] (torch.randn-compatible) */
  noise(seed: number, batch: number, g: { frames: number; h: number; w: number }): Float32Array {
    return torchRandn(batch * this.vae.zDim * g.frames * g.h * g.w, seed);
  }

  /** Text-to-video (WanPipeline semantics); concurrent calls run one after the other. */
  generate(opts: VideoGenerateOptions): Promise<VideoGenerateResult> {
    return this.queue.run(() => this.generateNow(opts));
  }

  /** A request with the pipeline's defaults filled in, validated before any work (errors name the flag). */
  resolve(opts: VideoGenerateOptions): ResolvedVideoRequest {
    const def = this.defaultSize();
    const { steps, batch, seed } = checkRequest(opts, 50);
    const height = opts.height ?? def.height;
    const width = opts.width ?? def.width;
    const numFrames = opts.numFrames ?? def.numFrames;
    const g = this.geometry(height, width, numFrames);
    const tokens = opts.maxSequenceLength ?? 512;
    if (!Number.isInteger(tokens) || tokens < 1) throw new UserError(`--max-sequence-length must be an integer >= 1, got ${opts.maxSequenceLength}`);
    const guidanceScale = opts.guidanceScale ?? 5.0;
    if (typeof guidanceScale !== 'number' || !Number.isFinite(guidanceScale)) throw new UserError(`--guidance-scale must be a number, got ${opts.guidanceScale}`);
    const shape: [number, number, number, number, number] = [batch, this.vae.zDim, g.frames, g.h, g.w];
    checkLatents(opts.latents, shape, `${numFrames} frames of ${height}x${width}`);
    return { steps, height, width, numFrames, grid: g, tokens, batch, guidanceScale, doCfg: guidanceScale > 1, seed, shape };
  }

  /** what the ranks of a multi-rank run need (runtime/pipelines/multi-rank.ts): transformer requests, the other plans, the resolved request */
  async prepareRanks(opts: VideoGenerateOptions): Promise<RankPrep> {
    const r = this.resolve(opts);
    const te = await this.textRunner(r.batch, r.tokens);
    const vae = [(await this.vaeRunner(r.height, r.width, 1)).plan];
    if (r.grid.frames > 1) vae.push((await this.vaeRunner(r.height, r.width, 2)).plan);
    const { latents: _l, onStep: _o, ...rest } = opts;
    return {
      transformer: { [r.tokens]: this.transformerRequest(r.batch, r.height, r.width, r.numFrames, r.tokens) },
      plans: { text_encoder: te.plan, vae },
      opts: { ...rest, steps: r.steps, height: r.height, width: r.width, numFrames: r.numFrames, batch: r.batch, seed: r.seed, guidanceScale: r.guidanceScale, maxSequenceLength: r.tokens },
    };
  }

  private async generateNow(opts: VideoGenerateOptions): Promise<VideoGenerateResult> {
    const t0 = performance.now();
    const { steps, height, width, numFrames, grid: g, tokens, batch, guidanceScale: gs, doCfg, seed, shape } = this.resolve(opts);
    loadNative();

    const ts = performance.now();
    await this.textRunner(batch, tokens);
    const tr = await this.transformerExecutor(batch, height, width, numFrames, tokens);
    const decode = opts.decode !== false;
    if (decode) await this.vaeRunner(height, width, 1);
    if (decode && g.frames > 1) await this.vaeRunner(height, width, 2);
    const setup = performance.now() - ts;

    const tTe = performance.now();
    const pos = await this.encodePrompt(new Array<string>(batch).fill(opts.prompt), tokens);
    const neg = doCfg ? await this.encodePrompt(new Array<string>(batch).fill(opts.negativePrompt ?? ''), tokens) : null;
    const tokenize = pos.tokenizeMs + (neg?.tokenizeMs ?? 0);
    const textEncoder = performance.now() - tTe - tokenize;

    let session: CachedForward | null = null;
    if (opts.cache) {
      try {
        session = tr.cacheSession(opts.cache, { steps, separateCfg: doCfg });
      } catch (e) {
        throw new UserError((e as Error).message);
      }
    }

    const sched = new UniPCScheduler(this.scheduler);
    sched.setTimesteps(steps);
    let x = opts.latents ? Float32Array.from(opts.latents) : this.noise(seed, batch, g);
    const timestep = new Float32Array(batch);
    const tDen = performance.now();
    for (let i = 0; i < steps; i++) {
      const tStep = performance.now();
      timestep.fill(sched.timestepInput(i));
      const v = await this.transformer(tr, { hiddenStates: x, encoderHiddenStates: pos.embeds, timestep, grid: g }, session);
      if (neg) combineCfg(v, await this.transformer(tr, { hiddenStates: x, encoderHiddenStates: neg.embeds, timestep, grid: g }, session), gs);
      x = sched.step(v, i, x);
      assertFinite(x, `the latents after denoising step ${i + 1} of ${steps} (the transformer's output)`);
      opts.onStep?.({ step: i + 1, steps, timestep: sched.timesteps[i]!, sigma: sched.sigmas[i]!, ms: performance.now() - tStep });
    }
    const denoise = performance.now() - tDen;

    const tVae = performance.now();
    const videos: Uint8Array[] = [];
    const per = this.vae.zDim * g.frames * g.h * g.w;
    for (let b = 0; b < (decode ? batch : 0); b++) {
      const z = toWanVaeSpace(x.subarray(b * per, (b + 1) * per), this.vae);
      const chunks = await this.decodeVideo(z, g.frames, height, width);
      chunks.forEach((ch, k) => assertFinite(ch, `the VAE decoder's frames of latent frame ${k}`));
      const frameSize = 3 * height * width;
      const video = new Uint8Array(numFrames * height * width * 3);
      let t = 0;
      for (const ch of chunks) {
        for (let k = 0; k + frameSize <= ch.length; k += frameSize) video.set(quantizeHWC(denormalize(ch.subarray(k, k + frameSize)), 3, height, width), (t++ * frameSize));
      }
      if (t !== numFrames) throw new Error(`the VAE decoded ${t} frames, expected ${numFrames}`);
      videos.push(video);
    }
    const vae = performance.now() - tVae;
    return {
      videos,
      numFrames,
      height,
      width,
      latents: x,
      latentsShape: shape,
      steps,
      seed: opts.latents ? null : seed,
      inputIds: pos.inputIds[0]!,
      timesteps: sched.timesteps,
      sigmas: sched.sigmas,
      timings: { tokenize, textEncoder, denoise, perStep: denoise / steps, vae, setup, total: performance.now() - t0 },
      ...(session ? { cache: session.result() } : {}),
    };
  }

  /** worker threads of the executors */
  threads(): number | null {
    return this.components.threads();
  }

  /** bytes of the executors' arenas */
  arenaBytes(): number {
    return this.components.arenaBytes();
  }
}

/** A WanPipeline directory (model_index.json `_class_name` WanPipeline) on the native runtime. */
export function loadWanPipeline(dir: string, options: WanPipelineOptions, family: PipelineFamily): WanPipeline {
  if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 1)) {
    throw new UserError(`--threads must be an integer >= 1, got ${options.threads}`);
  }
  return new WanPipeline(family.planModel, dir, options, family);
}
