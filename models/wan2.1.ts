// Wan 2.1 text-to-video (diffusers WanPipeline): WanTransformer3DModel, 1.3B and 14B from one file, with the
// UMT5 text encoder and the AutoencoderKLWan decoder.
//
// Layouts follow diffusers: `hidden_states` is the latent video [B, C, F, H, W] and `output` has the
// same layout; timestep is the scheduler's t in [0, 1000]. Inside, tokens are token-major
// [B, F'*H'*W', C] (F' = F / p_t, ...).
// Input beyond diffusers' forward (the DSL has no iota op, so RoPE positions come from the caller;
// `videoRopeIds` in runtime/latents.ts computes them exactly as WanRotaryPosEmbed):
//   rope_ids [N, 3]: (frame, row, column) of every patch token, in token order.
import {
  applyRope,
  attention,
  block,
  component,
  DslError,
  invalidDim,
  model,
  Module,
  Pattern,
  repeat,
  ropeTable,
  timestepEmbedding,
  withConfig,
  type Tensor,
} from '../compiler/dsl/index.ts';
import { autoencoderKLWan } from './autoencoder-kl-wan.ts';
import { umt5Encoder } from './text-encoders/t5-encoder.ts';

/** diffusers WanTransformer3DModel config keys (+ the pipeline's VAE scale factors for dims) */
export interface WanConfig {
  patch_size: number[];
  num_attention_heads: number;
  attention_head_dim: number;
  in_channels: number;
  out_channels: number;
  text_dim: number;
  freq_dim: number;
  ffn_dim: number;
  num_layers: number;
  cross_attn_norm: boolean;
  qk_norm: string | null;
  eps: number;
  image_dim: number | null;
  added_kv_proj_dim: number | null;
  rope_max_seq_len: number;
  pos_embed_seq_len: number | null;
  /** pipeline: latent frames = (frames - 1) / vae_scale_factor_temporal + 1 */
  vae_scale_factor_temporal: number;
  /** pipeline: latent pixels = pixels / vae_scale_factor_spatial */
  vae_scale_factor_spatial: number;
}

interface WanCtx {
  /** timestep_proj [B, 6*dim] (added to each block's scale_shift_table) */
  tproj: Tensor;
  /** RoPE cos/sin table over the video tokens */
  rope: Tensor;
  /** I2V: the image embedder's tokens [B, imageEmbedTokens, dim] (the CLIP image features embedded), else null */
  image: Tensor | null;
}

const inner = (c: WanConfig): number => c.num_attention_heads * c.attention_head_dim;

/** WanRotaryPosEmbed axis dims for head dim D: h = w = 2*(D//6), t = D - h - w (all even when D is) */
function ropeAxes(D: number): number[] {
  if (D % 2 !== 0 || D < 6) throw new DslError(`attention_head_dim ${D} is not supported: WanRotaryPosEmbed needs an even head dim of at least 6`);
  const hw = 2 * Math.floor(D / 6);
  return [D - 2 * hw, hw, hw];
}

/**
 * Permutes the axes of `x` (logical shape `shape`, contiguous) into `perm` order with the DSL's
 * `[b, r, c] -> [b, c, r]` transpose: each step rotates a suffix of the axes (size-1 axes are free).
 */
function permute(x: Tensor, shape: number[], perm: number[]): Tensor {
  let axes = perm.map((_, i) => i).filter((i) => shape[i]! > 1);
  const target = perm.filter((i) => shape[i]! > 1);
  const size = (ax: number[]): number => ax.reduce((a, i) => a * shape[i]!, 1);
  let y = x;
  for (let p = 0; p < target.length; p++) {
    const j = axes.indexOf(target[p]!);
    if (j === p) continue;
    // [outer | axes p..j-1 | axes j..] -> [outer | axes j.. | axes p..j-1]
    const outer = size(axes.slice(0, p));
    const r = size(axes.slice(p, j));
    const c = size(axes.slice(j));
    y = y.reshape(outer, r, c).transpose();
    axes = [...axes.slice(0, p), ...axes.slice(j), ...axes.slice(p, j)];
  }
  return y.reshape(...perm.map((i) => shape[i]!));
}

/** A module whose named weights are stored with another shape (checkpoint layout) and viewed as needed. */
class ReshapedWeights extends Module {
  constructor(
    prefix: string,
    private readonly stored: Record<string, number[]>,
  ) {
    super(prefix);
  }
  override param(name: string, shape: number[]): Tensor {
    const s = this.stored[name];
    return s ? super.param(name, s).reshape(...shape) : super.param(name, shape);
  }
}

/** FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate") */
function feedForward(m: Module, x: Tensor, c: WanConfig): Tensor {
  return m.linear('net.2', m.linear('net.0.proj', x, c.ffn_dim, { act: 'gelu_tanh' }), inner(c));
}

/** WanAttention projections with qk_norm "rms_norm_across_heads": RMSNorm over all heads at once */
function normedQK(a: Module, x: Tensor, kv: Tensor, c: WanConfig): [Tensor, Tensor] {
  const C = inner(c);
  const q = a.rmsNorm('norm_q', a.linear('to_q', x, C), { eps: c.eps });
  const k = a.rmsNorm('norm_k', a.linear('to_k', kv, C), { eps: c.eps });
  return [q, k];
}

/** WanTransformerBlock: (hidden, encoder) -> hidden = Cache-DiT Pattern_2 */
export const wanBlock = block<WanConfig, WanCtx>('blocks', Pattern.P2, (m, s, { tproj, rope, image }, c) => {
  const C = inner(c);
  const H = c.num_attention_heads;
  const B = s.hidden.dim(0);
  const enc = s.encoder!;
  // (scale_shift_table [1, 6, dim] + timestep_proj [B, 6, dim]).chunk(6, dim=1)
  const mod = tproj.reshape(B, 6, C).add(m.param('scale_shift_table', [1, 6, C])).reshape(B, 6 * C);
  const [shMsa, scMsa, gMsa, cShMsa, cScMsa, cGMsa] = mod.chunk(6);

  // 1. self-attention with 3D RoPE
  let hidden = s.hidden;
  const x1 = m.layerNorm(null, hidden, { eps: c.eps }).modulate(shMsa!, scMsa!);
  const a1 = m.scope('attn1');
  const [q1, k1] = normedQK(a1, x1, x1, c);
  const o1 = attention(applyRope(q1, rope, { heads: H }), applyRope(k1, rope, { heads: H }), a1.linear('to_v', x1, C), { heads: H });
  hidden = hidden.addGated(gMsa!, a1.linear('to_out.0', o1, C));

  // 2. cross-attention to the text (norm2 = affine LayerNorm when cross_attn_norm)
  const x2 = c.cross_attn_norm ? m.layerNorm('norm2', hidden, { eps: c.eps }) : hidden;
  const a2 = m.scope('attn2');
  const [q2, k2] = normedQK(a2, x2, enc, c);
  let o2 = attention(q2, k2, a2.linear('to_v', enc, C), { heads: H });
  if (image) {
    // I2V: the same queries attend to the image tokens too (no RoPE, their own k norm), the two outputs summed
    const ki = a2.rmsNorm('norm_added_k', a2.linear('add_k_proj', image, C), { eps: c.eps });
    o2 = o2.add(attention(q2, ki, a2.linear('add_v_proj', image, C), { heads: H }));
  }
  hidden = hidden.add(a2.linear('to_out.0', o2, C));

  // 3. feed-forward
  const x3 = m.layerNorm(null, hidden, { eps: c.eps }).modulate(cShMsa!, cScMsa!);
  return hidden.addGated(cGMsa!, feedForward(m.scope('ffn'), x3, c));
});

interface LatentGrid {
  /** latent frames / height / width */
  F: number;
  Hl: number;
  Wl: number;
}

function latentGrid(c: WanConfig, d: Record<string, number>): LatentGrid {
  return { F: (d.frames! - 1) / c.vae_scale_factor_temporal + 1, Hl: d.height! / c.vae_scale_factor_spatial, Wl: d.width! / c.vae_scale_factor_spatial };
}

export const wanTransformer = component<WanConfig>({
  component: 'transformer',
  className: 'WanTransformer3DModel',
  // Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json (the 1.3B overrides heads, ffn, layers)
  config: {
    patch_size: [1, 2, 2],
    num_attention_heads: 40,
    attention_head_dim: 128,
    in_channels: 16,
    out_channels: 16,
    text_dim: 4096,
    freq_dim: 256,
    ffn_dim: 13824,
    num_layers: 40,
    cross_attn_norm: true,
    qk_norm: 'rms_norm_across_heads',
    eps: 1e-6,
    image_dim: null,
    added_kv_proj_dim: null,
    rope_max_seq_len: 1024,
    pos_embed_seq_len: null,
    vae_scale_factor_temporal: 4,
    vae_scale_factor_spatial: 8,
  },
  dims: {
    // the Wan 2.1 T2V pipeline defaults: 81 frames of 480x832, 512 UMT5 tokens
    // imageEmbedTokens: I2V's CLIP image tokens (ViT-H/14 at 224: 256 patches + the class token)
    defaults: { batch: 1, frames: 81, height: 480, width: 832, textTokens: 512, imageEmbedTokens: 257 },
    resolve(c, d) {
      if (c.qk_norm !== 'rms_norm_across_heads') throw new DslError(`config qk_norm=${String(c.qk_norm)} is not supported (this file implements 'rms_norm_across_heads')`);
      if ((c.image_dim === null) !== (c.added_kv_proj_dim === null)) throw new DslError(`image_dim ${String(c.image_dim)} and added_kv_proj_dim ${String(c.added_kv_proj_dim)}: Wan I2V sets both (the image embedder and the image keys / values), text-to-video neither`);
      if (c.added_kv_proj_dim !== null && c.added_kv_proj_dim !== inner(c)) throw new DslError(`added_kv_proj_dim ${c.added_kv_proj_dim} must equal the inner dim ${inner(c)} (the embedded image tokens' width)`);
      if (c.pos_embed_seq_len !== null) throw new DslError('pos_embed_seq_len (Wan FLF2V: first and last frame image tokens) is not supported yet; Wan I2V has none');
      if (c.patch_size.length !== 3) throw new DslError(`config patch_size must have 3 entries (t, h, w), got [${c.patch_size.join(', ')}]`);
      ropeAxes(c.attention_head_dim);
      const [pt, ph, pw] = c.patch_size as [number, number, number];
      const ft = c.vae_scale_factor_temporal;
      if ((d.frames! - 1) % ft !== 0) {
        invalidDim('frames', d.frames!, `must be ${ft}k+1 (1, ${ft + 1}, ${2 * ft + 1}, ...: the VAE compresses time ${ft}x after the first frame)`);
      }
      const sh = c.vae_scale_factor_spatial * ph;
      const sw = c.vae_scale_factor_spatial * pw;
      if (d.height! % sh !== 0) invalidDim('height', d.height!, `must be a multiple of ${sh} (vae scale ${c.vae_scale_factor_spatial} x patch ${ph})`);
      if (d.width! % sw !== 0) invalidDim('width', d.width!, `must be a multiple of ${sw} (vae scale ${c.vae_scale_factor_spatial} x patch ${pw})`);
      const g = latentGrid(c, d);
      if (g.F % pt !== 0) invalidDim('frames', d.frames!, `gives ${g.F} latent frames, not a multiple of the temporal patch ${pt}`);
      const [fp, hp, wp] = [g.F / pt, g.Hl / ph, g.Wl / pw];
      if (Math.max(fp, hp, wp) > c.rope_max_seq_len) {
        const which = fp > c.rope_max_seq_len ? 'frames' : hp > c.rope_max_seq_len ? 'height' : 'width';
        invalidDim(which, d[which]!, `gives more than rope_max_seq_len=${c.rope_max_seq_len} patches along one axis`);
      }
      return {
        dims: { B: d.batch!, frames: d.frames!, height: d.height!, width: d.width!, latentFrames: g.F, latentHeight: g.Hl, latentWidth: g.Wl, tokensF: fp, tokensH: hp, tokensW: wp, imageTokens: fp * hp * wp, textTokens: d.textTokens!, imageEmbedTokens: d.imageEmbedTokens! },
        tag: `b${d.batch}-f${d.frames}-h${d.height}w${d.width}-t${d.textTokens}`,
      };
    },
  },
  inputs(c, d) {
    const ins: Record<string, number[]> = {
      hidden_states: [d.B!, c.in_channels, d.latentFrames!, d.latentHeight!, d.latentWidth!],
      timestep: [d.B!],
      encoder_hidden_states: [d.B!, d.textTokens!, c.text_dim],
      rope_ids: [d.imageTokens!, 3],
    };
    // I2V: the CLIP vision encoder's penultimate hidden states
    if (c.image_dim !== null) ins.encoder_hidden_states_image = [d.B!, d.imageEmbedTokens!, c.image_dim];
    return ins;
  },
  forward(b, x, c, d) {
    const C = inner(c);
    const B = d.B!;
    const [pt, ph, pw] = c.patch_size as [number, number, number];
    const [fp, hp, wp] = [d.tokensF!, d.tokensH!, d.tokensW!];
    const Cin = c.in_channels;
    const N = fp * hp * wp;

    // 1. patch_embedding = Conv3d(kernel = stride = patch): patchify into tokens [B, N, Cin*pt*ph*pw]
    //    (feature order c, kt, kh, kw = the Conv3d weight's) and apply the 5-D weight as a linear
    const video = [B, Cin, fp, pt, hp, ph, wp, pw];
    const patches = permute(x.hidden_states!, video, [0, 2, 4, 6, 1, 3, 5, 7]).reshape(B, N, Cin * pt * ph * pw);
    const pe = new ReshapedWeights('', { 'patch_embedding.weight': [C, Cin, pt, ph, pw] });
    const hidden = pe.linear('patch_embedding', patches, C);
    const rope = ropeTable(x.rope_ids!, { axes: ropeAxes(c.attention_head_dim), theta: 10000 });

    // 2. condition_embedder: time (Timesteps(freq_dim, flip_sin_to_cos, shift 0) -> MLP), time_proj, text
    const ce = b.scope('condition_embedder');
    const te = ce.scope('time_embedder');
    const tFreq = timestepEmbedding(x.timestep!, { dim: c.freq_dim, flipSinToCos: true, freqShift: 0 });
    const temb = te.linear('linear_2', te.linear('linear_1', tFreq, C, { act: 'silu' }), C);
    const tproj = ce.linear('time_proj', temb.silu(), 6 * C);
    const tx = ce.scope('text_embedder');
    const encoder = tx.linear('linear_2', tx.linear('linear_1', x.encoder_hidden_states!, C, { act: 'gelu_tanh' }), C);
    // I2V: WanImageEmbedding = FP32LayerNorm (eps 1e-5) -> FeedForward(mult 1, exact GELU) -> FP32LayerNorm
    let image: Tensor | null = null;
    if (c.image_dim !== null) {
      const ie = ce.scope('image_embedder');
      const n1 = ie.layerNorm('norm1', x.encoder_hidden_states_image!, { eps: 1e-5 });
      const ff = ie.scope('ff');
      image = ie.layerNorm('norm2', ff.linear('net.2', ff.linear('net.0.proj', n1, c.image_dim).geluErf(), C), { eps: 1e-5 });
    }

    // 3. blocks (Cache-DiT: `blocks`, Pattern_2)
    const out = b.blocks({ name: 'blocks', pattern: Pattern.P2, blocks: [repeat(wanBlock, 'num_layers')] }, { hidden, encoder }, { tproj, rope, image });

    // 4. head: (scale_shift_table [1, 2, dim] + temb) -> shift, scale; LayerNorm (no affine); proj_out
    const ss = temb.reshape(B, 1, C).add(b.param('scale_shift_table', [1, 2, C])).reshape(B, 2 * C);
    const [shift, scale] = ss.chunk(2);
    const h = b.layerNorm(null, out.hidden, { eps: c.eps }).modulate(shift!, scale!);
    const Cout = c.out_channels;
    const y = b.linear('proj_out', h, Cout * pt * ph * pw);

    // 5. unpatchify: [B, F', H', W', pt, ph, pw, Cout] -> [B, Cout, F'*pt, H'*ph, W'*pw]
    const tokens = [B, fp, hp, wp, pt, ph, pw, Cout];
    const output = permute(y, tokens, [0, 7, 1, 4, 2, 5, 3, 6]).reshape(B, Cout, fp * pt, hp * ph, wp * pw);
    return { output };
  },
});

/** Cache-DiT's Wan adapter: `blocks`, Pattern_2, separate CFG (cache-dit.md §6) */
export const WAN_CACHE = {
  lists: [{ name: 'blocks', blocks: ['blocks'], pattern: Pattern.P2 }],
  has_separate_cfg: true,
};

/**
 * Cache-DiT's Wan TP plan (cache-dit.md §4.7) and CP plan (§4.8, distributed/transformers/wan.py): the
 * tokens are split inside the model, so the patch embedding and the unpatchify run on full tensors on every
 * rank. `blocks.0.hidden` = Cache-DiT's `blocks.0` hidden_states split; Cache-DiT splits the `rope` module's
 * outputs, here the table is computed row by row from `rope_ids`, so splitting the id rows gives every rank
 * exactly its rows of the table (without building the full one); `proj_out` is gathered before the
 * unpatchify. The text (`encoder_hidden_states`) stays whole: the cross attention attends the rank's queries
 * to all text keys locally, as Cache-DiT's patched WanAttnProcessor (cp_config=None for attn2) does.
 */
export const WAN_PARALLEL = {
  attention: 'all' as const,
  cp: {
    split: {},
    gather: {},
    dims: { rope_ids: 'imageTokens', 'blocks.0.hidden': 'imageTokens' },
    internal: { split: { rope_ids: 0, 'blocks.0.hidden': 1 }, gather: { proj_out: 1 } },
  },
  tp: {
    'blocks.*.attn1.to_q': 'colwise',
    'blocks.*.attn1.to_k': 'colwise',
    'blocks.*.attn1.to_v': 'colwise',
    'blocks.*.attn2.to_q': 'colwise',
    'blocks.*.attn2.to_k': 'colwise',
    'blocks.*.attn2.to_v': 'colwise',
    // I2V's image keys / values (Cache-DiT adds them when present)
    'blocks.*.attn2.add_k_proj': 'colwise',
    'blocks.*.attn2.add_v_proj': 'colwise',
    'blocks.*.ffn.net.0.proj': 'colwise',
    'blocks.*.attn1.to_out.0': 'rowwise',
    'blocks.*.attn2.to_out.0': 'rowwise',
    'blocks.*.ffn.net.2': 'rowwise',
  } as const,
};

/** Wan-AI/Wan2.1-T2V-14B-Diffusers */
export const wan21T2V14B = model('wan2.1-t2v-14b', {
  components: { transformer: withConfig(wanTransformer, {}), text_encoder: withConfig(umt5Encoder, {}), vae: withConfig(autoencoderKLWan, {}) },
  cache: WAN_CACHE,
  parallel: WAN_PARALLEL,
});

/**
 * Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (scripts/convert_wan_to_diffusers.py "Wan-I2V-14B-480p"): the 14B
 * transformer with 36 input channels (the noise, the first-frame mask and the encoded image) and the CLIP image
 * features (1280) as extra keys / values of every cross attention; UMT5 and the Wan VAE as for text-to-video
 */
export const wan21I2V14B = model('wan2.1-i2v-14b', {
  components: { transformer: withConfig(wanTransformer, { in_channels: 36, image_dim: 1280, added_kv_proj_dim: 5120 }), text_encoder: withConfig(umt5Encoder, {}), vae: withConfig(autoencoderKLWan, {}) },
  cache: WAN_CACHE,
  parallel: WAN_PARALLEL,
});

/** Wan-AI/Wan2.1-T2V-1.3B-Diffusers */
export const wan21T2V13B = model('wan2.1-t2v-1.3b', {
  components: { transformer: withConfig(wanTransformer, { num_attention_heads: 12, ffn_dim: 8960, num_layers: 30 }), text_encoder: withConfig(umt5Encoder, {}), vae: withConfig(autoencoderKLWan, {}) },
  cache: WAN_CACHE,
  parallel: WAN_PARALLEL,
});

/**
 * Wan-AI/Wan2.2-T2V-A14B-Diffusers: two experts of the 14B transformer's config (transformer for the high-noise
 * steps, transformer_2 for the rest, switched at model_index.json's boundary_ratio 0.875 by the pipeline); the
 * Wan 2.1 VAE and UMT5. Each expert compiles as this `transformer` (a directory's transformer_2/config.json
 * is compiled the same way: runtime/pipelines/wan.ts).
 */
export const wan22T2VA14B = model('wan2.2-t2v-a14b', {
  components: { transformer: withConfig(wanTransformer, {}), text_encoder: withConfig(umt5Encoder, {}), vae: withConfig(autoencoderKLWan, {}) },
  cache: WAN_CACHE,
  parallel: WAN_PARALLEL,
});
