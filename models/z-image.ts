// Z-Image (diffusers ZImageTransformer2DModel, Tongyi-MAI/Z-Image-Turbo): single-stream DiT. The image
// patches run 2 modulated noise_refiner blocks, the caption features (Qwen3's second-to-last hidden state)
// 2 unmodulated context_refiner blocks, then the unified sequence [image, caption] runs the main `layers`
// (Cache-DiT Pattern_3) and the final layer. Each block: RMSNorm -> x (1 + scale) -> attention (per-head
// RMSNorm of q / k, interleaved 3-axis RoPE) -> RMSNorm -> tanh-gated residual; the same around the SwiGLU
// feed-forward. Its text encoder is Qwen3 (models/text-encoders/decoder-lm.ts), its VAE FLUX's AutoencoderKL.
//
// The caller (runtime/pipelines/z-image.ts) does diffusers' patchify_and_embed, which the DSL cannot:
//   hidden_states [B, N, 4C]: 2x2 patches, channels innermost (p_h, p_w, c), padded to a multiple of 32
//     tokens by repeating the last patch; x_pad_mask [N, 1] 1 on those rows (their embeddings become
//     x_pad_token);
//   encoder_hidden_states [B, T, cap_feat_dim]: the prompt's unpadded embeddings padded to a multiple of 32
//     by repeating the last row; cap_pad_mask [T, 1] (the rows become cap_pad_token);
//   img_rope_ids [N, 3], cap_rope_ids [T, 3]: the coordinate grids (caption (1 + i, 0, 0); image
//     (T + 1, y, x); image padding (0, 0, 0)).
// timestep is what the pipeline passes ((1000 - t) / 1000); the model scales it by t_scale. Every padded
// token takes part in attention as in diffusers (no mask: one prompt per forward).
import { applyRope, attention, block, component, concat, dense, DslError, invalidDim, model, Pattern, repeat, ropeTable, timestepEmbedding, withConfig, type Module, type Tensor } from '../compiler/dsl/index.ts';
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { decoderLm } from './text-encoders/decoder-lm.ts';
import { QWEN3_4B } from './text-encoders/qwen3.ts';

/** diffusers ZImageTransformer2DModel config keys (+ the pipeline's vae_scale_factor for dims) */
export interface ZImageConfig {
  all_patch_size: number[];
  all_f_patch_size: number[];
  in_channels: number;
  dim: number;
  n_layers: number;
  n_refiner_layers: number;
  n_heads: number;
  n_kv_heads: number;
  norm_eps: number;
  qk_norm: boolean;
  cap_feat_dim: number;
  siglip_feat_dim: number | null;
  rope_theta: number;
  t_scale: number;
  axes_dims: number[];
  axes_lens: number[];
  /** pipeline: pixels per latent pixel */
  vae_scale_factor: number;
}

/** diffusers' ADALN_EMBED_DIM and SEQ_MULTI_OF */
const ADALN_DIM = 256;
export const Z_IMAGE_SEQ_MULTIPLE = 32;

interface ZCtx {
  /** t_embedder(t * t_scale) [B, min(dim, 256)] */
  adaln: Tensor | null;
  rope: Tensor;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;

/** ZSingleStreamAttnProcessor: q / k / v, per-head RMSNorm, interleaved RoPE, SDPA without a mask, to_out.0 */
function zAttention(a: Module, x: Tensor, rope: Tensor, c: ZImageConfig): Tensor {
  const heads = c.n_heads;
  const qk = (proj: string, norm: string): Tensor => {
    const t = a.linear(proj, x, c.dim, { bias: false });
    return applyRope(c.qk_norm ? a.headRmsNorm(norm, t, { heads, eps: 1e-5 }) : t, rope, { heads });
  };
  const o = attention(qk('to_q', 'norm_q'), qk('to_k', 'norm_k'), a.linear('to_v', x, c.dim, { bias: false }), { heads });
  return a.linear('to_out.0', o, c.dim, { bias: false });
}

/** FeedForward: w2(silu(w1 x) * w3 x), hidden int(dim / 3 * 8) */
function zFeedForward(m: Module, x: Tensor, c: ZImageConfig): Tensor {
  const hidden = Math.floor((c.dim / 3) * 8);
  return m.linear('w2', m.linear('w1', x, hidden, { bias: false, act: 'silu' }).mul(m.linear('w3', x, hidden, { bias: false })), c.dim, { bias: false });
}

/** ZImageTransformerBlock with or without adaLN modulation (the context refiner has none) */
function zBlockBody(m: Module, x: Tensor, ctx: ZCtx, c: ZImageConfig): Tensor {
  const eps = c.norm_eps;
  const attn = (h: Tensor): Tensor => zAttention(m.scope('attention'), h, ctx.rope, c);
  if (!ctx.adaln) {
    x = x.add(m.rmsNorm('attention_norm2', attn(m.rmsNorm('attention_norm1', x, { eps })), { eps }));
    return x.add(m.rmsNorm('ffn_norm2', zFeedForward(m.scope('feed_forward'), m.rmsNorm('ffn_norm1', x, { eps }), c), { eps }));
  }
  // adaLN_modulation = Sequential(Linear(min(dim, 256), 4 dim)): scale_msa, gate_msa, scale_mlp, gate_mlp
  const [scMsa, gMsa, scMlp, gMlp] = m.linear('adaLN_modulation.0', ctx.adaln, 4 * c.dim).chunk(4);
  const a = attn(m.rmsNorm('attention_norm1', x, { eps }).gate(scMsa!.add(1)));
  x = x.addGated(gMsa!.tanh(), m.rmsNorm('attention_norm2', a, { eps }));
  const f = zFeedForward(m.scope('feed_forward'), m.rmsNorm('ffn_norm1', x, { eps }).gate(scMlp!.add(1)), c);
  return x.addGated(gMlp!.tanh(), m.rmsNorm('ffn_norm2', f, { eps }));
}

/** a main-layer block (the unified sequence; Cache-DiT caches these) */
export const zImageLayer = block<ZImageConfig, ZCtx>('layers', Pattern.P3, (m, s, ctx, c) => zBlockBody(m, s.hidden, ctx, c));

/**
 * `where(mask, pad_token, x)` with mask [N, 1] of 0 / 1, exact (x * 1 + 0 = x; x * 0 + pad = pad). The [N, 1]
 * -> [N, dim] broadcasts are one-column GEMMs (mask x pad, keep x ones): a stride-0 channel axis is no copy3d.
 */
function padTokens(b: Module, name: string, x: Tensor, mask: Tensor, dim: number): Tensor {
  const pad = b.param(name, [1, dim]).reshape(dim, 1);
  const ones = pad.scale(0).add(1);
  return x.mul(dense(mask.neg().add(1), ones)).add(dense(mask, pad));
}

export const zImageTransformer = component<ZImageConfig>({
  component: 'transformer',
  className: 'ZImageTransformer2DModel',
  // Tongyi-MAI/Z-Image-Turbo transformer/config.json
  config: {
    all_patch_size: [2],
    all_f_patch_size: [1],
    in_channels: 16,
    dim: 3840,
    n_layers: 30,
    n_refiner_layers: 2,
    n_heads: 30,
    n_kv_heads: 30,
    norm_eps: 1e-5,
    qk_norm: true,
    cap_feat_dim: 2560,
    siglip_feat_dim: null,
    rope_theta: 256.0,
    t_scale: 1000.0,
    axes_dims: [32, 48, 48],
    axes_lens: [1536, 512, 512],
    vae_scale_factor: 8,
  },
  dims: {
    defaults: { batch: 1, height: 1024, width: 1024, textTokens: 512 },
    resolve(c, d) {
      if (c.all_patch_size.length !== 1 || c.all_patch_size[0] !== 2 || c.all_f_patch_size.length !== 1 || c.all_f_patch_size[0] !== 1) {
        throw new DslError(`all_patch_size ${JSON.stringify(c.all_patch_size)} / all_f_patch_size ${JSON.stringify(c.all_f_patch_size)}: only patch 2, frame patch 1 (Z-Image's text-to-image) is supported`);
      }
      if (c.siglip_feat_dim !== null) throw new DslError('siglip_feat_dim is set (Z-Image Omni): only the text-to-image transformer is supported');
      if (c.n_kv_heads !== c.n_heads) throw new DslError(`n_kv_heads ${c.n_kv_heads} differs from n_heads ${c.n_heads}: diffusers' Z-Image attention has as many key/value heads as query heads`);
      const D = c.dim / c.n_heads;
      if (!Number.isInteger(D) || c.axes_dims.reduce((a, b) => a + b, 0) !== D) throw new DslError(`axes_dims ${JSON.stringify(c.axes_dims)} must sum to the head dim ${D} (dim ${c.dim} / n_heads ${c.n_heads})`);
      const step = c.vae_scale_factor * 2;
      for (const k of ['height', 'width'] as const) {
        if (d[k]! % step !== 0) invalidDim(k, d[k]!, `must be a multiple of ${step} (vae scale ${c.vae_scale_factor} x 2x2 patches)`);
      }
      const T = d.textTokens!;
      if (T < Z_IMAGE_SEQ_MULTIPLE || T % Z_IMAGE_SEQ_MULTIPLE !== 0) invalidDim('textTokens', T, `must be a positive multiple of ${Z_IMAGE_SEQ_MULTIPLE} (the caption is padded to one)`);
      const h = d.height! / step;
      const w = d.width! / step;
      if (h > c.axes_lens[1]! || w > c.axes_lens[2]!) invalidDim('height/width', Math.max(d.height!, d.width!), `gives ${h}x${w} patches; the RoPE tables hold ${c.axes_lens[1]}x${c.axes_lens[2]}`);
      if (T + 1 >= c.axes_lens[0]!) invalidDim('textTokens', T, `must be below ${c.axes_lens[0]! - 1} (the frame axis of the RoPE table holds ${c.axes_lens[0]} positions)`);
      return {
        dims: { B: d.batch!, height: d.height!, width: d.width!, tokensH: h, tokensW: w, imageTokens: roundUp(h * w, Z_IMAGE_SEQ_MULTIPLE), textTokens: T },
        tag: `b${d.batch}-h${d.height}w${d.width}-t${T}`,
      };
    },
  },
  inputs(c, d) {
    return {
      hidden_states: [d.B!, d.imageTokens!, 4 * c.in_channels],
      x_pad_mask: [d.imageTokens!, 1],
      encoder_hidden_states: [d.B!, d.textTokens!, c.cap_feat_dim],
      cap_pad_mask: [d.textTokens!, 1],
      timestep: [d.B!],
      img_rope_ids: [d.imageTokens!, 3],
      cap_rope_ids: [d.textTokens!, 3],
    };
  },
  forward(b, x, c) {
    const N = x.hidden_states!.dim(1);
    // TimestepEmbedder(min(dim, 256), mid 1024): timestep_embedding(t * t_scale, 256) [cos, sin] -> MLP
    const te = b.scope('t_embedder');
    const tFreq = timestepEmbedding(x.timestep!, { dim: 256, flipSinToCos: true, freqShift: 0, scale: c.t_scale });
    const adaln = te.linear('mlp.2', te.linear('mlp.0', tFreq, 1024, { act: 'silu' }), Math.min(c.dim, ADALN_DIM));
    const theta = c.rope_theta;
    const imgRope = ropeTable(x.img_rope_ids!, { axes: c.axes_dims, theta });
    const capRope = ropeTable(x.cap_rope_ids!, { axes: c.axes_dims, theta });

    let img = padTokens(b, 'x_pad_token', b.linear('all_x_embedder.2-1', x.hidden_states!, c.dim), x.x_pad_mask!, c.dim);
    const ref = (name: string, h: Tensor, ctx: ZCtx): Tensor => {
      for (let i = 0; i < c.n_refiner_layers; i++) h = zBlockBody(b.scope(`${name}.${i}`), h, ctx, c);
      return h;
    };
    img = ref('noise_refiner', img, { adaln, rope: imgRope });
    const ce = b.scope('cap_embedder');
    let cap = ce.linear('1', ce.rmsNorm('0', x.encoder_hidden_states!, { eps: c.norm_eps }), c.dim);
    cap = padTokens(b, 'cap_pad_token', cap, x.cap_pad_mask!, c.dim);
    cap = ref('context_refiner', cap, { adaln: null, rope: capRope });

    // the unified sequence [image, caption]; its RoPE rows in the same order
    const unified = concat([img, cap], 1);
    const rope = ropeTable(concat([x.img_rope_ids!, x.cap_rope_ids!], 0), { axes: c.axes_dims, theta });
    const out = b.blocks({ name: 'layers', pattern: Pattern.P3, blocks: [repeat(zImageLayer, 'n_layers')] }, { hidden: unified }, { adaln, rope });

    // FinalLayer: LayerNorm (no affine, eps 1e-6) x (1 + Linear(SiLU(c))) -> Linear to 2*2*C
    const f = b.scope('all_final_layer.2-1');
    const scale = f.linear('adaLN_modulation.1', adaln.silu(), c.dim).add(1);
    const y = f.linear('linear', f.layerNorm(null, out.hidden, { eps: 1e-6 }).gate(scale), 4 * c.in_channels);
    return { output: y.slice(1, 0, N) };
  },
});

/**
 * Cache-DiT's Z-Image adapter: the main `layers`, Pattern_3. Its has_separate_cfg stays False there because
 * ZImagePipeline batches cond and uncond in one call (one decision over the batch); here the branches are two
 * calls (cond, then uncond), so each keeps its own context, as for the other families.
 */
export const Z_IMAGE_CACHE = {
  lists: [{ name: 'layers', blocks: ['layers'], pattern: Pattern.P3 }],
  has_separate_cfg: true,
};

/** Cache-DiT's Z-Image TP plan (cache-dit.md §4.7): attention q / k / v and w1 / w3 colwise, to_out / w2 rowwise; adaLN replicated */
const zTp = (list: string) =>
  ({
    [`${list}.*.attention.to_q`]: 'colwise',
    [`${list}.*.attention.to_k`]: 'colwise',
    [`${list}.*.attention.to_v`]: 'colwise',
    [`${list}.*.attention.to_out.0`]: 'rowwise',
    [`${list}.*.feed_forward.w1`]: 'colwise',
    [`${list}.*.feed_forward.w3`]: 'colwise',
    [`${list}.*.feed_forward.w2`]: 'rowwise',
  }) as const;

export const Z_IMAGE_PARALLEL = {
  attention: 'all' as const,
  tp: { ...zTp('noise_refiner'), ...zTp('context_refiner'), ...zTp('layers') },
  // Ulysses: image and caption tokens (with their pad masks and RoPE rows) split at entry, so every rank's
  // unified sequence is [its image shard, its caption shard]; the attentions' all-to-alls see every rank's
  // tokens (key order changes only the softmax sum order); the image rows of the output gathered
  cp: {
    split: { hidden_states: 1, x_pad_mask: 0, img_rope_ids: 0, encoder_hidden_states: 1, cap_pad_mask: 0, cap_rope_ids: 0 },
    gather: { output: 1 },
    dims: { hidden_states: 'imageTokens', x_pad_mask: 'imageTokens', img_rope_ids: 'imageTokens', encoder_hidden_states: 'textTokens', cap_pad_mask: 'textTokens', cap_rope_ids: 'textTokens' },
  },
};

/** Qwen3-4B as Z-Image-Turbo's text_encoder (Qwen3Model: no "model." prefix), its second-to-last hidden state */
const Z_IMAGE_TEXT = { ...QWEN3_4B, weight_prefix: '', output_hidden_state: -2 };

/** FLUX.1's AutoencoderKL (16 latent channels), as Z-Image-Turbo ships it */
const Z_IMAGE_VAE = { latent_channels: 16, block_out_channels: [128, 256, 512, 512], scaling_factor: 0.3611, shift_factor: 0.1159, use_post_quant_conv: false };

export default model('z-image-turbo', {
  components: { transformer: withConfig(zImageTransformer, {}), text_encoder: withConfig(decoderLm, Z_IMAGE_TEXT), vae: withConfig(autoencoderKL, Z_IMAGE_VAE), vae_encoder: withConfig(autoencoderKLEncoder, Z_IMAGE_VAE) },
  cache: Z_IMAGE_CACHE,
  parallel: Z_IMAGE_PARALLEL,
});
