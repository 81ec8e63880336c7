// Ovis-Image (diffusers OvisImageTransformer2DModel, transformer_ovis_image.py): FLUX.1's double / single stream
// layout (the same attention, AdaLayerNormZero and head) with SwiGLU MLPs (FeedForward "swiglu" in the dual
// blocks, a doubled proj_mlp in the single ones), a timestep-only embedding (no guidance, no pooled text) and
// an RMSNorm before the context embedder. Its text encoder is Qwen3 (Ovis 2.5's language model, the last
// hidden state), its VAE FLUX.1's AutoencoderKL.
//
// Cache-DiT adapts it as two block lists, both Pattern_1, with separate CFG.
import { component, concat, model, Pattern, repeat, ropeTable, timestepEmbedding, withConfig } from '../compiler/dsl/index.ts';
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { dualBlock, FLUX_PARALLEL, fluxTransformer, mlpEmbed, normOutProj, singleBlock, type FluxConfig } from './flux1.ts';
import { decoderLm } from './text-encoders/decoder-lm.ts';
import { QWEN3_1_7B } from './text-encoders/qwen3.ts';

/**
 * diffusers OvisImageTransformer2DModel config keys: AIDC-AI/Ovis-Image-7B as scripts/convert_ovis_image_to_diffusers.py
 * builds it (the class defaults, in_channels 64, out_channels None -> 64)
 */
const OVIS_TRANSFORMER: Partial<FluxConfig> = {
  patch_size: 1,
  in_channels: 64,
  out_channels: 64,
  num_layers: 6,
  num_single_layers: 27,
  attention_head_dim: 128,
  num_attention_heads: 24,
  joint_attention_dim: 2048,
  axes_dims_rope: [16, 56, 56],
  guidance_embeds: false,
  mlp_act: 'swiglu',
};

export const ovisImageTransformer = component<FluxConfig>({
  ...fluxTransformer,
  className: 'OvisImageTransformer2DModel',
  config: { ...fluxTransformer.config, ...OVIS_TRANSFORMER },
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
    const C = c.num_attention_heads * c.attention_head_dim;
    const hidden = b.linear('x_embedder', x.hidden_states!, C);
    const temb = mlpEmbed(b.scope('timestep_embedder'), timestepEmbedding(x.timestep!.scale(1000), { dim: 256, flipSinToCos: true, freqShift: 0 }), C);
    const encoder = b.linear('context_embedder', b.rmsNorm('context_embedder_norm', x.encoder_hidden_states!, { eps: 1e-6 }), C);
    const rope = ropeTable(concat([x.txt_ids!, x.img_ids!], 0), { axes: c.axes_dims_rope, theta: 10000 });
    const ctx = { temb: temb.silu(), rope };
    const dual = b.blocks({ name: 'transformer_blocks', pattern: Pattern.P1, blocks: [repeat(dualBlock, 'num_layers')] }, { hidden, encoder }, ctx);
    const out = b.blocks({ name: 'single_transformer_blocks', pattern: Pattern.P1, blocks: [repeat(singleBlock, 'num_single_layers')] }, { hidden: dual.hidden, encoder: dual.encoder! }, ctx);
    return { output: normOutProj(b, ctx.temb, out.hidden, C, c) };
  },
});

/** Qwen3-1.7B as Ovis 2.5's language model (Qwen3Model keys, no "model." prefix): its last hidden state, after the final norm */
const OVIS_TEXT = { ...QWEN3_1_7B, weight_prefix: '', output_hidden_state: -1 };

// OvisImagePipeline (AIDC-AI/Ovis-Image-7B): CFG 5 with the empty negative prompt, FLUX.1's AutoencoderKL
export default model('ovis-image', {
  components: {
    transformer: withConfig(ovisImageTransformer, {}),
    text_encoder: withConfig(decoderLm, OVIS_TEXT),
    vae: withConfig(autoencoderKL, {}),
    vae_encoder: withConfig(autoencoderKLEncoder, {}),
  },
  cache: {
    lists: [
      { name: 'transformer_blocks', blocks: ['transformer_blocks'], pattern: Pattern.P1 },
      { name: 'single_transformer_blocks', blocks: ['single_transformer_blocks'], pattern: Pattern.P1 },
    ],
    has_separate_cfg: true,
  },
  // FLUX.1's TP plan (the SwiGLU projections split half by half: their `parts`) and CP plan
  parallel: FLUX_PARALLEL,
});
