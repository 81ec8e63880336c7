// Ovis-Image (diffusers OvisImageTransformer2DModel, transformer_ovis_image.py): FLUX.1's double / single stream
// layout (the same attention, AdaLayerNormZero and head) with SwiGLU MLPs (FeedForward "swiglu" in the dual
// blocks, a doubled proj_mlp in the single ones), a timestep-only embedding (no guidance, no pooled text) and
// an RMSNorm before the context embedder. Its text encoder is Qwen3 (Ovis 2.5's language model, the last
// hidden state), its VAE FLUX.1's AutoencoderKL.
//
// Cache-DiT adapts it as two block lists, both Pattern_1, with separate CFG.
import { model, withConfig } from '../compiler/dsl/index.ts';
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { FLUX_PARALLEL, FLUX_TWO_LISTS, timestepOnlyFlux, type FluxConfig } from './flux1.ts';
import { decoderLm } from './text-encoders/decoder-lm.ts';
import { QWEN3_1_7B } from './text-encoders/qwen3.ts';

/**
 * diffusers OvisImageTransformer2DModel config keys: AIDC-AI/Ovis-Image-7B as scripts/convert_ovis_image_to_diffusers.py
 * builds it (the class defaults, in_channels 64, out_channels None -> 64)
 */
const OVIS_TRANSFORMER: Partial<FluxConfig> = {
  patch_size: 1,
  in_channels: 64,
  // None in the released config: the model's in_channels (64)
  out_channels: null,
  num_layers: 6,
  num_single_layers: 27,
  attention_head_dim: 128,
  num_attention_heads: 24,
  joint_attention_dim: 2048,
  axes_dims_rope: [16, 56, 56],
  guidance_embeds: false,
  mlp_act: 'swiglu',
};

export const ovisImageTransformer = timestepOnlyFlux({ className: 'OvisImageTransformer2DModel', config: OVIS_TRANSFORMER, timestepScope: 'timestep_embedder', contextNorm: true });

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
  cache: FLUX_TWO_LISTS,
  // FLUX.1's TP plan (the SwiGLU projections split half by half: their `parts`) and CP plan
  parallel: FLUX_PARALLEL,
});
