// Test-only model for the ControlNet context-parallel hook (Cache-DiT CN-P, docs/architecture.md §3c): a
// small ControlNet-style `controlnet` component that emits one residual per block, and a `transformer` that
// adds them after its blocks (Z-Image-ControlNet's wiring). Both split the image tokens at entry; the
// residuals stay token-sharded (`controlnet_cp.sharded`) and feed the transformer's `cp.residuals` inputs.
// Imports only the DSL, like every model file (the compiler checks it).
import { attention, component, invalidDim, model, withConfig, type Module, type Tensor } from '../../compiler/dsl/index.ts';

export interface CnConfig {
  num_layers: number;
  num_attention_heads: number;
  attention_head_dim: number;
  in_channels: number;
  text_dim: number;
}

const CONFIG: CnConfig = { num_layers: 2, num_attention_heads: 3, attention_head_dim: 8, in_channels: 6, text_dim: 10 };

const dims = {
  defaults: { batch: 2, imageTokens: 13, textTokens: 5 },
  resolve(_c: CnConfig, d: Record<string, number>) {
    if (d.imageTokens! < 1) invalidDim('imageTokens', d.imageTokens!, 'must be positive');
    return { dims: { B: d.batch!, imageTokens: d.imageTokens!, textTokens: d.textTokens! }, tag: `b${d.batch}-n${d.imageTokens}-t${d.textTokens}` };
  },
};

/** one block: self attention over the image tokens (Ulysses), cross attention to the whole text, an MLP */
function cnBlock(m: Module, h: Tensor, enc: Tensor, c: CnConfig): Tensor {
  const C = c.num_attention_heads * c.attention_head_dim;
  const H = c.num_attention_heads;
  const x = m.layerNorm('norm1', h, { eps: 1e-6 });
  const a = m.scope('attn1');
  h = h.add(a.linear('to_out', attention(a.linear('to_q', x, C), a.linear('to_k', x, C), a.linear('to_v', x, C), { heads: H }), C));
  const x2 = m.layerNorm('norm2', h, { eps: 1e-6 });
  const a2 = m.scope('attn2');
  h = h.add(a2.linear('to_out', attention(a2.linear('to_q', x2, C), a2.linear('to_k', enc, C), a2.linear('to_v', enc, C), { heads: H }), C));
  const f = m.scope('ff');
  return h.add(f.linear('out', f.linear('in', m.layerNorm(null, h, { eps: 1e-6 }), 2 * C, { act: 'gelu_tanh' }), C));
}

const inner = (c: CnConfig): number => c.num_attention_heads * c.attention_head_dim;

export const cnControlNet = component<CnConfig>({
  component: 'controlnet',
  className: 'TestControlNetModel',
  config: CONFIG,
  dims,
  inputs: (c, d) => ({ hidden_states: [d.B!, d.imageTokens!, c.in_channels], controlnet_cond: [d.B!, d.imageTokens!, c.in_channels], encoder_hidden_states: [d.B!, d.textTokens!, c.text_dim] }),
  forward(b, x, c) {
    const C = inner(c);
    let h = b.linear('x_embedder', x.hidden_states!, C).add(b.linear('cond_embedder', x.controlnet_cond!, C));
    const enc = b.linear('context_embedder', x.encoder_hidden_states!, C);
    const out: Record<string, Tensor> = {};
    for (let i = 0; i < c.num_layers; i++) {
      h = cnBlock(b.scope(`layers.${i}`), h, enc, c);
      out[`block_samples_${i}`] = b.linear(`controlnet_blocks.${i}`, h, C);
    }
    return out;
  },
});

export const cnTransformer = component<CnConfig>({
  component: 'transformer',
  className: 'TestControlNetTransformer',
  config: CONFIG,
  dims,
  inputs: (c, d) => {
    const C = inner(c);
    const ins: Record<string, number[]> = { hidden_states: [d.B!, d.imageTokens!, c.in_channels], encoder_hidden_states: [d.B!, d.textTokens!, c.text_dim] };
    for (let i = 0; i < c.num_layers; i++) ins[`controlnet_block_samples_${i}`] = [d.B!, d.imageTokens!, C];
    return ins;
  },
  forward(b, x, c) {
    let h = b.linear('x_embedder', x.hidden_states!, inner(c));
    const enc = b.linear('context_embedder', x.encoder_hidden_states!, inner(c));
    for (let i = 0; i < c.num_layers; i++) h = cnBlock(b.scope(`layers.${i}`), h, enc, c).add(x[`controlnet_block_samples_${i}`]!);
    return { output: b.linear('proj_out', b.layerNorm(null, h, { eps: 1e-6 }), c.in_channels) };
  },
});

const residuals = Object.fromEntries(Array.from({ length: CONFIG.num_layers }, (_, i) => [`controlnet_block_samples_${i}`, 1]));
const samples = Object.fromEntries(Array.from({ length: CONFIG.num_layers }, (_, i) => [`block_samples_${i}`, 1]));

export const controlNetCpModel = model('test-controlnet-cp', {
  components: { transformer: withConfig(cnTransformer, {}), controlnet: withConfig(cnControlNet, {}) },
  parallel: {
    attention: 'all',
    extra_parallel_modules: ['controlnet'],
    cp: { split: { hidden_states: 1 }, residuals, gather: { output: 1 }, dims: { hidden_states: 'imageTokens' } },
    controlnet_cp: { split: { hidden_states: 1, controlnet_cond: 1 }, gather: {}, sharded: samples, dims: { hidden_states: 'imageTokens', controlnet_cond: 'imageTokens' } },
  },
});
