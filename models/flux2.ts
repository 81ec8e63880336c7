// FLUX.2 (diffusers Flux2Transformer2DModel, transformer_flux2.py): FLUX.1's double / single stream layout
// with no biases anywhere, one shared adaLN modulation per stream kind (computed once from the timestep
// embedding, not per block), SwiGLU feed-forwards fused into one `linear_in`, single blocks whose q / k /
// v and MLP input are one fused `to_qkv_mlp_proj` (and whose attention and MLP outputs share `to_out`),
// 4-axis RoPE (theta 2000) and 128 latent channels (AutoencoderKLFlux2's 32, 2x2-packed). The config
// decides the size: FLUX.2-dev, FLUX.2-Klein 4B and 9B use this file unchanged.
//
// Cache-DiT adapts it as two block lists with their own contexts: `transformer_blocks` (Pattern_1) and
// `single_transformer_blocks` (Pattern_3, on the concatenated [text, image] tokens).
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { fluxTwoLists, normOutProj } from './flux1.ts';
import { decoderLm } from './text-encoders/decoder-lm.ts';
import { QWEN3_4B, QWEN3_8B } from './text-encoders/qwen3.ts';
import { applyRope, attention, block, component, concat, invalidDim, model, Pattern, repeat, ropeTable, timestepEmbedding, withConfig, type Module, type Tensor } from '../compiler/dsl/index.ts';

/** diffusers Flux2Transformer2DModel config keys (+ the pipeline's vae_scale_factor for dims) */
export interface Flux2Config {
  patch_size: number;
  in_channels: number;
  out_channels: number | null;
  num_layers: number;
  num_single_layers: number;
  attention_head_dim: number;
  num_attention_heads: number;
  joint_attention_dim: number;
  timestep_guidance_channels: number;
  mlp_ratio: number;
  axes_dims_rope: number[];
  rope_theta: number;
  eps: number;
  guidance_embeds: boolean;
  /** pipeline: pixels per latent pixel (2^(len(vae.block_out_channels)-1)) */
  vae_scale_factor: number;
}

/** what the embeddings hand every block: the shared modulations (from silu(temb)) and the RoPE table */
interface Flux2Ctx {
  /** double_stream_modulation_img / _txt: [B, 6C] = (shift, scale, gate) x (attention, MLP) */
  modImg: Tensor;
  modTxt: Tensor;
  /** single_stream_modulation: [B, 3C] */
  modSingle: Tensor;
  rope: Tensor;
}

const inner = (c: Flux2Config): number => c.num_attention_heads * c.attention_head_dim;
/** Flux2FeedForward / Flux2ParallelSelfAttention: int(dim * mlp_ratio) */
const mlpHidden = (c: Flux2Config): number => Math.floor(inner(c) * c.mlp_ratio);

/** Flux2FeedForward: linear_in to [gate | up] (one fused weight), silu(gate) * up (Flux2SwiGLU), linear_out */
function swigluFeedForward(m: Module, x: Tensor, c: Flux2Config): Tensor {
  const I = mlpHidden(c);
  const [g, u] = m.linear('linear_in', x, 2 * I, { bias: false, parts: [I, I] }).chunk(2);
  return m.linear('linear_out', g!.silu().mul(u!), inner(c), { bias: false });
}

/** per-head RMSNorm (weight `<norm>.weight`) then RoPE with rows row0.. of the table */
function normRope(a: Module, norm: string, x: Tensor, rope: Tensor, row0: number, c: Flux2Config): Tensor {
  const heads = c.num_attention_heads;
  return applyRope(a.headRmsNorm(norm, x, { heads, eps: c.eps }), rope, { heads, row0 });
}

/** Flux2TransformerBlock (double stream): the shared modulations, joint attention [text, image], two SwiGLU FFNs */
export const flux2DualBlock = block<Flux2Config, Flux2Ctx>('transformer_blocks', Pattern.P1, (m, s, { modImg, modTxt, rope }, c) => {
  const C = inner(c);
  const H = c.num_attention_heads;
  const eps = c.eps;
  let hidden = s.hidden;
  let encoder = s.encoder!;
  const [shMsa, scMsa, gMsa, shMlp, scMlp, gMlp] = modImg.chunk(6);
  const [cShMsa, cScMsa, cGMsa, cShMlp, cScMlp, cGMlp] = modTxt.chunk(6);
  const nh = m.layerNorm(null, hidden, { eps }).modulate(shMsa!, scMsa!);
  const ne = m.layerNorm(null, encoder, { eps }).modulate(cShMsa!, cScMsa!);

  // Flux2AttnProcessor: text tokens first; q / k normed per head, then RoPE over the joint sequence
  const a = m.scope('attn');
  const T = ne.dim(1);
  const proj = (name: string, x: Tensor): Tensor => a.linear(name, x, C, { bias: false });
  const q = concat([normRope(a, 'norm_added_q', proj('add_q_proj', ne), rope, 0, c), normRope(a, 'norm_q', proj('to_q', nh), rope, T, c)], 1);
  const k = concat([normRope(a, 'norm_added_k', proj('add_k_proj', ne), rope, 0, c), normRope(a, 'norm_k', proj('to_k', nh), rope, T, c)], 1);
  const v = concat([proj('add_v_proj', ne), proj('to_v', nh)], 1);
  const [oe, oh] = attention(q, k, v, { heads: H }).split([T, nh.dim(1)], 1);

  hidden = hidden.addGated(gMsa!, a.linear('to_out.0', oh!, C, { bias: false }));
  hidden = hidden.addGated(gMlp!, swigluFeedForward(m.scope('ff'), m.layerNorm(null, hidden, { eps }).modulate(shMlp!, scMlp!), c));
  encoder = encoder.addGated(cGMsa!, a.linear('to_add_out', oe!, C, { bias: false }));
  encoder = encoder.addGated(cGMlp!, swigluFeedForward(m.scope('ff_context'), m.layerNorm(null, encoder, { eps }).modulate(cShMlp!, cScMlp!), c));
  return { hidden, encoder };
});

/**
 * Flux2SingleTransformerBlock on the concatenated [text, image] tokens: one fused projection to
 * q | k | v | gate | up, attention beside SwiGLU, one output projection of [attention | MLP]
 */
export const flux2SingleBlock = block<Flux2Config, Flux2Ctx>('single_transformer_blocks', Pattern.P3, (m, s, { modSingle, rope }, c) => {
  const C = inner(c);
  const M = mlpHidden(c);
  const x = s.hidden;
  const [shift, scale, gate] = modSingle.chunk(3);
  const nx = m.layerNorm(null, x, { eps: c.eps }).modulate(shift!, scale!);
  const a = m.scope('attn');
  const [q, k, v, g, u] = a.linear('to_qkv_mlp_proj', nx, 3 * C + 2 * M, { bias: false, parts: [C, C, C, M, M] }).split([C, C, C, M, M]);
  const o = attention(normRope(a, 'norm_q', q!, rope, 0, c), normRope(a, 'norm_k', k!, rope, 0, c), v!, { heads: c.num_attention_heads });
  return x.addGated(gate!, a.linear('to_out', concat([o, g!.silu().mul(u!)], -1), C, { bias: false }));
});

/** diffusers TimestepEmbedding without biases: linear_1 -> SiLU -> linear_2 */
function timestepMlp(m: Module, x: Tensor, dim: number): Tensor {
  return m.linear('linear_2', m.linear('linear_1', x, dim, { bias: false, act: 'silu' }), dim, { bias: false });
}

export const flux2Transformer = component<Flux2Config>({
  component: 'transformer',
  className: 'Flux2Transformer2DModel',
  // FLUX.2-dev (black-forest-labs/FLUX.2-dev transformer/config.json; diffusers'
  // scripts/convert_flux2_to_diffusers.py "flux2-dev", which equals the class defaults)
  config: {
    patch_size: 1,
    in_channels: 128,
    out_channels: null,
    num_layers: 8,
    num_single_layers: 48,
    attention_head_dim: 128,
    num_attention_heads: 48,
    joint_attention_dim: 15360,
    timestep_guidance_channels: 256,
    mlp_ratio: 3.0,
    axes_dims_rope: [32, 32, 32, 32],
    rope_theta: 2000,
    eps: 1e-6,
    guidance_embeds: true,
    vae_scale_factor: 8,
  },
  dims: {
    // refTokens: the packed tokens of reference images (editing), after the image's own in the token axis
    defaults: { batch: 1, height: 1024, width: 1024, textTokens: 512, refTokens: 0 },
    resolve(c, d) {
      const step = c.vae_scale_factor * 2 * c.patch_size;
      for (const k of ['height', 'width'] as const) {
        if (d[k]! % step !== 0) invalidDim(k, d[k]!, `must be a multiple of ${step} (vae scale ${c.vae_scale_factor} x 2x2 packing)`);
      }
      const ref = d.refTokens ?? 0;
      if (!Number.isInteger(ref) || ref < 0) invalidDim('refTokens', ref, 'must be a non-negative integer');
      const imageTokens = (d.height! / step) * (d.width! / step) + ref;
      return {
        dims: { B: d.batch!, imageTokens, textTokens: d.textTokens!, height: d.height!, width: d.width!, refTokens: ref },
        tag: `b${d.batch}-h${d.height}w${d.width}-t${d.textTokens}${ref ? `-r${ref}` : ''}`,
      };
    },
  },
  inputs(c, d) {
    const A = c.axes_dims_rope.length;
    const ins: Record<string, number[]> = {
      hidden_states: [d.B!, d.imageTokens!, c.in_channels],
      encoder_hidden_states: [d.B!, d.textTokens!, c.joint_attention_dim],
      timestep: [d.B!],
      img_ids: [d.imageTokens!, A],
      txt_ids: [d.textTokens!, A],
    };
    if (c.guidance_embeds) ins.guidance = [d.B!];
    return ins;
  },
  forward(b, x, c) {
    const C = inner(c);
    const te = b.scope('time_guidance_embed');
    const tProj = (t: Tensor): Tensor => timestepEmbedding(t.scale(1000), { dim: c.timestep_guidance_channels, flipSinToCos: true, freqShift: 0 });
    let temb = timestepMlp(te.scope('timestep_embedder'), tProj(x.timestep!), C);
    if (c.guidance_embeds) temb = temb.add(timestepMlp(te.scope('guidance_embedder'), tProj(x.guidance!), C));
    // Flux2Modulation: linear(silu(temb)), shared by every block of its kind
    const st = temb.silu();
    const mod = (name: string, sets: number): Tensor => b.linear(`${name}.linear`, st, 3 * sets * C, { bias: false });
    const ctx: Flux2Ctx = {
      modImg: mod('double_stream_modulation_img', 2),
      modTxt: mod('double_stream_modulation_txt', 2),
      modSingle: mod('single_stream_modulation', 1),
      rope: ropeTable(concat([x.txt_ids!, x.img_ids!], 0), { axes: c.axes_dims_rope, theta: c.rope_theta }),
    };
    const hidden = b.linear('x_embedder', x.hidden_states!, C, { bias: false });
    const encoder = b.linear('context_embedder', x.encoder_hidden_states!, C, { bias: false });

    const dual = b.blocks({ name: 'transformer_blocks', pattern: Pattern.P1, blocks: [repeat(flux2DualBlock, 'num_layers')] }, { hidden, encoder }, ctx);
    const T = dual.encoder!.dim(1);
    const joint = concat([dual.encoder!, dual.hidden], 1);
    const single = b.blocks({ name: 'single_transformer_blocks', pattern: Pattern.P3, blocks: [repeat(flux2SingleBlock, 'num_single_layers')] }, { hidden: joint }, ctx);
    const [, img] = single.hidden.split([T, dual.hidden.dim(1)], 1);

    // norm_out (AdaLayerNormContinuous, eps 1e-6 as FLUX.1's) and proj_out, without biases
    return { output: normOutProj(b, st, img!, C, c, { bias: false }) };
  },
});

/** Cache-DiT's FLUX.2 adapter: [Pattern_1, Pattern_3], two contexts (the single blocks take the joint tokens) */
export const FLUX2_CACHE = fluxTwoLists(Pattern.P3, false);

/**
 * diffusers' Flux2Transformer2DModel._tp_plan (Cache-DiT's FLUX.2 planner is the same): heads and MLP hidden
 * column-split, the fused projections split block by block (their `parts`), modulations replicated
 */
export const FLUX2_PARALLEL = {
  attention: 'all' as const,
  tp: {
    'transformer_blocks.*.attn.to_q': 'colwise',
    'transformer_blocks.*.attn.to_k': 'colwise',
    'transformer_blocks.*.attn.to_v': 'colwise',
    'transformer_blocks.*.attn.to_out.0': 'rowwise',
    'transformer_blocks.*.attn.add_q_proj': 'colwise',
    'transformer_blocks.*.attn.add_k_proj': 'colwise',
    'transformer_blocks.*.attn.add_v_proj': 'colwise',
    'transformer_blocks.*.attn.to_add_out': 'rowwise',
    'transformer_blocks.*.ff.linear_in': 'colwise',
    'transformer_blocks.*.ff.linear_out': 'rowwise',
    'transformer_blocks.*.ff_context.linear_in': 'colwise',
    'transformer_blocks.*.ff_context.linear_out': 'rowwise',
    'single_transformer_blocks.*.attn.to_qkv_mlp_proj': 'colwise',
    'single_transformer_blocks.*.attn.to_out': 'rowwise',
  } as const,
  // diffusers' _cp_plan: every token input split at entry, proj_out gathered
  cp: {
    split: { hidden_states: 1, encoder_hidden_states: 1, img_ids: 0, txt_ids: 0 },
    gather: { output: 1 },
    dims: { hidden_states: 'imageTokens', encoder_hidden_states: 'textTokens', img_ids: 'imageTokens', txt_ids: 'textTokens' },
  },
};

/**
 * AutoencoderKLFlux2 (black-forest-labs/FLUX.2-dev vae/config.json): AutoencoderKL's encoder and decoder with 32
 * latent channels and both 1x1 quant convs; its BatchNorm2d over the 2x2-patchified latents (affine false,
 * eps 1e-4) is no layer here: the pipeline reads `bn.running_mean` / `bn.running_var` and normalizes with them
 */
export const FLUX2_VAE = {
  latent_channels: 32,
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  norm_num_groups: 32,
  use_quant_conv: true,
  use_post_quant_conv: true,
  // no latent scaling: the BatchNorm statistics take its place
  scaling_factor: 1,
  shift_factor: null,
};

/** Qwen3ForCausalLM (keys under "model.") as FLUX.2-Klein's text encoder: hidden_states 9, 18, 27 side by side */
const kleinText = (c: typeof QWEN3_4B) => ({ ...c, weight_prefix: 'model.', output_hidden_states: [9, 18, 27] });

/**
 * Mistral-Small-3.2-24B's language model (Mistral3ForConditionalGeneration text_config, saved under
 * model.language_model.) as FLUX.2-dev's text encoder: hidden_states 10, 20, 30 side by side (3 x 5120)
 */
const MISTRAL_SMALL_3_2 = {
  vocab_size: 131072,
  hidden_size: 5120,
  intermediate_size: 32768,
  num_hidden_layers: 40,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000000,
  rope_parameters: null,
  qk_norm: false,
  attention_bias: false,
  weight_prefix: 'model.language_model.',
  output_hidden_states: [10, 20, 30],
  model_type: 'mistral',
};

function flux2Release(name: string, transformer: Partial<Flux2Config>, textEncoder: Record<string, unknown>) {
  return model(name, {
    components: {
      transformer: withConfig(flux2Transformer, transformer),
      text_encoder: withConfig(decoderLm, textEncoder),
      vae: withConfig(autoencoderKL, FLUX2_VAE),
      vae_encoder: withConfig(autoencoderKLEncoder, FLUX2_VAE),
    },
    cache: FLUX2_CACHE,
    parallel: FLUX2_PARALLEL,
  });
}

// black-forest-labs/FLUX.2-dev (Flux2Pipeline; text encoder Mistral-Small-3.2-24B, 3 x 5120 = 15360 features)
export default flux2Release('flux2-dev', {}, MISTRAL_SMALL_3_2);

/**
 * FLUX.2-Klein 4B (black-forest-labs/FLUX.2-klein-4B transformer/config.json; convert_flux2_to_diffusers.py
 * "klein-4b"): 5 dual + 24 x 128 heads, 20 single blocks, Qwen3 hidden states of 3 layers (3 x 2560 = 7680),
 * no guidance embedding (Flux2KleinPipeline; the base variant runs CFG, the distilled one 4 steps without)
 */
export const flux2Klein4B = flux2Release('flux2-klein-4b', { num_layers: 5, num_single_layers: 20, num_attention_heads: 24, joint_attention_dim: 7680, guidance_embeds: false }, kleinText(QWEN3_4B));

/** FLUX.2-Klein 9B ("klein-9b"): 8 dual + 24 single blocks, 32 x 128 heads, 3 x 4096 = 12288 text features */
export const flux2Klein9B = flux2Release('flux2-klein-9b', { num_layers: 8, num_single_layers: 24, num_attention_heads: 32, joint_attention_dim: 12288, guidance_embeds: false }, kleinText(QWEN3_8B));
