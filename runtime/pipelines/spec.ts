// What a pipeline family plugs into the one Pipeline (runtime/pipeline.ts): how it reads a request, which
// plans it runs, how it encodes prompts, makes the noise, builds the transformer's inputs, steps its scheduler,
// combines CFG and decodes. The Pipeline owns the rest: executors (one rank's or a parallel rank's), the
// denoising loop, caching, the order of the forwards (cond then uncond: Cache-DiT's separate-CFG order),
// the finiteness checks, timings, and the multi-rank launch (runtime/pipeline-parallel.ts).
import type { Communicator } from '../comm/communicator.ts';
import type { ComponentExecutor, Runner } from '../component-runners.ts';
import type { ComponentWeights } from '../io/weights.ts';
import type { PipelineFamily } from '../model-dir.ts';
import type { Component, Plan } from '../plan.ts';
import type { PipelineCacheOptions, PipelineCacheResult } from '../pipeline-cache.ts';

/** One executor a request needs: its component, the key it is made once under, and the plan it must run. */
export interface PlanNeed {
  component: Component;
  /** one executor per component and key (the shapes it runs) */
  key: string;
  /** the compile request's dims */
  dims: Record<string, number>;
  /** the plan's input shapes by name */
  want: Record<string, number[]>;
  /** the directory's config the plan is compiled with (and every plan used must agree with) */
  config?: Record<string, unknown>;
  /** an extra check of a candidate plan (the Wan VAE's chunk) */
  also?: (p: Plan) => boolean;
  /** checkpoint tensors this plan may leave unbound */
  mayLeave?: (name: string) => boolean;
  /** a multi-rank run may run this component tensor-parallel (TE-P: --parallel-text) */
  textParallel?: boolean;
  /** the checkpoint folder when it is not the component's (Wan 2.2's transformer_2 runs transformer plans); part of `key` */
  folder?: string;
}

/** Where a family's components run: what the Pipeline hands its spec. */
export interface PipelineContext {
  readonly model: string;
  readonly dir: string;
  /**
   * the executor of a need (made once per component and key): this rank's plan of a parallel lowering where
   * a multi-rank run gave the rank one, else a local runner
   */
  executor(n: PlanNeed): Promise<ComponentExecutor>;
  /** a local runner of a need (VAE tiles and chunks: plans a rank runs alone) */
  runner(n: PlanNeed): Promise<Runner>;
  /** the plan a need resolves to here: given, shipped, or from the plan provider */
  plan(n: PlanNeed): Promise<Plan>;
  /** a component folder's checkpoint, opened once for the executors and the spec (FLUX.2's VAE statistics) */
  weights(folder: string): Promise<ComponentWeights>;
  /** the communicator of a multi-rank run (null on one rank) */
  readonly comm: Communicator | null;
}

/** A family's scheduler for one request: the model timestep of step i and the step itself. */
export interface Sampler {
  readonly timesteps: ArrayLike<number>;
  readonly sigmas: ArrayLike<number>;
  /** the transformer's `timestep` input at step i (one value, filled per batch item) */
  modelTimestep(i: number): number;
  /** x at step i+1 from the velocity v (may write into x and return it) */
  step(v: Float32Array, i: number, x: Float32Array): Float32Array;
}

/** What every family's request resolves to (validated, the family's defaults filled in). */
export interface ResolvedRequest {
  steps: number;
  batch: number;
  seed: number;
  height: number;
  width: number;
  prompt: string;
  /** batched requests (`items`): each batch item's prompt and seed */
  prompts?: string[];
  seeds?: number[];
  /** the negative prompt when CFG runs, else null */
  negativePrompt: string | null;
  /** the CFG scale, or null when CFG is off */
  cfgScale: number | null;
  /** the initial latents' layout (diffusers' `latents=`) */
  latentsShape: number[];
  /** what the latents are for, in errors ("4 frames of 64x64") */
  latentsFor: string;
}

/** 'local': decode here; 'none': skip the VAE (a rank that does not decode); 'parallel': VAE-P over the ranks */
export type DecodeMode = 'local' | 'none' | 'parallel';

/** The denoising result the spec turns into its family's result. */
export interface DenoiseOutcome<T> {
  latents: Float32Array;
  /** null where the caller gave the latents */
  seed: number | null;
  pos: T;
  sampler: Sampler;
  timings: { tokenize: number; textEncoder: number; denoise: number; perStep: number; vae: number; setup: number; total: number };
  cache?: PipelineCacheResult;
}

/** A family's encoded prompt: whatever its transformer takes, and the ids it came from. */
export interface EncodedText {
  inputIds: number[][];
  tokenizeMs: number;
}

export interface PipelineSpec<O, Q extends ResolvedRequest, T extends EncodedText, D, R> {
  readonly family: PipelineFamily;
  /** the family takes an `image` to start from (image-to-image); the others refuse one */
  readonly imageToImage?: boolean;
  /** the family runs several requests as one batch (`items`: each its own prompt and seed) */
  readonly batching?: boolean;
  /** the family takes several images (`image` a list: FLUX.2-Klein's reference images) */
  readonly multiImage?: boolean;
  /** the family takes a `mask` with the image (inpainting) */
  readonly inpainting?: boolean;
  /**
   * Cache-DiT's generate / serve alignment of a cache request to this family (its examples' params modifiers),
   * applied by the CLI and the server; the library's `cache` is taken as enable_cache takes it
   */
  alignCache?(opts: PipelineCacheOptions): PipelineCacheOptions;
  /** inputs every step takes that the request makes once, after the initial latents (FluxFill's masked image) */
  prepareInputs?(q: Q): Promise<void>;
  /** the request with the family's defaults, validated before any work (errors name the flag) */
  resolve(opts: O): Q;
  /** the executors a request runs (made before the timed stages; a multi-rank run compiles or ships their plans) */
  needs(q: Q, decode: DecodeMode): PlanNeed[];
  /** the prompts of a batch through the family's tokenizers and text encoders */
  encode(q: Q, prompts: string[]): Promise<T>;
  /**
   * the transformer's executor need for this text at step `step` (a family whose text length varies keys it by
   * length; Wan 2.2 switches experts at its boundary)
   */
  transformerNeed(q: Q, text: T, step: number): PlanNeed;
  /** the seeded initial latents in the latents' layout: noise, or an image-to-image request's noised image */
  noise(q: Q): Float32Array | Promise<Float32Array>;
  sampler(q: Q): Sampler;
  /** the transformer plan's inputs at one step */
  transformerInputs(q: Q, x: Float32Array, text: T, timestep: Float32Array): Record<string, Float32Array>;
  /** CFG at step `step`: `uncond` combined into `cond` in place */
  combineCfg(q: Q, cond: Float32Array, uncond: Float32Array, step: number): void;
  /** the final latents decoded (nothing with decode 'none') */
  decode(q: Q, x: Float32Array, mode: DecodeMode): Promise<D>;
  result(q: Q, o: DenoiseOutcome<T>, decoded: D): R;
}
