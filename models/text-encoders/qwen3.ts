// Qwen3 language models as the diffusion pipelines use them for text (models/text-encoders/decoder-lm.ts builds
// them): their released configs, which a pipeline specializes with its checkpoint prefix and hidden states.

/** Qwen/Qwen3-4B config.json (Z-Image-Turbo's and FLUX.2-Klein 4B's text encoder) */
export const QWEN3_4B = {
  vocab_size: 151936,
  hidden_size: 2560,
  intermediate_size: 9728,
  num_hidden_layers: 36,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  rms_norm_eps: 1e-6,
  rope_theta: null,
  rope_parameters: { rope_theta: 1000000, rope_type: 'default' },
  qk_norm: true,
  attention_bias: false,
  model_type: 'qwen3',
};

/** Qwen/Qwen3-8B (FLUX.2-Klein 9B's): 4096 wide, 12288 intermediate */
export const QWEN3_8B = { ...QWEN3_4B, hidden_size: 4096, intermediate_size: 12288 };

/** Qwen/Qwen3-1.7B (Ovis 2.5's language model, Ovis-Image's): 2048 wide, 6144 intermediate, 28 layers of 16 heads */
export const QWEN3_1_7B = { ...QWEN3_4B, hidden_size: 2048, intermediate_size: 6144, num_hidden_layers: 28, num_attention_heads: 16 };
