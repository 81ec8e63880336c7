// diffusers AutoencoderKL, driven by its config.json: the decoder (component `vae`, what text-to-image runs)
// and the encoder (component `vae_encoder`: image-to-image and editing), both reading the vae/ checkpoint.
import { attention, component, invalidDim, upsampleNearest2x, type Module, type Tensor } from '../compiler/dsl/index.ts';

export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  norm_num_groups: number;
  mid_block_add_attention: boolean;
  use_post_quant_conv: boolean;
  use_quant_conv?: boolean;
  scaling_factor: number;
  shift_factor: number | null;
  [key: string]: unknown;
}

const EPS = 1e-6;

/** ResnetBlock2D (temb None, groups, eps 1e-6, output_scale_factor 1) */
function resnet(m: Module, x: Tensor, out: number, groups: number): Tensor {
  let h = m.groupNorm('norm1', x, { groups, eps: EPS }).silu();
  h = m.conv2d('conv1', h, out, { kernel: 3, pad: 1 });
  h = m.groupNorm('norm2', h, { groups, eps: EPS }).silu();
  h = m.conv2d('conv2', h, out, { kernel: 3, pad: 1 });
  const skip = x.dim(1) === out ? x : m.conv2d('conv_shortcut', x, out, { kernel: 1 });
  return skip.add(h);
}

/** mid-block Attention (1 head over H*W positions, GroupNorm first, residual) */
function attnBlock(m: Module, x: Tensor, groups: number): Tensor {
  const [B, C, H, W] = [x.dim(0), x.dim(1), x.dim(2), x.dim(3)];
  const t = m.groupNorm('group_norm', x, { groups, eps: EPS }).reshape(B, C, H * W).transpose();
  const o = attention(m.linear('to_q', t, C), m.linear('to_k', t, C), m.linear('to_v', t, C), { heads: 1 });
  return x.add(m.linear('to_out.0', o, C).transpose().reshape(B, C, H, W));
}

/** UNetMidBlock2D (resnet, attention, resnet), as the encoder and the decoder have it */
function midBlock(m: Module, h: Tensor, c: AutoencoderKLConfig): Tensor {
  const g = c.norm_num_groups;
  h = resnet(m.scope('resnets.0'), h, h.dim(1), g);
  if (c.mid_block_add_attention) h = attnBlock(m.scope('attentions.0'), h, g);
  return resnet(m.scope('resnets.1'), h, h.dim(1), g);
}

// FLUX.1's VAE (black-forest-labs/FLUX.1-dev vae/config.json)
const FLUX1_VAE: AutoencoderKLConfig = {
  in_channels: 3,
  out_channels: 3,
  latent_channels: 16,
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  norm_num_groups: 32,
  mid_block_add_attention: true,
  use_post_quant_conv: false,
  use_quant_conv: false,
  scaling_factor: 0.3611,
  shift_factor: 0.1159,
};

/** image dims: height and width multiples of the VAE's scale factor */
const imageDims = {
  defaults: { batch: 1, height: 1024, width: 1024 },
  resolve(c: AutoencoderKLConfig, d: Record<string, number>) {
    const s = 2 ** (c.block_out_channels.length - 1);
    for (const k of ['height', 'width'] as const) if (d[k]! % s !== 0) invalidDim(k, d[k]!, `must be a multiple of ${s} (the VAE's scale factor)`);
    return { dims: { B: d.batch!, height: d.height!, width: d.width!, latentHeight: d.height! / s, latentWidth: d.width! / s }, tag: `b${d.batch}-h${d.height}w${d.width}` };
  },
};

/**
 * AutoencoderKL.encode up to its posterior: the image in [-1, 1] -> `moments` [B, 2 * latent_channels, h, w]
 * (mean, then logvar: DiagonalGaussianDistribution's halves; the pipeline samples and scales them).
 * Encoder: conv_in, DownEncoderBlock2D per level (resnets, then Downsample2D: zeros after each axis only,
 * 3x3 stride 2, except at the last level), the mid block, GroupNorm + SiLU, conv_out to 2 * latent_channels
 * (double_z), then quant_conv where the config has one.
 */
export const autoencoderKLEncoder = component<AutoencoderKLConfig>({
  component: 'vae_encoder',
  className: 'AutoencoderKL',
  config: FLUX1_VAE,
  dims: imageDims,
  inputs: (c, d) => ({ sample: [d.B!, c.in_channels, d.height!, d.width!] }),
  forward(b, x, c) {
    const g = c.norm_num_groups;
    const boc = c.block_out_channels;
    const e = b.scope('encoder');
    let h = e.conv2d('conv_in', x.sample!, boc[0]!, { kernel: 3, pad: 1 });
    boc.forEach((out, i) => {
      const down = e.scope(`down_blocks.${i}`);
      for (let j = 0; j < c.layers_per_block; j++) h = resnet(down.scope(`resnets.${j}`), h, out, g);
      if (i < boc.length - 1) h = down.conv2d('downsamplers.0.conv', h, out, { kernel: 3, stride: 2, pad: 0, padEnd: 1 });
    });
    h = midBlock(e.scope('mid_block'), h, c);
    h = e.groupNorm('conv_norm_out', h, { groups: g, eps: EPS }).silu();
    let moments = e.conv2d('conv_out', h, 2 * c.latent_channels, { kernel: 3, pad: 1 });
    if (c.use_quant_conv) moments = b.conv2d('quant_conv', moments, 2 * c.latent_channels, { kernel: 1 });
    return { moments };
  },
});

export const autoencoderKL = component<AutoencoderKLConfig>({
  component: 'vae',
  className: 'AutoencoderKL',
  config: FLUX1_VAE,
  dims: imageDims,
  inputs: (c, d) => ({ latents: [d.B!, c.latent_channels, d.latentHeight!, d.latentWidth!] }),
  forward(b, x, c) {
    const g = c.norm_num_groups;
    const boc = c.block_out_channels;
    let z = x.latents!;
    if (c.use_post_quant_conv) z = b.conv2d('post_quant_conv', z, c.latent_channels, { kernel: 1 });
    const d = b.scope('decoder');
    let h = d.conv2d('conv_in', z, boc[boc.length - 1]!, { kernel: 3, pad: 1 });
    h = midBlock(d.scope('mid_block'), h, c);
    const rev = [...boc].reverse();
    rev.forEach((out, i) => {
      const up = d.scope(`up_blocks.${i}`);
      for (let j = 0; j <= c.layers_per_block; j++) h = resnet(up.scope(`resnets.${j}`), h, out, g);
      if (i < rev.length - 1) h = up.conv2d('upsamplers.0.conv', upsampleNearest2x(h), out, { kernel: 3, pad: 1 });
    });
    h = d.groupNorm('conv_norm_out', h, { groups: g, eps: EPS }).silu();
    return { sample: d.conv2d('conv_out', h, c.out_channels, { kernel: 3, pad: 1 }) };
  },
});
