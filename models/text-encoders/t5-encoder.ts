// transformers T5EncoderModel (FLUX.1's `text_encoder_2`, T5 v1.1) and UMT5EncoderModel (Wan's
// `text_encoder`): shared embedding, pre-norm blocks of unscaled self-attention with a relative position
// bias, gated-GELU feed-forward, T5LayerNorm (RMSNorm with weight), final norm. T5 computes the bias once
// from block 0's table and reuses it in every block; UMT5 has a table in every block. FluxPipeline passes
// no attention mask (padding is attended like any other token); WanPipeline passes the tokenizer's mask,
// which drops the padding keys.
import { attention, component, DslError, invalidDim, t5PositionBias, type Module, type Tensor } from '../../compiler/dsl/index.ts';

/** T5Config keys the encoder reads */
export interface T5EncoderConfig {
  vocab_size: number;
  d_model: number;
  d_kv: number;
  d_ff: number;
  num_layers: number;
  num_heads: number;
  relative_attention_num_buckets: number;
  relative_attention_max_distance: number;
  feed_forward_proj: string;
  layer_norm_epsilon: number;
  [key: string]: unknown;
}

function feedForward(m: Module, x: Tensor, c: T5EncoderConfig): Tensor {
  const ff = m.scope('DenseReluDense');
  // gated-gelu: gelu_new(wi_0 x) * wi_1 x (T5DenseGatedActDense)
  const h = ff.linear('wi_0', x, c.d_ff, { bias: false, act: 'gelu_tanh' }).mul(ff.linear('wi_1', x, c.d_ff, { bias: false }));
  return ff.linear('wo', h, c.d_model, { bias: false });
}

interface StackOptions {
  /** UMT5: every block has its own relative_attention_bias table (T5: block 0's, shared) */
  perLayerBias: boolean;
}

function encoderStack(b: Module, ids: Tensor, mask: Tensor | undefined, c: T5EncoderConfig, o: StackOptions): Tensor {
  if (c.feed_forward_proj !== 'gated-gelu') {
    throw new DslError(`${o.perLayerBias ? 'UMT5' : 'T5'}EncoderModel: feed_forward_proj '${c.feed_forward_proj}' is not supported (supported: gated-gelu, the T5 v1.1 / UMT5 encoders)`);
  }
  const T = ids.dim(1);
  const inner = c.num_heads * c.d_kv;
  const eps = c.layer_norm_epsilon;
  let h = b.embedding('shared', ids, { num: c.vocab_size, dim: c.d_model });
  const enc = b.scope('encoder');
  const positionBias = (layer: number): Tensor => {
    // [buckets, heads]: a tensor-parallel rank keeps its heads' columns
    const table = enc.headParam(`block.${layer}.layer.0.SelfAttention.relative_attention_bias.weight`, [c.relative_attention_num_buckets, c.num_heads], 1);
    return t5PositionBias(table, { queries: T, keys: T, numBuckets: c.relative_attention_num_buckets, maxDistance: c.relative_attention_max_distance, bidirectional: true });
  };
  const shared = o.perLayerBias ? null : positionBias(0);
  for (let i = 0; i < c.num_layers; i++) {
    const blk = enc.scope(`block.${i}`);
    const sa = blk.scope('layer.0');
    const a = sa.scope('SelfAttention');
    const n = sa.rmsNorm('layer_norm', h, { eps });
    const att = attention(a.linear('q', n, inner, { bias: false }), a.linear('k', n, inner, { bias: false }), a.linear('v', n, inner, { bias: false }), {
      heads: c.num_heads,
      scale: 1,
      bias: shared ?? positionBias(i),
      ...(mask ? { keyMask: mask } : {}),
    });
    h = h.add(a.linear('o', att, c.d_model, { bias: false }));
    const f = blk.scope('layer.1');
    h = h.add(feedForward(f, f.rmsNorm('layer_norm', h, { eps }), c));
  }
  return enc.rmsNorm('final_layer_norm', h, { eps });
}

/** google/t5-v1_1-xxl (black-forest-labs/FLUX.1-dev text_encoder_2/config.json) */
const T5_XXL: T5EncoderConfig = {
  vocab_size: 32128,
  d_model: 4096,
  d_kv: 64,
  d_ff: 10240,
  num_layers: 24,
  num_heads: 64,
  relative_attention_num_buckets: 32,
  relative_attention_max_distance: 128,
  feed_forward_proj: 'gated-gelu',
  layer_norm_epsilon: 1e-6,
};

/** TE-P (Cache-DiT §4.9): heads (and their relative-bias columns) and the gated-GELU hidden over the ranks */
const T5_TP = {
  'encoder.block.*.layer.0.SelfAttention.q': 'colwise',
  'encoder.block.*.layer.0.SelfAttention.k': 'colwise',
  'encoder.block.*.layer.0.SelfAttention.v': 'colwise',
  'encoder.block.*.layer.0.SelfAttention.o': 'rowwise',
  'encoder.block.*.layer.1.DenseReluDense.wi_0': 'colwise',
  'encoder.block.*.layer.1.DenseReluDense.wi_1': 'colwise',
  'encoder.block.*.layer.1.DenseReluDense.wo': 'rowwise',
} as const;

const tokenDims = {
  defaults: { batch: 1, textTokens: 512 },
  resolve(_c: T5EncoderConfig, d: Record<string, number>) {
    if (d.textTokens! < 1) invalidDim('textTokens', d.textTokens!, 'must be at least 1');
    return { dims: { B: d.batch!, textTokens: d.textTokens! }, tag: `b${d.batch}-t${d.textTokens}` };
  },
};

export const t5Encoder = component<T5EncoderConfig>({
  component: 'text_encoder_2',
  className: 'T5EncoderModel',
  config: T5_XXL,
  dims: tokenDims,
  inputs: (_c, d) => ({ input_ids: [d.B!, d.textTokens!] }),
  tp: T5_TP,
  forward: (b, x, c) => ({ last_hidden_state: encoderStack(b, x.input_ids!, undefined, c, { perLayerBias: false }) }),
});

export const umt5Encoder = component<T5EncoderConfig>({
  component: 'text_encoder',
  className: 'UMT5EncoderModel',
  // google/umt5-xxl (Wan-AI/Wan2.1-T2V-14B-Diffusers text_encoder/config.json)
  // (the T5 v1.1 XXL sizes with mT5's vocabulary)
  config: { ...T5_XXL, vocab_size: 256384 },
  dims: tokenDims,
  // attention_mask: the tokenizer's (1 = token, 0 = padding)
  inputs: (_c, d) => ({ input_ids: [d.B!, d.textTokens!], attention_mask: [d.B!, d.textTokens!] }),
  tp: T5_TP,
  forward: (b, x, c) => ({ last_hidden_state: encoderStack(b, x.input_ids!, x.attention_mask!, c, { perLayerBias: true }) }),
});
