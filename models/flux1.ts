// FLUX.1 (diffusers FluxTransformer2DModel) in one file. The config decides the size: the tiny
// model (models/tiny-flux/transformer/config.json) and FLUX.1-dev use this file unchanged.
import {
  applyRope,
  attention,
  block,
  component,
  concat,
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
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { clipTextModel } from './text-encoders/clip-text.ts';
import { t5Encoder } from './text-encoders/t5-encoder.ts';

/** diffusers FluxTransformer2DModel config keys (+ the pipeline's vae_scale_factor for dims) */
export interface FluxConfig {
  patch_size: number;
  in_channels: number;
  out_channels: number | null;
  num_layers: number;
  num_single_layers: number;
  attention_head_dim: number;
  num_attention_heads: number;
  joint_attention_dim: number;
  pooled_projection_dim: number;
  guidance_embeds: boolean;
  axes_dims_rope: number[];
  /** pipeline: pixels per latent pixel (2^(len(vae.block_out_channels)-1)) */
  vae_scale_factor: number;
  /**
   * not a diffusers key: the MLPs' activation. FLUX.1's tanh GELU, or the SwiGLU of FLUX-layout models that
   * gate it (Ovis-Image: FeedForward(activation_fn="swiglu") and a doubled proj_mlp)
   */
  mlp_act?: 'gelu_tanh' | 'swiglu';
}

/** what the embeddings hand every block */
interface FluxCtx {
  /** silu(temb): every AdaLayerNorm* linear takes it */
  temb: Tensor;
  /** RoPE cos/sin table over [text, image] tokens */
  rope: Tensor;
}

const EPS = 1e-6;

const inner = (c: FluxConfig): number => c.num_attention_heads * c.attention_head_dim;

/**
 * FeedForward(dim, activation_fn="gelu-approximate"): net.0.proj -> GELU(tanh) -> net.2; "swiglu": net.0.proj to
 * [hidden | gate] (one fused weight), hidden * silu(gate) (diffusers SwiGLU), net.2
 */
export function feedForward(m: Module, x: Tensor, dim: number, act: FluxConfig['mlp_act'] = 'gelu_tanh'): Tensor {
  const I = 4 * dim;
  return m.linear('net.2', act === 'swiglu' ? swiglu(m.linear('net.0.proj', x, 2 * I, { parts: [I, I] })) : m.linear('net.0.proj', x, I, { act: 'gelu_tanh' }), dim);
}

/** diffusers SwiGLU on a fused projection: its first half times silu(its second half) */
function swiglu(x: Tensor): Tensor {
  const [h, g] = x.chunk(2);
  return h!.mul(g!.silu());
}

/**
 * The head after the blocks: norm_out = AdaLayerNormContinuous (no affine; scale first, then shift, from
 * linear(temb)), then proj_out to patch_size^2 * out_channels (default in_channels) per token. FLUX.2's
 * has no biases (`bias: false`).
 */
export function normOutProj(b: Module, temb: Tensor, hidden: Tensor, C: number, c: Pick<FluxConfig, 'patch_size' | 'in_channels' | 'out_channels'>, o: { bias?: boolean } = {}): Tensor {
  const bias = o.bias !== false;
  const [scale, shift] = b.linear('norm_out.linear', temb, 2 * C, { bias }).chunk(2);
  const h = b.layerNorm(null, hidden, { eps: EPS }).modulate(shift!, scale!);
  const outC = c.out_channels ?? c.in_channels;
  return b.linear('proj_out', h, c.patch_size * c.patch_size * outC, { bias });
}

/** q or k of one stream: projection, per-head RMSNorm, RoPE with the stream's rows of the table */
/** q or k projection + per-head RMSNorm + RoPE (rows row0.. of the table) */
function qk(a: Module, proj: string, norm: string, x: Tensor, rope: Tensor, row0: number, heads: number, headDim: number): Tensor {
  const h = a.headRmsNorm(norm, a.linear(proj, x, heads * headDim), { heads, eps: EPS });
  return applyRope(h, rope, { heads, row0 });
}

/**
 * diffusers' joint text+image attention (FluxAttnProcessor, QwenDoubleStreamAttnProcessor): text tokens
 * first, per-head RMSNorm + RoPE on q/k of both streams; returns [text out, image out] before the
 * output projections.
 */
export function jointAttention(a: Module, txt: Tensor, img: Tensor, o: { heads: number; headDim: number; rope: Tensor; keyMask?: Tensor }): [Tensor, Tensor] {
  const T = txt.dim(1);
  const { heads, headDim, rope } = o;
  const q = concat([qk(a, 'add_q_proj', 'norm_added_q', txt, rope, 0, heads, headDim), qk(a, 'to_q', 'norm_q', img, rope, T, heads, headDim)], 1);
  const k = concat([qk(a, 'add_k_proj', 'norm_added_k', txt, rope, 0, heads, headDim), qk(a, 'to_k', 'norm_k', img, rope, T, heads, headDim)], 1);
  const v = concat([a.linear('add_v_proj', txt, heads * headDim), a.linear('to_v', img, heads * headDim)], 1);
  const [ot, oi] = attention(q, k, v, { heads, ...(o.keyMask ? { keyMask: o.keyMask } : {}) }).split([T, img.dim(1)], 1);
  return [ot!, oi!];
}

/** FluxTransformerBlock (double stream): AdaLayerNormZero x2, joint attention, two FFNs */
export const dualBlock = block<FluxConfig, FluxCtx>('transformer_blocks', Pattern.P1, (m, s, { temb, rope }, c) => {
  const C = inner(c);
  let hidden = s.hidden;
  let encoder = s.encoder!;
  const [shMsa, scMsa, gMsa, shMlp, scMlp, gMlp] = m.linear('norm1.linear', temb, 6 * C).chunk(6);
  const [cShMsa, cScMsa, cGMsa, cShMlp, cScMlp, cGMlp] = m.linear('norm1_context.linear', temb, 6 * C).chunk(6);
  const nh = m.layerNorm(null, hidden, { eps: EPS }).modulate(shMsa!, scMsa!);
  const ne = m.layerNorm(null, encoder, { eps: EPS }).modulate(cShMsa!, cScMsa!);

  // joint attention: text tokens first, then image tokens
  const a = m.scope('attn');
  const [oe, oh] = jointAttention(a, ne, nh, { heads: c.num_attention_heads, headDim: c.attention_head_dim, rope });

  hidden = hidden.addGated(gMsa!, a.linear('to_out.0', oh!, C));
  const nh2 = m.layerNorm(null, hidden, { eps: EPS }).modulate(shMlp!, scMlp!);
  hidden = hidden.addGated(gMlp!, feedForward(m.scope('ff'), nh2, C, c.mlp_act));

  encoder = encoder.addGated(cGMsa!, a.linear('to_add_out', oe!, C));
  const ne2 = m.layerNorm(null, encoder, { eps: EPS }).modulate(cShMlp!, cScMlp!);
  encoder = encoder.addGated(cGMlp!, feedForward(m.scope('ff_context'), ne2, C, c.mlp_act));
  return { hidden, encoder };
});

/** FluxSingleTransformerBlock: runs on cat([text, image]) and splits again (diffusers >= 0.35) */
export const singleBlock = block<FluxConfig, FluxCtx>('single_transformer_blocks', Pattern.P1, (m, s, { temb, rope }, c) => {
  const C = inner(c);
  const H = c.num_attention_heads;
  const T = s.encoder!.dim(1);
  const x = concat([s.encoder!, s.hidden], 1);
  const [shift, scale, gate] = m.linear('norm.linear', temb, 3 * C).chunk(3);
  const nx = m.layerNorm(null, x, { eps: EPS }).modulate(shift!, scale!);
  const a = m.scope('attn');
  const q = qk(a, 'to_q', 'norm_q', nx, rope, 0, c.num_attention_heads, c.attention_head_dim);
  const k = qk(a, 'to_k', 'norm_k', nx, rope, 0, c.num_attention_heads, c.attention_head_dim);
  const o = attention(q, k, a.linear('to_v', nx, C), { heads: H });
  // proj_mlp after the attention (same math as diffusers' order): under ulysses_async it runs while the
  // output all-to-all is in flight (Cache-DiT's async single blocks)
  const mlp = c.mlp_act === 'swiglu' ? swiglu(m.linear('proj_mlp', nx, 8 * C, { parts: [4 * C, 4 * C] })) : m.linear('proj_mlp', nx, 4 * C, { act: 'gelu_tanh' });
  const y = x.addGated(gate!, m.linear('proj_out', concat([o, mlp], -1), C));
  const [encoder, hidden] = y.split([T, s.hidden.dim(1)], 1);
  return { hidden: hidden!, encoder: encoder! };
});

/** MLP timestep/guidance/text embedder: linear_1 -> SiLU -> linear_2 */
export function mlpEmbed(m: Module, x: Tensor, dim: number): Tensor {
  return m.linear('linear_2', m.linear('linear_1', x, dim, { act: 'silu' }), dim);
}

export const fluxTransformer = component<FluxConfig>({
  component: 'transformer',
  className: 'FluxTransformer2DModel',
  // FLUX.1-dev (black-forest-labs/FLUX.1-dev transformer/config.json)
  config: {
    patch_size: 1,
    in_channels: 64,
    out_channels: null,
    num_layers: 19,
    num_single_layers: 38,
    attention_head_dim: 128,
    num_attention_heads: 24,
    joint_attention_dim: 4096,
    pooled_projection_dim: 768,
    guidance_embeds: true,
    axes_dims_rope: [16, 56, 56],
    vae_scale_factor: 8,
  },
  dims: {
    defaults: { batch: 1, height: 1024, width: 1024, textTokens: 512 },
    resolve(c, d) {
      const step = c.vae_scale_factor * 2 * c.patch_size;
      for (const k of ['height', 'width'] as const) {
        if (d[k]! % step !== 0) invalidDim(k, d[k]!, `must be a multiple of ${step} (vae scale ${c.vae_scale_factor} x 2x2 packing)`);
      }
      const imageTokens = (d.height! / step) * (d.width! / step);
      return {
        dims: { B: d.batch!, imageTokens, textTokens: d.textTokens!, height: d.height!, width: d.width! },
        tag: `b${d.batch}-h${d.height}w${d.width}-t${d.textTokens}`,
      };
    },
  },
  inputs(c, d) {
    const ins: Record<string, number[]> = {
      hidden_states: [d.B!, d.imageTokens!, c.in_channels],
      encoder_hidden_states: [d.B!, d.textTokens!, c.joint_attention_dim],
      pooled_projections: [d.B!, c.pooled_projection_dim],
      timestep: [d.B!],
      img_ids: [d.imageTokens!, 3],
      txt_ids: [d.textTokens!, 3],
    };
    if (c.guidance_embeds) ins.guidance = [d.B!];
    return ins;
  },
  forward(b, x, c) {
    const C = inner(c);
    const hidden = b.linear('x_embedder', x.hidden_states!, C);
    const te = b.scope('time_text_embed');
    const tProj = (t: Tensor): Tensor => timestepEmbedding(t.scale(1000), { dim: 256, flipSinToCos: true, freqShift: 0 });
    let temb = mlpEmbed(te.scope('timestep_embedder'), tProj(x.timestep!), C);
    if (c.guidance_embeds) temb = temb.add(mlpEmbed(te.scope('guidance_embedder'), tProj(x.guidance!), C));
    temb = temb.add(mlpEmbed(te.scope('text_embedder'), x.pooled_projections!, C));
    const encoder = b.linear('context_embedder', x.encoder_hidden_states!, C);
    const rope = ropeTable(concat([x.txt_ids!, x.img_ids!], 0), { axes: c.axes_dims_rope, theta: 10000 });
    const ctx: FluxCtx = { temb: temb.silu(), rope };

    // Cache-DiT's FLUX.1 adapter: one merged list (dual + single blocks), Pattern_1
    const out = b.blocks(
      { name: 'transformer_blocks', pattern: Pattern.P1, blocks: [repeat(dualBlock, 'num_layers'), repeat(singleBlock, 'num_single_layers')] },
      { hidden, encoder },
      ctx,
    );

    return { output: normOutProj(b, ctx.temb, out.hidden, C, c) };
  },
});

/**
 * A FLUX.1-layout transformer conditioned on the timestep alone (no guidance, no pooled text): Ovis-Image and
 * LongCat-Image. `timestepScope`: where the TimestepEmbedding's weights live; `contextNorm`: an RMSNorm
 * (`context_embedder_norm`) before the context embedder. Its dual and single blocks run as two block lists.
 */
export function timestepOnlyFlux(o: { className: string; config: Partial<FluxConfig>; timestepScope: string; contextNorm: boolean }) {
  return component<FluxConfig>({
    ...fluxTransformer,
    className: o.className,
    config: { ...fluxTransformer.config, ...o.config, guidance_embeds: false },
    inputs(c, d) {
      return {
        hidden_states: [d.B!, d.imageTokens!, c.in_channels],
        encoder_hidden_states: [d.B!, d.textTokens!, c.joint_attention_dim],
        timestep: [d.B!],
        img_ids: [d.imageTokens!, 3],
        txt_ids: [d.textTokens!, 3],
      };
    },
    forward(b, x, c) {
      const C = inner(c);
      const hidden = b.linear('x_embedder', x.hidden_states!, C);
      const temb = mlpEmbed(b.scope(o.timestepScope), timestepEmbedding(x.timestep!.scale(1000), { dim: 256, flipSinToCos: true, freqShift: 0 }), C);
      const text = o.contextNorm ? b.rmsNorm('context_embedder_norm', x.encoder_hidden_states!, { eps: 1e-6 }) : x.encoder_hidden_states!;
      const encoder = b.linear('context_embedder', text, C);
      const ctx: FluxCtx = { temb: temb.silu(), rope: ropeTable(concat([x.txt_ids!, x.img_ids!], 0), { axes: c.axes_dims_rope, theta: 10000 }) };
      const dual = b.blocks({ name: 'transformer_blocks', pattern: Pattern.P1, blocks: [repeat(dualBlock, 'num_layers')] }, { hidden, encoder }, ctx);
      const out = b.blocks({ name: 'single_transformer_blocks', pattern: Pattern.P1, blocks: [repeat(singleBlock, 'num_single_layers')] }, { hidden: dual.hidden, encoder: dual.encoder! }, ctx);
      return { output: normOutProj(b, ctx.temb, out.hidden, C, c) };
    },
  });
}

/** Cache-DiT's two-list adapters of the FLUX layout: the dual blocks (Pattern_1) and the single blocks, each list its own context */
export function fluxTwoLists(singlePattern: number, hasSeparateCfg: boolean) {
  return {
    lists: [
      { name: 'transformer_blocks', blocks: ['transformer_blocks'], pattern: Pattern.P1 },
      { name: 'single_transformer_blocks', blocks: ['single_transformer_blocks'], pattern: singlePattern },
    ],
    has_separate_cfg: hasSeparateCfg,
  };
}

/** Cache-DiT's adapters of Ovis-Image and LongCat-Image: both lists Pattern_1, separate CFG */
export const FLUX_TWO_LISTS = fluxTwoLists(Pattern.P1, true);

export const FLUX_CACHE = {
  lists: [{ name: 'transformer_blocks', blocks: ['transformer_blocks', 'single_transformer_blocks'], pattern: Pattern.P1 }],
  config: { Fn_compute_blocks: 1, Bn_compute_blocks: 0, residual_diff_threshold: 0.08 },
  has_separate_cfg: false,
};

/** TP of the dual-stream joint attention's q/k/v projections (both streams): column-split heads */
export const JOINT_QKV_TP = {
  'transformer_blocks.*.attn.to_q': 'colwise',
  'transformer_blocks.*.attn.to_k': 'colwise',
  'transformer_blocks.*.attn.to_v': 'colwise',
  'transformer_blocks.*.attn.add_q_proj': 'colwise',
  'transformer_blocks.*.attn.add_k_proj': 'colwise',
  'transformer_blocks.*.attn.add_v_proj': 'colwise',
} as const;

/** Cache-DiT's FLUX.1 TP plan (cache-dit.md §4.7) */
export const FLUX_PARALLEL = {
  attention: 'all' as const,
  tp: {
    ...JOINT_QKV_TP,
    'transformer_blocks.*.ff.net.0.proj': 'colwise',
    'transformer_blocks.*.ff_context.net.0.proj': 'colwise',
    'transformer_blocks.*.attn.to_out.0': 'rowwise',
    'transformer_blocks.*.attn.to_add_out': 'rowwise',
    'transformer_blocks.*.ff.net.2': 'rowwise',
    'transformer_blocks.*.ff_context.net.2': 'rowwise',
    'transformer_blocks.*.norm1.linear': 'colwise_replicate',
    'transformer_blocks.*.norm1_context.linear': 'colwise_replicate',
    'single_transformer_blocks.*.attn.to_q': 'colwise',
    'single_transformer_blocks.*.attn.to_k': 'colwise',
    'single_transformer_blocks.*.attn.to_v': 'colwise',
    'single_transformer_blocks.*.proj_mlp': 'colwise',
    'single_transformer_blocks.*.proj_out': 'rowwise',
    'single_transformer_blocks.*.norm.linear': 'colwise_replicate',
  } as const,
  cp: {
    split: { hidden_states: 1, encoder_hidden_states: 1, img_ids: 0, txt_ids: 0 },
    gather: { output: 1 },
    dims: { hidden_states: 'imageTokens', encoder_hidden_states: 'textTokens', img_ids: 'imageTokens', txt_ids: 'textTokens' },
  },
};

/**
 * A FLUX.1 release: its transformer config over FLUX.1-dev's, with the CLIP / T5 text encoders, the VAE decoder
 * and its encoder (image-to-image, inpainting), FLUX's cache and parallel plans. A diffusers directory's own
 * config.json files override these defaults component by component (runtime/pipeline.ts).
 */
function flux1Release(name: string, transformer: Partial<FluxConfig>) {
  return model(name, {
    components: {
      transformer: withConfig(fluxTransformer, transformer),
      text_encoder: withConfig(clipTextModel, {}),
      text_encoder_2: withConfig(t5Encoder, {}),
      vae: withConfig(autoencoderKL, {}),
      vae_encoder: withConfig(autoencoderKLEncoder, {}),
    },
    cache: FLUX_CACHE,
    parallel: FLUX_PARALLEL,
  });
}

// FluxPipeline (black-forest-labs/FLUX.1-dev: the defaults above)
export default flux1Release('flux1-dev', {});

/**
 * black-forest-labs/FLUX.1-schnell: FLUX.1-dev's transformer without the guidance embedding (transformer/
 * config.json guidance_embeds false), the same CLIP / T5 / VAE; the timestep-distilled preset runs 4 steps
 * with max_sequence_length 256 and no shift (its scheduler_config: use_dynamic_shifting false, shift 1)
 */
export const flux1Schnell = flux1Release('flux1-schnell', { guidance_embeds: false });

/**
 * FLUX.1-Fill-dev (black-forest-labs/FLUX.1-Fill-dev transformer/config.json: in_channels 384, out_channels
 * 64, guidance_embeds true): FluxFillPipeline's transformer takes, per packed token, the noisy latents (64),
 * the masked image's latents (64) and the 8x8-unshuffled mask (256); the same CLIP / T5 / VAE (its encoder
 * makes the image and masked-image latents)
 */
export const flux1Fill = flux1Release('flux1-fill', { in_channels: 384, out_channels: 64 });
