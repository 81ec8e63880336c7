// diffusers AutoencoderKLWan (Wan 2.1), decoder only, driven by its config.json.
//
// diffusers decodes a video one latent frame at a time: every causal Conv3d keeps the last two frames of
// its input (`feat_cache`) and puts them in front of the next chunk's input, so the first chunk gives 1
// frame and every later one 4 (two temporal upsamples). A plan here is one such chunk, in a frame-major
// layout [frames, C, H, W] (a frame is an image, so the 2-D ops run on it unchanged and a cache is a
// contiguous prefix): inputs `latents [1, z_dim, h, w]` and `cache.<conv> [2, C, H, W]` for every causal
// conv, outputs `sample [frames, 3, H, W]` and `next_cache.<conv>` (the last two frames of cache ++ input).
// The runtime starts with zero caches, which is what diffusers' causal zero padding is. The first chunk
// (dim `chunk: 1`; every later chunk is `chunk: 2`) skips the temporal upsampling convs (diffusers marks their cache "Rep"); the second
// chunk then sees them with zero caches again, which is exactly diffusers' "Rep" branch.
import { attention, component, concat, DslError, invalidDim, upsampleNearest2x, type Module, type Tensor } from '../compiler/dsl/index.ts';

export interface AutoencoderKLWanConfig {
  base_dim: number;
  decoder_base_dim: number | null;
  z_dim: number;
  dim_mult: number[];
  num_res_blocks: number;
  attn_scales: number[];
  temperal_downsample: boolean[];
  dropout: number;
  in_channels: number;
  out_channels: number;
  is_residual: boolean;
  patch_size: number | null;
  scale_factor_temporal: number;
  scale_factor_spatial: number;
  latents_mean: number[];
  latents_std: number[];
  [key: string]: unknown;
}

/** frames of cache a causal conv with `kt` temporal taps keeps (diffusers CACHE_T = 2 for kt = 3) */
const CACHE_FRAMES = 2;

/** One causal conv of the decoder, in execution order: its cache input's key and shape. */
export interface WanCacheSlot {
  key: string;
  shape: [number, number, number, number];
}

interface Walk {
  /** the causal convs in the order the decoder runs them */
  slots: WanCacheSlot[];
  /** output frames of the chunk */
  frames: number;
}

function decoderDims(c: AutoencoderKLWanConfig): number[] {
  const base = c.decoder_base_dim ?? c.base_dim;
  const m = c.dim_mult;
  return [m[m.length - 1]!, ...[...m].reverse()].map((u) => base * u);
}

function temporalUpsample(c: AutoencoderKLWanConfig): boolean[] {
  return [...c.temperal_downsample].reverse();
}

/**
 * The decoder's causal convs and output frame count for one chunk, computed from the config alone (the
 * plan inputs are declared before the forward is traced); `forward` checks it meets them in this order.
 */
export function wanDecoderWalk(c: AutoencoderKLWanConfig, h: number, w: number, firstChunk: boolean): Walk {
  const slots: WanCacheSlot[] = [];
  const add = (key: string, ch: number, hh: number, ww: number): void => {
    slots.push({ key, shape: [CACHE_FRAMES, ch, hh, ww] });
  };
  const dims = decoderDims(c);
  const resnet = (p: string, cin: number, cout: number, hh: number, ww: number): void => {
    add(`${p}.conv1`, cin, hh, ww);
    add(`${p}.conv2`, cout, hh, ww);
  };
  let [hh, ww, frames] = [h, w, 1];
  add('decoder.conv_in', c.z_dim, hh, ww);
  resnet('decoder.mid_block.resnets.0', dims[0]!, dims[0]!, hh, ww);
  resnet('decoder.mid_block.resnets.1', dims[0]!, dims[0]!, hh, ww);
  const tup = temporalUpsample(c);
  for (let i = 0; i < dims.length - 1; i++) {
    const out = dims[i + 1]!;
    let cin = i > 0 ? dims[i]! / 2 : dims[i]!;
    for (let j = 0; j <= c.num_res_blocks; j++) {
      resnet(`decoder.up_blocks.${i}.resnets.${j}`, cin, out, hh, ww);
      cin = out;
    }
    if (i !== c.dim_mult.length - 1) {
      if (tup[i]) {
        if (!firstChunk) {
          add(`decoder.up_blocks.${i}.upsamplers.0.time_conv`, out, hh, ww);
          frames *= 2;
        }
      }
      hh *= 2;
      ww *= 2;
    }
  }
  add('decoder.conv_out', dims[dims.length - 1]!, hh, ww);
  return { slots, frames };
}

/** WanRMS_norm over the channels of a frame-major [T, C, H, W] tensor, weight `<name>.gamma` */
function channelRmsNorm(m: Module, name: string, x: Tensor, gammaShape: number[]): Tensor {
  const [T, C, H, W] = [x.dim(0), x.dim(1), x.dim(2), x.dim(3)];
  const rows = x.reshape(T, C, H * W).transpose();
  // F.normalize(x, dim=1) * sqrt(C) = x / sqrt(mean(x^2)); its 1e-12 floor on the norm is the eps below
  const n = m.rmsNorm(null, rows, { eps: 1e-24 / C }).mul(m.param(`${name}.gamma`, gammaShape).reshape(C));
  return n.transpose().reshape(T, C, H, W);
}

class DecoderTrace {
  private next = 0;
  readonly newCaches: Record<string, Tensor> = {};
  constructor(
    private readonly slots: WanCacheSlot[],
    private readonly caches: Record<string, Tensor | undefined>,
  ) {}

  /** WanCausalConv3d with kernel (kt, k, k), padding (kt // 2, k // 2, k // 2): the cache in front, no temporal pad */
  causal(m: Module, name: string, x: Tensor, out: number, kt: number, k: number): Tensor {
    const key = `${m.prefix}${name}`;
    const slot = this.slots[this.next++];
    if (!slot || slot.key !== key) throw new DslError(`AutoencoderKLWan: causal conv ${key} out of order (expected ${slot?.key ?? 'none'})`);
    const cache = this.caches[`cache.${key}`]!;
    const xx = concatFrames(cache, x);
    this.newCaches[`next_cache.${key}`] = xx.slice(0, xx.dim(0) - CACHE_FRAMES, CACHE_FRAMES);
    return m.conv3d(name, xx, out, { kernel: [kt, k, k], pad: Math.floor(k / 2) });
  }

  done(): void {
    if (this.next !== this.slots.length) throw new DslError(`AutoencoderKLWan: ${this.slots.length - this.next} causal convs declared but not traced`);
  }
}

/** frames of `a` then frames of `b` (frame-major: one contiguous block after the other) */
function concatFrames(a: Tensor, b: Tensor): Tensor {
  return concat([a, b], 0);
}

/** WanResidualBlock: shortcut (1x1x1) + two (RMS norm, SiLU, causal 3x3x3) */
function resnet(m: Module, t: DecoderTrace, x: Tensor, out: number): Tensor {
  const cin = x.dim(1);
  const skip = cin !== out ? m.conv3d('conv_shortcut', x, out, { kernel: [1, 1, 1] }) : x;
  let h = channelRmsNorm(m, 'norm1', x, [cin, 1, 1, 1]).silu();
  h = t.causal(m, 'conv1', h, out, 3, 3);
  h = channelRmsNorm(m, 'norm2', h, [out, 1, 1, 1]).silu();
  h = t.causal(m, 'conv2', h, out, 3, 3);
  return h.add(skip);
}

/** WanAttentionBlock: one head over each frame's H*W positions */
function attnBlock(m: Module, x: Tensor): Tensor {
  const [T, C, H, W] = [x.dim(0), x.dim(1), x.dim(2), x.dim(3)];
  const n = channelRmsNorm(m, 'norm', x, [C, 1, 1]);
  const qkv = m.conv2d('to_qkv', n, 3 * C, { kernel: 1 }).reshape(T, 3 * C, H * W).transpose();
  const [q, k, v] = qkv.chunk(3);
  const o = attention(q!, k!, v!, { heads: 1 }).transpose().reshape(T, C, H, W);
  return m.conv2d('proj', o, C, { kernel: 1 }).add(x);
}

export const autoencoderKLWan = component<AutoencoderKLWanConfig>({
  component: 'vae',
  className: 'AutoencoderKLWan',
  // Wan-AI/Wan2.1-T2V-14B-Diffusers vae/config.json
  config: {
    base_dim: 96,
    decoder_base_dim: null,
    z_dim: 16,
    dim_mult: [1, 2, 4, 4],
    num_res_blocks: 2,
    attn_scales: [],
    temperal_downsample: [false, true, true],
    dropout: 0.0,
    in_channels: 3,
    out_channels: 3,
    is_residual: false,
    patch_size: null,
    scale_factor_temporal: 4,
    scale_factor_spatial: 8,
    latents_mean: [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    latents_std: [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916],
  },
  dims: {
    // 480x832 (the Wan 2.1 T2V default); a plan decodes one latent frame
    defaults: { batch: 1, height: 480, width: 832, chunk: 2 },
    resolve(c, d) {
      if (c.is_residual) throw new DslError('AutoencoderKLWan: is_residual=true (the Wan 2.2 VAE) is not supported: this file implements the Wan 2.1 VAE');
      if (c.patch_size !== null) throw new DslError(`AutoencoderKLWan: patch_size ${String(c.patch_size)} is not supported (Wan 2.1 has none)`);
      if (c.attn_scales.length !== 0) throw new DslError(`AutoencoderKLWan: attn_scales [${c.attn_scales.join(', ')}] is not supported (Wan 2.1 has [])`);
      if (c.temperal_downsample.length !== c.dim_mult.length - 1) throw new DslError(`AutoencoderKLWan: temperal_downsample needs ${c.dim_mult.length - 1} entries (one per down block), got ${c.temperal_downsample.length}`);
      if (d.batch !== 1) invalidDim('batch', d.batch!, 'must be 1: the VAE plan decodes one video chunk at a time');
      if (d.chunk !== 1 && d.chunk !== 2) invalidDim('chunk', d.chunk!, 'must be 1 (the first latent frame) or 2 (any later one)');
      const s = 2 ** (c.dim_mult.length - 1);
      for (const k of ['height', 'width'] as const) if (d[k]! % s !== 0) invalidDim(k, d[k]!, `must be a multiple of ${s} (the VAE's scale factor)`);
      return {
        dims: { B: 1, height: d.height!, width: d.width!, latentHeight: d.height! / s, latentWidth: d.width! / s, chunk: d.chunk! },
        tag: `h${d.height}w${d.width}-${d.chunk === 1 ? 'first' : 'next'}`,
      };
    },
  },
  inputs(c, d) {
    const walk = wanDecoderWalk(c, d.latentHeight!, d.latentWidth!, d.chunk === 1);
    const ins: Record<string, number[]> = { latents: [1, c.z_dim, d.latentHeight!, d.latentWidth!] };
    for (const s of walk.slots) ins[`cache.${s.key}`] = s.shape;
    return ins;
  },
  forward(b, x, c, d) {
    const first = d.chunk === 1;
    const walk = wanDecoderWalk(c, d.latentHeight!, d.latentWidth!, first);
    const t = new DecoderTrace(walk.slots, x);
    const dims = decoderDims(c);
    const z = b.conv3d('post_quant_conv', x.latents!, c.z_dim, { kernel: [1, 1, 1] });
    const dec = b.scope('decoder');
    let h = t.causal(dec, 'conv_in', z, dims[0]!, 3, 3);
    const mid = dec.scope('mid_block');
    h = resnet(mid.scope('resnets.0'), t, h, dims[0]!);
    h = attnBlock(mid.scope('attentions.0'), h);
    h = resnet(mid.scope('resnets.1'), t, h, dims[0]!);
    const tup = temporalUpsample(c);
    for (let i = 0; i < dims.length - 1; i++) {
      const up = dec.scope(`up_blocks.${i}`);
      const out = dims[i + 1]!;
      for (let j = 0; j <= c.num_res_blocks; j++) h = resnet(up.scope(`resnets.${j}`), t, h, out);
      if (i === c.dim_mult.length - 1) continue;
      const rs = up.scope('upsamplers.0');
      if (tup[i] && !first) {
        // time_conv doubles the channels; [T, 2, C, H, W] is frame 2t + k: a free reshape to [2T, C, H, W]
        const [T, C, H, W] = [h.dim(0), h.dim(1), h.dim(2), h.dim(3)];
        h = t.causal(rs, 'time_conv', h, 2 * C, 3, 1).reshape(2 * T, C, H, W);
      }
      h = rs.conv2d('resample.1', upsampleNearest2x(h), out / 2, { kernel: 3, pad: 1 });
    }
    h = channelRmsNorm(dec, 'norm_out', h, [h.dim(1), 1, 1, 1]).silu();
    const sample = t.causal(dec, 'conv_out', h, c.out_channels, 3, 3);
    t.done();
    if (sample.dim(0) !== walk.frames) throw new DslError(`AutoencoderKLWan: traced ${sample.dim(0)} frames, the walk says ${walk.frames}`);
    return { sample, ...t.newCaches };
  },
});
