// What the image families' specs share at both ends of a request: the VAE's layout from its config, the token
// ids of a batch of padded encodings as the text encoder's inputs, the VAE decoder's output as uint8 pixels,
// and the result object.
import { forwardRunner, runnerOutput, setRunnerInputs, type Runner } from '../component-runners.ts';
import { toUint8HWC } from '../image.ts';
import path from 'node:path';
import { HfTokenizer } from '../hf-tokenizer.ts';
import { componentConfig, configNumber, UserError, type PipelineFamily } from '../model-dir.ts';
import type { Component } from '../plan.ts';
import { loadSchedulerConfig, type FlowMatchSchedulerConfig } from '../scheduler.ts';
import { assertFinite } from '../request-checks.ts';
import type { DenoiseOutcome, EncodedText, ResolvedRequest } from './spec.ts';

/**
 * A FlowMatch family's directory: its scheduler config (a pipeline that passes mu needs dynamic shifting), its
 * tokenizer/ and the config.json of each component the family reads
 */
export function readFlowMatchDir(dir: string, family: PipelineFamily, o: { passesMu?: boolean } = {}): { scheduler: FlowMatchSchedulerConfig; tokenizer: HfTokenizer; configs: Partial<Record<Component, Record<string, unknown>>> } {
  const file = path.join(dir, 'scheduler', 'scheduler_config.json');
  const scheduler = loadSchedulerConfig(file);
  if (o.passesMu && !scheduler.use_dynamic_shifting) throw new UserError(`${file}: ${family.pipelineClass} passes mu, which needs "use_dynamic_shifting": true`);
  const configs: Partial<Record<Component, Record<string, unknown>>> = {};
  for (const c of family.dirConfigs) configs[c] = componentConfig(dir, c);
  return { scheduler, tokenizer: HfTokenizer.fromDir(path.join(dir, 'tokenizer')), configs };
}

/** An AutoencoderKL-family VAE's layout (its config.json `vaeFile`): pixels per latent pixel, latent channels, latent scaling. */
export interface VaeLayout {
  vaeScale: number;
  latentChannels: number;
  scalingFactor: number;
  shiftFactor: number;
}

export function vaeLayout(vae: Record<string, unknown>, vaeFile: string, o: { scaling?: boolean } = {}): VaeLayout {
  const boc = vae.block_out_channels;
  if (!Array.isArray(boc) || boc.length < 1) throw new UserError(`${vaeFile}: field "block_out_channels" must be a non-empty list, got ${JSON.stringify(boc)}`);
  return {
    vaeScale: 2 ** (boc.length - 1),
    latentChannels: configNumber(vae, 'latent_channels', vaeFile, { int: true, min: 1 }),
    // AutoencoderKLFlux2 has no scaling (o.scaling false): its BatchNorm statistics take the place
    scalingFactor: o.scaling === false ? 1 : configNumber(vae, 'scaling_factor', vaeFile),
    shiftFactor: o.scaling === false || vae.shift_factor === null ? 0 : configNumber(vae, 'shift_factor', vaeFile, { fallback: 0 }),
  };
}

/** an image size the VAE (scale `vaeScale`) and the 2x2 packing take: positive multiples of 2 x vaeScale (errors name the flag) */
export function checkImageSize(height: number, width: number, vaeScale: number): void {
  const mult = vaeScale * 2;
  for (const [flag, v] of [['height', height], ['width', width]] as const) {
    if (!Number.isInteger(v) || v <= 0 || v % mult !== 0) throw new UserError(`--${flag} must be a positive multiple of ${mult} (the VAE scale ${vaeScale} x 2x2 packing), got ${v}`);
  }
}

/** a batch of tokenizer encodings padded to L as the text encoder's input_ids and attention_mask [B, L] */
export function batchIds(enc: { ids: number[]; attentionMask: number[] }[], L: number): { ids: Float32Array; mask: Float32Array } {
  const ids = new Float32Array(enc.length * L);
  const mask = new Float32Array(enc.length * L);
  enc.forEach((e, b) => {
    ids.set(e.ids, b * L);
    mask.set(e.attentionMask, b * L);
  });
  return { ids, mask };
}

/** the VAE decoder run on `inputs`, its image checked, one HWC uint8 RGB image per batch item */
export async function decodeToImages(r: Runner, inputs: Record<string, Float32Array>, q: Pick<ResolvedRequest, 'batch' | 'height' | 'width'>): Promise<Uint8Array[]> {
  setRunnerInputs(r, inputs);
  await forwardRunner(r);
  const decoded = runnerOutput(r, 'sample');
  assertFinite(decoded, "the VAE decoder's image");
  return Array.from({ length: q.batch }, (_, b) => toUint8HWC(decoded, 3, q.height, q.width, b));
}

/** an image family's result: the images, the final latents in the family's layout, the schedule, timings and cache */
export function imageResult<T extends EncodedText, S extends number[]>(q: ResolvedRequest, o: DenoiseOutcome<T>, images: Uint8Array[]) {
  return {
    image: images[0]!,
    images,
    width: q.width,
    height: q.height,
    latents: o.latents,
    latentsShape: q.latentsShape as S,
    steps: q.steps,
    seed: o.seed,
    inputIds: o.pos.inputIds[0]!,
    schedule: (o.sampler as unknown as { schedule: import('../scheduler.ts').Schedule }).schedule,
    timings: o.timings,
    ...(o.cache ? { cache: o.cache } : {}),
  };
}
