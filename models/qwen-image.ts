// Qwen-Image (diffusers QwenImageTransformer2DModel): 60 dual-stream blocks, joint attention over
// [text, image] tokens, Qwen's 3-axis RoPE with centred image positions; its text encoder is the Qwen2.5-VL
// text model (models/text-encoders/decoder-lm.ts). Compile-only for now.
//
// timestep is what the pipeline passes (t / 1000, in [0, 1]); the model scales it by 1000.
// Inputs beyond diffusers' forward (the DSL has no iota / constant-fill op, so position ids and the
// joint mask come from the caller; `qwenImageRopeIds` in runtime/latents.ts computes the ids exactly as QwenEmbedRope):
//   txt_rope_ids [T, 3], img_rope_ids [N, 3]: positions per RoPE axis (frame, height, width);
//   joint_attention_mask [B, T + N]: diffusers' joint mask `cat([encoder_hidden_states_mask, ones])`
//     (1 keeps a key, 0 drops it); all ones when the prompt is not padded.
import {
  block,
  component,
  concat,
  DslError,
  invalidDim,
  model,
  Pattern,
  repeat,
  ropeTable,
  timestepEmbedding,
  withConfig,
  type Module,
  type Tensor,
} from '../compiler/dsl/index.ts';
import { autoencoderKLWan } from './autoencoder-kl-wan.ts';
import { decoderLm } from './text-encoders/decoder-lm.ts';
import { JOINT_QKV_TP, feedForward, jointAttention, normOutProj } from './flux1.ts';

/** diffusers QwenImageTransformer2DModel config keys (+ the pipeline's vae_scale_factor for dims) */
export interface QwenImageConfig {
  patch_size: number;
  in_channels: number;
  out_channels: number | null;
  num_layers: number;
  attention_head_dim: number;
  num_attention_heads: number;
  joint_attention_dim: number;
  guidance_embeds: boolean;
  axes_dims_rope: number[];
  zero_cond_t: boolean;
  use_additional_t_cond: boolean;
  use_layer3d_rope: boolean;
  /** pipeline: pixels per latent pixel (2^len(vae.temperal_downsample)) */
  vae_scale_factor: number;
}

interface QwenCtx {
  /** silu(temb): img_mod / txt_mod / norm_out start with SiLU */
  temb: Tensor;
  /** RoPE cos/sin table over [text, image] tokens */
  rope: Tensor;
  /** joint key mask [B, T + N] */
  mask: Tensor;
}

const EPS = 1e-6;
/** QwenEmbedRope precomputes 4096 positive and 4096 negative positions per axis */
const ROPE_POSITIONS = 4096;

const inner = (c: QwenImageConfig): number => c.num_attention_heads * c.attention_head_dim;

/** image tokens per side: latent pixels (pixels / vae scale) packed 2x2 */
function tokenGrid(c: QwenImageConfig, d: { height: number; width: number }): { h: number; w: number } {
  const step = c.vae_scale_factor * c.patch_size;
  return { h: d.height / step, w: d.width / step };
}


/** QwenImageTransformerBlock: returns (encoder_hidden_states, hidden_states) = Cache-DiT Pattern_1 */
export const qwenImageBlock = block<QwenImageConfig, QwenCtx>('transformer_blocks', Pattern.P1, (m, s, { temb, rope, mask }, c) => {
  const C = inner(c);
  const H = c.num_attention_heads;
  let hidden = s.hidden;
  let encoder = s.encoder!;
  const T = encoder.dim(1);
  // img_mod / txt_mod = Sequential(SiLU, Linear(dim, 6*dim)); chunks: (shift, scale, gate) x (attn, mlp)
  const [iSh1, iSc1, iG1, iSh2, iSc2, iG2] = m.linear('img_mod.1', temb, 6 * C).chunk(6);
  const [tSh1, tSc1, tG1, tSh2, tSc2, tG2] = m.linear('txt_mod.1', temb, 6 * C).chunk(6);
  const img = m.layerNorm(null, hidden, { eps: EPS }).modulate(iSh1!, iSc1!);
  const txt = m.layerNorm(null, encoder, { eps: EPS }).modulate(tSh1!, tSc1!);

  // joint attention: text first, then image (QwenDoubleStreamAttnProcessor2_0)
  const a = m.scope('attn');
  const [oTxt, oImg] = jointAttention(a, txt, img, { heads: H, headDim: c.attention_head_dim, rope, keyMask: mask });

  hidden = hidden.addGated(iG1!, a.linear('to_out.0', oImg!, C));
  encoder = encoder.addGated(tG1!, a.linear('to_add_out', oTxt!, C));

  const img2 = m.layerNorm(null, hidden, { eps: EPS }).modulate(iSh2!, iSc2!);
  hidden = hidden.addGated(iG2!, feedForward(m.scope('img_mlp'), img2, C));
  const txt2 = m.layerNorm(null, encoder, { eps: EPS }).modulate(tSh2!, tSc2!);
  encoder = encoder.addGated(tG2!, feedForward(m.scope('txt_mlp'), txt2, C));
  return [encoder, hidden];
});

export const qwenImageTransformer = component<QwenImageConfig>({
  component: 'transformer',
  className: 'QwenImageTransformer2DModel',
  // Qwen/Qwen-Image transformer/config.json (= the diffusers constructor defaults)
  config: {
    patch_size: 2,
    in_channels: 64,
    out_channels: 16,
    num_layers: 60,
    attention_head_dim: 128,
    num_attention_heads: 24,
    joint_attention_dim: 3584,
    guidance_embeds: false,
    axes_dims_rope: [16, 56, 56],
    zero_cond_t: false,
    use_additional_t_cond: false,
    use_layer3d_rope: false,
    vae_scale_factor: 8,
  },
  dims: {
    defaults: { batch: 1, height: 1024, width: 1024, textTokens: 512 },
    resolve(c, d) {
      // variants this file does not implement (Qwen-Image-Edit-2511 / Layered): say so instead of tracing something else
      for (const k of ['guidance_embeds', 'zero_cond_t', 'use_additional_t_cond', 'use_layer3d_rope'] as const) {
        if (c[k]) throw new DslError(`config ${k}=true is not supported: this model file implements the text-to-image Qwen-Image transformer only`);
      }
      const step = c.vae_scale_factor * c.patch_size;
      for (const k of ['height', 'width'] as const) {
        if (d[k]! % step !== 0) invalidDim(k, d[k]!, `must be a multiple of ${step} (vae scale ${c.vae_scale_factor} x ${c.patch_size}x${c.patch_size} packing)`);
      }
      const { h, w } = tokenGrid(c, { height: d.height!, width: d.width! });
      const m = Math.max(Math.floor(h / 2), Math.floor(w / 2));
      if (h - Math.floor(h / 2) > ROPE_POSITIONS || w - Math.floor(w / 2) > ROPE_POSITIONS) {
        invalidDim('height/width', Math.max(d.height!, d.width!), `must be at most ${2 * ROPE_POSITIONS * step} (QwenEmbedRope has ${ROPE_POSITIONS} positions per side)`);
      }
      if (m + d.textTokens! > ROPE_POSITIONS) {
        invalidDim('textTokens', d.textTokens!, `must be at most ${ROPE_POSITIONS - m} at this image size (QwenEmbedRope has ${ROPE_POSITIONS} text positions, starting at ${m})`);
      }
      return {
        dims: { B: d.batch!, imageTokens: h * w, textTokens: d.textTokens!, height: d.height!, width: d.width!, tokensH: h, tokensW: w },
        tag: `b${d.batch}-h${d.height}w${d.width}-t${d.textTokens}`,
      };
    },
  },
  inputs(c, d) {
    return {
      hidden_states: [d.B!, d.imageTokens!, c.in_channels],
      encoder_hidden_states: [d.B!, d.textTokens!, c.joint_attention_dim],
      timestep: [d.B!],
      joint_attention_mask: [d.B!, d.textTokens! + d.imageTokens!],
      txt_rope_ids: [d.textTokens!, 3],
      img_rope_ids: [d.imageTokens!, 3],
    };
  },
  forward(b, x, c) {
    const C = inner(c);
    const hidden = b.linear('img_in', x.hidden_states!, C);
    // txt_norm (RMSNorm over joint_attention_dim) -> txt_in
    const encoder = b.linear('txt_in', b.rmsNorm('txt_norm', x.encoder_hidden_states!, { eps: EPS }), C);
    // QwenTimestepProjEmbeddings: Timesteps(256, flip_sin_to_cos, shift 0, scale 1000) -> TimestepEmbedding
    const te = b.scope('time_text_embed').scope('timestep_embedder');
    const tProj = timestepEmbedding(x.timestep!, { dim: 256, flipSinToCos: true, freqShift: 0, scale: 1000 });
    const temb = te.linear('linear_2', te.linear('linear_1', tProj, C, { act: 'silu' }), C);
    const rope = ropeTable(concat([x.txt_rope_ids!, x.img_rope_ids!], 0), { axes: c.axes_dims_rope, theta: 10000 });
    const ctx: QwenCtx = { temb: temb.silu(), rope, mask: x.joint_attention_mask! };

    const out = b.blocks({ name: 'transformer_blocks', pattern: Pattern.P1, blocks: [repeat(qwenImageBlock, 'num_layers')] }, { hidden, encoder }, ctx);

    return { output: normOutProj(b, ctx.temb, out.hidden, C, c) };
  },
});

/** Cache-DiT's Qwen-Image adapter: `transformer_blocks`, Pattern_1, separate CFG (cache-dit.md §6) */
export const QWEN_IMAGE_CACHE = {
  lists: [{ name: 'transformer_blocks', blocks: ['transformer_blocks'], pattern: Pattern.P1 }],
  has_separate_cfg: true,
};

/** Cache-DiT's Qwen-Image TP plan (cache-dit.md §4.7) */
export const QWEN_IMAGE_PARALLEL = {
  attention: 'all' as const,
  tp: {
    ...JOINT_QKV_TP,
    'transformer_blocks.*.img_mlp.net.0.proj': 'colwise',
    'transformer_blocks.*.txt_mlp.net.0.proj': 'colwise',
    'transformer_blocks.*.attn.to_out.0': 'rowwise',
    'transformer_blocks.*.attn.to_add_out': 'rowwise',
    'transformer_blocks.*.img_mlp.net.2': 'rowwise',
    'transformer_blocks.*.txt_mlp.net.2': 'rowwise',
    'transformer_blocks.*.img_mod.1': 'colwise_replicate',
    'transformer_blocks.*.txt_mod.1': 'colwise_replicate',
  } as const,
  cp: {
    split: { hidden_states: 1, encoder_hidden_states: 1, img_rope_ids: 0, txt_rope_ids: 0 },
    gather: { output: 1 },
    dims: { hidden_states: 'imageTokens', encoder_hidden_states: 'textTokens', img_rope_ids: 'imageTokens', txt_rope_ids: 'textTokens' },
    // the joint key mask [text mask | ones] splits per stream (Cache-DiT splits encoder_hidden_states_mask)
    joint: { joint_attention_mask: { axis: 1, dims: ['textTokens', 'imageTokens'] } },
  },
};

function qwenImageRelease(name: string) {
  return model(name, {
    components: { transformer: withConfig(qwenImageTransformer, {}), text_encoder: withConfig(decoderLm, {}), vae: withConfig(autoencoderKLWan, {}) },
    cache: QWEN_IMAGE_CACHE,
    parallel: QWEN_IMAGE_PARALLEL,
  });
}

// Qwen/Qwen-Image (QwenImagePipeline)
export default qwenImageRelease('qwen-image');

/** Qwen/Qwen-Image-2512: the December 2025 update, Qwen-Image's architecture and components with new weights */
export const qwenImage2512 = qwenImageRelease('qwen-image-2512');
