// The tiny FLUX model's text encoder (models/tiny-flux/README.md §2): a small pre-norm transformer
// with learned positions, key-padding mask and mean pooling over non-pad tokens.
import { attention, component, diffusersConfig, invalidDim, maskedMean } from '../compiler/dsl/index.ts';

export interface TinyTextEncoderConfig {
  vocab_size: number;
  max_position_embeddings: number;
  hidden_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  intermediate_size: number;
  layer_norm_eps: number;
  [key: string]: unknown;
}

export const tinyTextEncoder = component<TinyTextEncoderConfig>({
  component: 'text_encoder',
  className: 'TinyPrenormTextEncoder',
  config: diffusersConfig('models/tiny-flux/text_encoder/config.json') as TinyTextEncoderConfig,
  dims: {
    defaults: { batch: 1, textTokens: 12 },
    resolve(c, d) {
      if (d.textTokens! > c.max_position_embeddings) {
        invalidDim('textTokens', d.textTokens!, `must be at most max_position_embeddings = ${c.max_position_embeddings}`);
      }
      return { dims: { B: d.batch!, textTokens: d.textTokens! }, tag: `b${d.batch}-t${d.textTokens}` };
    },
  },
  inputs: (_c, d) => ({ input_ids: [d.B!, d.textTokens!], attention_mask: [d.B!, d.textTokens!] }),
  forward(b, x, c) {
    const D = c.hidden_size;
    const T = x.input_ids!.dim(1);
    const eps = c.layer_norm_eps;
    const pos = b.param('embed_positions.weight', [c.max_position_embeddings, D]).slice(0, 0, T);
    let h = b.embedding('embed_tokens', x.input_ids!, { num: c.vocab_size, dim: D }).add(pos);
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const l = b.scope(`layers.${i}`);
      const a = l.scope('self_attn');
      const n = l.layerNorm('self_attn_layer_norm', h, { eps });
      const o = attention(a.linear('q_proj', n, D), a.linear('k_proj', n, D), a.linear('v_proj', n, D), {
        heads: c.num_attention_heads,
        keyMask: x.attention_mask!,
      });
      h = h.add(a.linear('out_proj', o, D));
      const n2 = l.layerNorm('mlp_layer_norm', h, { eps });
      h = h.add(l.linear('mlp.fc2', l.linear('mlp.fc1', n2, c.intermediate_size, { act: 'gelu_tanh' }), D));
    }
    const out = b.layerNorm('final_layer_norm', h, { eps });
    return { encoder_hidden_states: out, pooled_projections: maskedMean(out, x.attention_mask!) };
  },
  // TE-P (--parallel-text, Cache-DiT §4.9, like its T5 / Llama planners): q/k/v and fc1 colwise (heads
  // and the MLP hidden split over the ranks), out_proj and fc2 rowwise (all-reduced); embeddings and
  // layer norms replicated. 4 heads: 1, 2 or 4 ranks.
  tp: {
    'layers.*.self_attn.q_proj': 'colwise',
    'layers.*.self_attn.k_proj': 'colwise',
    'layers.*.self_attn.v_proj': 'colwise',
    'layers.*.self_attn.out_proj': 'rowwise',
    'layers.*.mlp.fc1': 'colwise',
    'layers.*.mlp.fc2': 'rowwise',
  },
});
