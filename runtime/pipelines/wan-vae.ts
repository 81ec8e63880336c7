// The Wan-family VAE (AutoencoderKLWan, and AutoencoderKLQwenImage, the same decoder for one frame) as
// the pipelines drive it: the per-channel latents mean / std from its config.json, and the chunked decode
// of models/autoencoder-kl-wan.ts (latent frame 0 through the chunk-1 plan, each later one through the
// chunk-2 plan, every causal cache carried from one chunk to the next; zeros before the first).
import { forwardRunner, product, runnerOutput, setRunnerInputs, type Runner } from '../component-runners.ts';
import { configNumber, UserError } from '../model-dir.ts';

export interface WanVaeLayout {
  zDim: number;
  mean: Float32Array;
  /** 1 / std in float32, as WanPipeline / QwenImagePipeline build `latents_std` */
  invStd: Float32Array;
  scaleTemporal: number;
  scaleSpatial: number;
}

function floatList(cfg: Record<string, unknown>, key: string, file: string, n: number): number[] {
  const v = cfg[key];
  if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new UserError(`${file}: field "${key}" must be a list of ${n} numbers (one per latent channel, z_dim = ${n}), got ${JSON.stringify(v)}`);
  }
  return v as number[];
}

/** the VAE's config.json fields the pipelines read (errors name the file and the field) */
export function wanVaeLayout(v: Record<string, unknown>, file: string): WanVaeLayout {
  const zDim = configNumber(v, 'z_dim', file, { int: true, min: 1 });
  const std = floatList(v, 'latents_std', file, zDim);
  if (std.some((x) => x === 0)) throw new UserError(`${file}: field "latents_std" has a zero entry`);
  return {
    zDim,
    mean: Float32Array.from(floatList(v, 'latents_mean', file, zDim)),
    invStd: Float32Array.from(std, (x) => Math.fround(1 / Math.fround(x))),
    scaleTemporal: configNumber(v, 'scale_factor_temporal', file, { int: true, min: 1, fallback: 4 }),
    scaleSpatial: configNumber(v, 'scale_factor_spatial', file, { int: true, min: 1, fallback: 8 }),
  };
}

/** `latents / latents_std + latents_mean` (latents_std = 1 / std), float32, of channel-major [C, ...plane] latents */
export function toWanVaeSpace(x: Float32Array, layout: WanVaeLayout): Float32Array {
  const plane = x.length / layout.zDim;
  const z = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) {
    const c = Math.floor(k / plane);
    z[k] = Math.fround(Math.fround(x[k]! / layout.invStd[c]!) + layout.mean[c]!);
  }
  return z;
}

/**
 * Decodes one video's VAE-space latents [z, F', h, w] -> per chunk frames [T, 3, H, W] in the decoder's
 * range, clamped to [-1, 1] (as AutoencoderKLWan._decode); `runner(chunk)` gives the chunk-1 / chunk-2 plan.
 */
export async function decodeWanVae(z: Float32Array, frames: number, h: number, w: number, zDim: number, runner: (chunk: 1 | 2) => Promise<Runner>): Promise<Float32Array[]> {
  const hw = h * w;
  const caches = new Map<string, Float32Array>();
  const out: Float32Array[] = [];
  for (let f = 0; f < frames; f++) {
    const r = await runner(f === 0 ? 1 : 2);
    const lat = new Float32Array(zDim * hw);
    for (let c = 0; c < zDim; c++) lat.set(z.subarray((c * frames + f) * hw, (c * frames + f + 1) * hw), c * hw);
    const ins: Record<string, Float32Array> = { latents: lat };
    for (const io of r.plan.inputs) if (io.name !== 'latents') ins[io.name] = caches.get(io.name) ?? new Float32Array(product(io.shape));
    setRunnerInputs(r, ins);
    await forwardRunner(r);
    for (const io of r.plan.outputs) {
      if (io.name.startsWith('next_cache.')) caches.set(`cache.${io.name.slice('next_cache.'.length)}`, runnerOutput(r, io.name));
    }
    const sample = runnerOutput(r, 'sample');
    for (let i = 0; i < sample.length; i++) sample[i] = Math.min(1, Math.max(-1, sample[i]!));
    out.push(sample);
  }
  return out;
}
