// transformers CLIPTextModel (FLUX.1's `text_encoder`): token + learned position embeddings, pre-norm
// layers with causal self-attention, final LayerNorm; the pooled output is the final hidden state at the
// EOS position (the pipeline passes it as a one-hot `pool_mask`, from the token ids: see
// runtime/text-encoders.ts).
import { attention, component, DslError, invalidDim, maskedMean, type Module, type Tensor } from '../../compiler/dsl/index.ts';

/** CLIPTextConfig keys the model reads */
export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  eos_token_id: number;
  [key: string]: unknown;
}

/** the MLP activation by CLIPTextConfig.hidden_act */
function act(x: Tensor, name: string): Tensor {
  switch (name) {
    case 'quick_gelu':
      return x.mul(x.scale(1.702).sigmoid());
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return x.gelu();
    default:
      throw new DslError(`CLIPTextModel: hidden_act '${name}' is not supported (supported: quick_gelu, gelu_new, gelu_pytorch_tanh)`);
  }
}

function encoderLayer(l: Module, h: Tensor, c: ClipTextConfig): Tensor {
  const D = c.hidden_size;
  const eps = c.layer_norm_eps;
  const a = l.scope('self_attn');
  const n = l.layerNorm('layer_norm1', h, { eps });
  const o = attention(a.linear('q_proj', n, D), a.linear('k_proj', n, D), a.linear('v_proj', n, D), { heads: c.num_attention_heads, causal: true });
  h = h.add(a.linear('out_proj', o, D));
  const n2 = l.layerNorm('layer_norm2', h, { eps });
  return h.add(l.linear('mlp.fc2', act(l.linear('mlp.fc1', n2, c.intermediate_size), c.hidden_act), D));
}

export const clipTextModel = component<ClipTextConfig>({
  component: 'text_encoder',
  className: 'CLIPTextModel',
  // openai/clip-vit-large-patch14 (black-forest-labs/FLUX.1-dev text_encoder/config.json)
  config: {
    vocab_size: 49408,
    hidden_size: 768,
    intermediate_size: 3072,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    max_position_embeddings: 77,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    eos_token_id: 2,
  },
  dims: {
    defaults: { batch: 1, textTokens: 77 },
    resolve(c, d) {
      if (d.textTokens! > c.max_position_embeddings) invalidDim('textTokens', d.textTokens!, `must be at most max_position_embeddings = ${c.max_position_embeddings}`);
      return { dims: { B: d.batch!, textTokens: d.textTokens! }, tag: `b${d.batch}-t${d.textTokens}` };
    },
  },
  inputs: (_c, d) => ({ input_ids: [d.B!, d.textTokens!], pool_mask: [d.B!, d.textTokens!] }),
  forward(b, x, c) {
    const D = c.hidden_size;
    const T = x.input_ids!.dim(1);
    const m = b.scope('text_model');
    const e = m.scope('embeddings');
    const pos = e.param('position_embedding.weight', [c.max_position_embeddings, D]).slice(0, 0, T);
    let h = e.embedding('token_embedding', x.input_ids!, { num: c.vocab_size, dim: D }).add(pos);
    for (let i = 0; i < c.num_hidden_layers; i++) h = encoderLayer(m.scope(`encoder.layers.${i}`), h, c);
    const out = m.layerNorm('final_layer_norm', h, { eps: c.layer_norm_eps });
    // one-hot mask: the masked mean is exactly the EOS row
    return { last_hidden_state: out, pooler_output: maskedMean(out, x.pool_mask!) };
  },
  // TE-P (Cache-DiT §4.9): heads and the MLP hidden split over the ranks
  tp: {
    'text_model.encoder.layers.*.self_attn.q_proj': 'colwise',
    'text_model.encoder.layers.*.self_attn.k_proj': 'colwise',
    'text_model.encoder.layers.*.self_attn.v_proj': 'colwise',
    'text_model.encoder.layers.*.self_attn.out_proj': 'rowwise',
    'text_model.encoder.layers.*.mlp.fc1': 'colwise',
    'text_model.encoder.layers.*.mlp.fc2': 'rowwise',
  },
});
