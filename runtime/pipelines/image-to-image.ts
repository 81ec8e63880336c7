// What diffusers' image-to-image pipelines (FluxImg2ImgPipeline, FluxFillPipeline, ZImageImg2ImgPipeline) share:
// the image preprocessed at the output size, get_timesteps' first kept step, the VAE encoder's posterior
// sampled from the request's generator and scaled, and scale_noise to the first kept step.
import { forwardRunner, runnerOutput, setRunnerInputs, type Runner } from '../component-runners.ts';
import { loadRgbImage, vaeImageInput, type RgbImage } from '../image-input.ts';
import { UserError } from '../model-dir.ts';
import { assertFinite } from '../request-checks.ts';
import { torchRandnFrom, type MT19937 } from '../rng.ts';
import type { Schedule } from '../scheduler.ts';

/** an image-to-image request: the preprocessed image [1, 3, H, W], and the first step of the full schedule that runs */
export interface ImageToImage {
  image: Float32Array;
  startStep: number;
  fullSteps: number;
}

/** the `vae_encoder` need's checkpoint: the vae/ folder, whose decoder tensors it leaves unread */
export const VAE_ENCODER_WEIGHTS = {
  folder: 'vae',
  mayLeave: (name: string): boolean => name.startsWith('decoder.') || name.startsWith('post_quant_conv.'),
};

/**
 * A request's image-to-image part, or null without an image (then a `strength` is an error): the image at
 * height x width and the steps that run: of `steps`, get_timesteps keeps the last min(steps * strength, steps)
 * (int of the rest skipped); no step left is an error naming --strength
 */
export function imageToImage(src: string | RgbImage | undefined, given: number | undefined, defaultStrength: number, steps: number, height: number, width: number): ImageToImage | null {
  if (src === undefined) {
    if (given !== undefined) throw new UserError('--strength is for image-to-image: give an --image too');
    return null;
  }
  const strength = given ?? defaultStrength;
  if (typeof strength !== 'number' || !(strength >= 0 && strength <= 1)) throw new UserError(`--strength must be a number in [0, 1], got ${strength}`);
  const startStep = Math.trunc(Math.max(steps - Math.min(steps * strength, steps), 0));
  if (steps - startStep < 1) throw new UserError(`--strength ${strength} with ${steps} steps leaves ${steps - startStep} denoising steps; raise --strength or --steps`);
  return { image: vaeImageInput(loadRgbImage(src, '--image'), height, width), startStep, fullSteps: steps };
}

/** the schedule from its first kept step (scheduler.set_begin_index) */
export function fromStartStep(s: Schedule, startStep: number): Schedule {
  return { ...s, sigmas: s.sigmas.slice(startStep), timesteps: s.timesteps.slice(startStep) };
}

/**
 * AutoencoderKL.encode + retrieve_latents on the `vae_encoder` runner: the posterior sampled (mean +
 * exp(logvar / 2) * randn from `gen`, logvar clamped to [-30, 20]), then (z - shift_factor) * scaling_factor;
 * [C, h, w] for one image
 */
export async function encodePosterior(r: Runner, image: Float32Array, gen: MT19937, o: { scalingFactor: number; shiftFactor: number }): Promise<Float32Array> {
  setRunnerInputs(r, { sample: image });
  await forwardRunner(r);
  const moments = runnerOutput(r, 'moments');
  assertFinite(moments, "the VAE encoder's output");
  const n = moments.length / 2;
  const eps = torchRandnFrom(gen, n);
  const f = Math.fround;
  const z = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const logvar = Math.min(Math.max(moments[n + j]!, -30), 20);
    const sample = f(moments[j]! + f(f(Math.exp(f(0.5 * logvar))) * eps[j]!));
    z[j] = f(f(sample - o.shiftFactor) * o.scalingFactor);
  }
  return z;
}

/** [rows, a] and [rows, b] -> [rows, a + b] (torch.cat on the last dim) */
export function concatRows(x: Float32Array, y: Float32Array, rows: number): Float32Array {
  const a = x.length / rows;
  const b = y.length / rows;
  const out = new Float32Array(rows * (a + b));
  for (let t = 0; t < rows; t++) {
    out.set(x.subarray(t * a, (t + 1) * a), t * (a + b));
    out.set(y.subarray(t * b, (t + 1) * b), t * (a + b) + a);
  }
  return out;
}

/** FlowMatchEulerDiscreteScheduler.scale_noise: sigma * noise + (1 - sigma) * z, z repeated over the batch (float32) */
export function scaleNoise(z: Float32Array, noise: Float32Array, sigma: number): Float32Array {
  const f = Math.fround;
  const x = new Float32Array(noise.length);
  for (let j = 0; j < x.length; j++) x[j] = f(f(sigma * noise[j]!) + f(f(1 - sigma) * z[j % z.length]!));
  return x;
}
