// LongCat-Image (diffusers LongCatImageTransformer2DModel, transformer_longcat_image.py): FLUX.1's double / single
// stream blocks unchanged, conditioned on the timestep alone (LongCatImageTimestepEmbeddings: no guidance, no
// pooled text; the class's pooled_projection_dim has no weights). Its text encoder is Qwen2.5-VL (3584
// features), its VAE FLUX.1's AutoencoderKL. LongCat-Image-Edit uses the same transformer.
//
// Cache-DiT adapts it as two block lists, both Pattern_1, with separate CFG.
import { model, withConfig } from '../compiler/dsl/index.ts';
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { FLUX_PARALLEL, FLUX_TWO_LISTS, timestepOnlyFlux } from './flux1.ts';
import { decoderLm } from './text-encoders/decoder-lm.ts';

/**
 * meituan-longcat/LongCat-Image (and -Edit) transformer/config.json as the public loaders copy it: 10 dual + 20
 * single blocks of 24 x 128 heads, joint_attention_dim 3584 (not the class defaults, 19 + 38)
 */
export const longcatImageTransformer = timestepOnlyFlux({
  className: 'LongCatImageTransformer2DModel',
  config: { patch_size: 1, in_channels: 64, out_channels: null, num_layers: 10, num_single_layers: 20, attention_head_dim: 128, num_attention_heads: 24, joint_attention_dim: 3584, axes_dims_rope: [16, 56, 56] },
  timestepScope: 'time_embed.timestep_embedder',
  contextNorm: false,
});

function longcatRelease(name: string) {
  return model(name, {
    components: {
      transformer: withConfig(longcatImageTransformer, {}),
      // Qwen2.5-VL-7B's language model (decoder-lm's defaults, as Qwen-Image has it)
      text_encoder: withConfig(decoderLm, {}),
      vae: withConfig(autoencoderKL, {}),
      vae_encoder: withConfig(autoencoderKLEncoder, {}),
    },
    cache: FLUX_TWO_LISTS,
    parallel: FLUX_PARALLEL,
  });
}

// LongCatImagePipeline (meituan-longcat/LongCat-Image)
export default longcatRelease('longcat-image');
// LongCatImageEditPipeline (meituan-longcat/LongCat-Image-Edit): the same transformer and components
export const longcatImageEdit = longcatRelease('longcat-image-edit');
