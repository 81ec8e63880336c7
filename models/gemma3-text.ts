// Gemma 3's text model as a diffusion text encoder (LTX-2 encodes its prompts with Gemma 3 12B): the
// decoder-only encoder of text-encoders/decoder-lm.ts in its Gemma 3 form. A text-encoder-only model: its
// plans compile and run on their own (and ship so every kernel they launch is in the native library) until a
// pipeline family that uses it is registered.
import { model, withConfig } from '../compiler/dsl/index.ts';
import { decoderLm, type DecoderLmConfig } from './text-encoders/decoder-lm.ts';

/** google/gemma-3-12b text_config (transformers 5 names), as Gemma3ForCausalLM saves it ("model." keys) */
export const GEMMA3_12B_TEXT: DecoderLmConfig = {
  vocab_size: 262208,
  hidden_size: 3840,
  intermediate_size: 15360,
  num_hidden_layers: 48,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  head_dim: 256,
  rms_norm_eps: 1e-6,
  rope_theta: null,
  rope_parameters: {
    sliding_attention: { rope_type: 'default', rope_theta: 10000 },
    full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1000000 },
  },
  rope_scaling: null,
  hidden_act: 'gelu_pytorch_tanh',
  hidden_activation: 'gelu_pytorch_tanh',
  attention_bias: false,
  qk_norm: true,
  weight_prefix: 'model.',
  output_hidden_state: -1,
  model_type: 'gemma3_text',
  query_pre_attn_scalar: 256,
  // five local layers, then a global one
  layer_types: Array.from({ length: 48 }, (_, i) => ((i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention')),
  sliding_window: 1024,
};

export default model('gemma3-text', {
  components: { text_encoder: withConfig(decoderLm, GEMMA3_12B_TEXT) },
});
