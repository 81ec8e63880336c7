// tiny-flux: the shipped, trained tiny FLUX.1 pipeline (models/tiny-flux/README.md): the FLUX.1
// transformer with the tiny config, the tiny text encoder, and diffusers' AutoencoderKL (decoder and encoder).
import { diffusersConfig, model, withConfig } from '../compiler/dsl/index.ts';
import { autoencoderKL, autoencoderKLEncoder } from './autoencoder-kl.ts';
import { FLUX_CACHE, FLUX_PARALLEL, fluxTransformer } from './flux1.ts';
import { tinyTextEncoder } from './tiny-flux-text-encoder.ts';

export default model('tiny-flux', {
  components: {
    // 32x32 images, VAE scale 4 (3 VAE levels)
    transformer: withConfig(fluxTransformer, { ...diffusersConfig('models/tiny-flux/transformer/config.json'), vae_scale_factor: 4 }),
    text_encoder: withConfig(tinyTextEncoder, {}),
    vae: withConfig(autoencoderKL, diffusersConfig('models/tiny-flux/vae/config.json')),
    // image-to-image: the same checkpoint's encoder
    vae_encoder: withConfig(autoencoderKLEncoder, diffusersConfig('models/tiny-flux/vae/config.json')),
  },
  dims: {
    transformer: { batch: 1, height: 32, width: 32, textTokens: 12 },
    text_encoder: { batch: 1, textTokens: 12 },
    vae: { batch: 1, height: 32, width: 32 },
    vae_encoder: { batch: 1, height: 32, width: 32 },
  },
  cache: FLUX_CACHE,
  parallel: FLUX_PARALLEL,
});
