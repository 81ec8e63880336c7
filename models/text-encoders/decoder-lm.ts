// The decoder-only language models diffusion pipelines use as text encoders, as transformers builds them
// (LlamaModel, MistralModel, Qwen2Model, the Qwen2.5-VL text model, Qwen3Model, Gemma3TextModel): token
// embedding, pre-norm blocks of causal grouped-query self-attention with rotate-half RoPE and a gated MLP,
// RMSNorm, final norm. Gemma 3 (model_type gemma3_text: LTX-2's encoder) differs where transformers' Gemma3
// does: embeddings scaled by sqrt(hidden_size), every RMSNorm scaled by (1 + weight), norms after attention
// and after the MLP too, a gelu-tanh MLP, q/k norms, query_pre_attn_scalar^-0.5 attention scale, and RoPE per
// layer type (local layers their own base; linear scaling on the global ones). Its local layers' sliding
// window changes nothing while the prompt fits in it, which the dims check. The pipeline reads one entry of `hidden_states` (Qwen-Image: the last, after the final norm;
// Z-Image: the second to last): `output_hidden_state` picks it, transformers' indexing (0 = the embeddings,
// num_hidden_layers = the final-normed output, negative from the end).
//
// Qwen2.5-VL's multimodal RoPE gives a text token the same position on its three axes, so on text it is this
// 1-D RoPE (the rope kernel's rotate-half pairs: channel j with j + D/2). Grouped-query attention is the
// attention kernel's own (each key/value head serves H / kvHeads query heads; no repeat_kv copies).
import { applyRope, attention, component, concat, DslError, invalidDim, ropeTable, type Module, type Tensor } from '../../compiler/dsl/index.ts';

/** transformers config keys the encoder reads, plus the pipeline's choice of hidden state */
export interface DecoderLmConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  /** null: hidden_size / num_attention_heads */
  head_dim: number | null;
  rms_norm_eps: number;
  rope_theta: number | null;
  /** transformers 5 keeps the RoPE base here ({ rope_theta, rope_type }); rope_scaling: transformers 4's type */
  rope_parameters: Record<string, unknown> | null;
  rope_scaling: Record<string, unknown> | null;
  hidden_act: string;
  /** q/k/v projections with bias (Qwen2 / Qwen2.5-VL: true; Llama, Mistral, Qwen3: false) */
  attention_bias: boolean;
  /** per-head RMSNorm of q and k before RoPE (Qwen3) */
  qk_norm: boolean;
  /** checkpoint key prefix of the language model ("model." for *ForCausalLM / Qwen2.5-VL as saved by transformers 4) */
  weight_prefix: string;
  /** which `hidden_states` entry is the output (transformers indexing; -1 = after the final norm) */
  output_hidden_state: number;
  /**
   * several entries side by side instead (Flux2KleinPipeline: torch.stack of hidden_states 9, 18, 27, permuted to
   * [B, S, 3 * hidden]: each token's rows in this order); null: output_hidden_state alone
   */
  output_hidden_states?: number[] | null;
  /** transformers' model_type ('gemma3_text' selects Gemma 3's layer; others are Llama-like) */
  model_type?: string;
  /** Gemma 3: the attention scale is query_pre_attn_scalar^-0.5 */
  query_pre_attn_scalar?: number | null;
  /** Gemma 3: per layer 'sliding_attention' or 'full_attention' (each with its rope_parameters entry) */
  layer_types?: string[] | null;
  sliding_window?: number | null;
  /** Gemma's name of hidden_act */
  hidden_activation?: string | null;
  [key: string]: unknown;
}

/** the `hidden_states` entries the output holds, in order */
function hiddenStates(c: DecoderLmConfig): number[] {
  return c.output_hidden_states?.length ? c.output_hidden_states : [c.output_hidden_state];
}

function isGemma(c: DecoderLmConfig): boolean {
  return c.model_type === 'gemma3_text' || c.model_type === 'gemma3';
}

/** the RoPE of a layer: its base and its linear scaling factor (positions / factor) */
interface LayerRope {
  theta: number;
  factor: number;
}

/** Gemma 3's RoPE of one layer type: rope_parameters[type] = { rope_type default | linear, rope_theta, factor } */
function gemmaRope(c: DecoderLmConfig, type: string): LayerRope {
  const p = (c.rope_parameters as Record<string, Record<string, unknown>> | null)?.[type];
  if (!p || typeof p !== 'object') throw new DslError(`decoder text encoder (gemma3): rope_parameters has no '${type}' entry (layer_types names it)`);
  const rt = p.rope_type ?? 'default';
  const theta = p.rope_theta;
  if (typeof theta !== 'number' || !(theta > 0)) throw new DslError(`decoder text encoder (gemma3): rope_parameters.${type}.rope_theta must be a positive number, got ${JSON.stringify(theta)}`);
  if (rt === 'default') return { theta, factor: 1 };
  if (rt === 'linear' && typeof p.factor === 'number' && p.factor > 0) return { theta, factor: p.factor };
  throw new DslError(`decoder text encoder (gemma3): rope_parameters.${type} type '${String(rt)}' is not supported (supported: default, linear with a positive factor)`);
}

/** the layer types of a Gemma 3 config (every layer full attention without layer_types) */
function layerTypes(c: DecoderLmConfig): string[] {
  const t = c.layer_types ?? new Array<string>(c.num_hidden_layers).fill('full_attention');
  if (t.length !== c.num_hidden_layers || !t.every((x) => x === 'full_attention' || x === 'sliding_attention')) {
    throw new DslError(`decoder text encoder (gemma3): layer_types must list ${c.num_hidden_layers} entries of 'full_attention' / 'sliding_attention', got ${JSON.stringify(c.layer_types)}`);
  }
  return t;
}

/** RMSNorm as the family has it: weight w (Llama) or (1 + w) (Gemma, in float32 as Gemma3RMSNorm) */
function norm(m: Module, name: string, x: Tensor, c: DecoderLmConfig): Tensor {
  return m.rmsNorm(name, x, { eps: c.rms_norm_eps, ...(isGemma(c) ? { offset: 1 } : {}) });
}

/** the RoPE base; scaled variants (Llama 3's, YaRN, ...) are refused. Qwen2.5-VL's mrope is the 1-D RoPE on text. */
function ropeTheta(c: DecoderLmConfig): number {
  for (const [key, v] of [['rope_parameters', c.rope_parameters], ['rope_scaling', c.rope_scaling]] as const) {
    const type = v ? (v.rope_type ?? v.type ?? 'default') : 'default';
    if (type !== 'default' && type !== 'mrope') throw new DslError(`decoder text encoder: ${key} type '${String(type)}' is not supported (supported: default, and mrope on text positions)`);
  }
  const theta = (c.rope_parameters?.rope_theta as number | undefined) ?? c.rope_theta;
  if (typeof theta !== 'number' || !(theta > 0)) throw new DslError(`decoder text encoder: no RoPE base (rope_theta or rope_parameters.rope_theta), got ${JSON.stringify(theta)}`);
  return theta;
}

function headDim(c: DecoderLmConfig): number {
  return c.head_dim ?? c.hidden_size / c.num_attention_heads;
}

function decoderLayer(m: Module, h: Tensor, mask: Tensor, rope: Tensor, c: DecoderLmConfig): Tensor {
  const H = c.num_attention_heads;
  const Hkv = c.num_key_value_heads;
  const D = headDim(c);
  const eps = c.rms_norm_eps;
  const gemma = isGemma(c);
  const a = m.scope('self_attn');
  const n = norm(m, 'input_layernorm', h, c);
  const bias = c.attention_bias;
  let q = a.linear('q_proj', n, H * D, { bias });
  let k = a.linear('k_proj', n, Hkv * D, { bias });
  const v = a.linear('v_proj', n, Hkv * D, { bias });
  if (c.qk_norm || gemma) {
    const offset = gemma ? { offset: 1 } : {};
    q = a.headRmsNorm('q_norm', q, { heads: H, eps, ...offset });
    k = a.headRmsNorm('k_norm', k, { heads: Hkv, eps, ...offset });
  }
  q = applyRope(q, rope, { heads: H, half: true });
  k = applyRope(k, rope, { heads: Hkv, half: true });
  const scale = gemma ? c.query_pre_attn_scalar! ** -0.5 : undefined;
  const o = attention(q, k, v, { heads: H, kvHeads: Hkv, causal: true, keyMask: mask, ...(scale !== undefined ? { scale } : {}) });
  // Qwen2's o_proj has no bias beside its q/k/v biases; Gemma's follows attention_bias
  const attn = a.linear('o_proj', o, c.hidden_size, { bias: gemma && bias });
  h = h.add(gemma ? norm(m, 'post_attention_layernorm', attn, c) : attn);
  const f = m.scope('mlp');
  const n2 = norm(m, gemma ? 'pre_feedforward_layernorm' : 'post_attention_layernorm', h, c);
  const act = f.linear('gate_proj', n2, c.intermediate_size, { bias: false, act: gemma ? 'gelu_tanh' : 'silu' }).mul(f.linear('up_proj', n2, c.intermediate_size, { bias: false }));
  const mlp = f.linear('down_proj', act, c.hidden_size, { bias: false });
  return h.add(gemma ? norm(m, 'post_feedforward_layernorm', mlp, c) : mlp);
}

export const decoderLm = component<DecoderLmConfig>({
  component: 'text_encoder',
  className: 'Qwen2_5_VLForConditionalGeneration',
  // Qwen/Qwen-Image text_encoder/config.json (Qwen2.5-VL-7B-Instruct, text part)
  config: {
    vocab_size: 152064,
    hidden_size: 3584,
    intermediate_size: 18944,
    num_hidden_layers: 28,
    num_attention_heads: 28,
    num_key_value_heads: 4,
    head_dim: null,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    rope_parameters: null,
    // mrope_section [16, 24, 24] in the real config: one position per text token makes it 1-D RoPE
    rope_scaling: null,
    hidden_act: 'silu',
    attention_bias: true,
    qk_norm: false,
    weight_prefix: 'model.',
    output_hidden_state: -1,
    model_type: 'qwen2_5_vl_text',
    // Gemma 3's (unused by the Llama-like layer)
    query_pre_attn_scalar: null,
    layer_types: null,
    sliding_window: null,
    hidden_activation: null,
  },
  dims: {
    defaults: { batch: 1, textTokens: 512 },
    resolve(c, d) {
      if (d.textTokens! < 1) invalidDim('textTokens', d.textTokens!, 'must be at least 1');
      if (isGemma(c)) {
        const act = c.hidden_activation ?? c.hidden_act;
        if (act !== 'gelu_pytorch_tanh') throw new DslError(`decoder text encoder (gemma3): hidden_activation '${String(act)}' is not supported (supported: gelu_pytorch_tanh)`);
        if (typeof c.query_pre_attn_scalar !== 'number' || !(c.query_pre_attn_scalar > 0)) throw new DslError(`decoder text encoder (gemma3): query_pre_attn_scalar must be a positive number, got ${JSON.stringify(c.query_pre_attn_scalar)}`);
        const types = layerTypes(c);
        for (const t of new Set(types)) gemmaRope(c, t);
        // a local layer attends to keys closer than sliding_window: the whole prompt while it fits
        const w = c.sliding_window;
        if (types.includes('sliding_attention') && (typeof w !== 'number' || d.textTokens! > w)) {
          throw new DslError(`decoder text encoder (gemma3): ${d.textTokens} text tokens exceed sliding_window ${String(w)} of the local layers (their window mask is not implemented; use at most ${String(w)} tokens)`);
        }
      } else {
        if (c.hidden_act !== 'silu') throw new DslError(`decoder text encoder: hidden_act '${c.hidden_act}' is not supported (supported: silu, the SwiGLU MLP of Llama / Mistral / Qwen)`);
        ropeTheta(c);
      }
      const D = headDim(c);
      if (!Number.isInteger(D) || D % 2 !== 0) throw new DslError(`decoder text encoder: head dim ${D} must be an even integer (RoPE rotates pairs)`);
      if (c.num_attention_heads % c.num_key_value_heads !== 0) {
        throw new DslError(`decoder text encoder: num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`);
      }
      const L = c.num_hidden_layers;
      for (const k of hiddenStates(c)) {
        if (!Number.isInteger(k) || k < -(L + 1) || k > L) throw new DslError(`decoder text encoder: output_hidden_state ${k} is outside -${L + 1} .. ${L} (hidden_states has ${L + 1} entries)`);
      }
      return { dims: { B: d.batch!, textTokens: d.textTokens! }, tag: `b${d.batch}-t${d.textTokens}` };
    },
  },
  // attention_mask: 1 = token, 0 = padding; position_ids [S, 1]: 0 .. S-1 (the DSL has no iota)
  inputs: (_c, d) => ({ input_ids: [d.B!, d.textTokens!], attention_mask: [d.B!, d.textTokens!], position_ids: [d.textTokens!, 1] }),
  forward(b, x, c) {
    const L = c.num_hidden_layers;
    const wanted = hiddenStates(c).map((k) => (k < 0 ? L + 1 + k : k));
    const want = Math.max(...wanted);
    const m = c.weight_prefix ? b.scope(c.weight_prefix.replace(/\.$/, '')) : b;
    let h = m.embedding('embed_tokens', x.input_ids!, { num: c.vocab_size, dim: c.hidden_size });
    // Gemma3TextScaledWordEmbedding: times float32(sqrt(hidden_size))
    if (isGemma(c)) h = h.scale(Math.sqrt(c.hidden_size));
    const states = new Map<number, Tensor>([[0, h]]);
    const output = (): { hidden_states: Tensor } => {
      const hs = wanted.map((k) => states.get(k)!);
      return { hidden_states: hs.length === 1 ? hs[0]! : concat(hs, -1) };
    };
    if (want === 0) return output();
    // one RoPE table per distinct (base, scaling); linear scaling divides the positions
    const tables = new Map<string, Tensor>();
    const ropeOf = (r: LayerRope): Tensor => {
      const key = `${r.theta}/${r.factor}`;
      let t = tables.get(key);
      if (!t) tables.set(key, (t = ropeTable(r.factor === 1 ? x.position_ids! : x.position_ids!.scale(1 / r.factor), { axes: [headDim(c)], theta: r.theta })));
      return t;
    };
    const types = isGemma(c) ? layerTypes(c) : null;
    // layers past the chosen hidden state never run (and their weights are not read)
    for (let i = 0; i < Math.min(want, L); i++) {
      const rope = ropeOf(types ? gemmaRope(c, types[i]!) : { theta: ropeTheta(c), factor: 1 });
      h = decoderLayer(m.scope(`layers.${i}`), h, x.attention_mask!, rope, c);
      states.set(i + 1, h);
    }
    if (want === L) states.set(L, norm(m, 'norm', h, c));
    return output();
  },
  // TE-P (Cache-DiT §4.9): query and key/value heads and the MLP hidden split over the ranks (tp_size must
  // divide num_key_value_heads); under each weight_prefix the pipelines use
  tp: { ...layerTp(''), ...layerTp('model.'), ...layerTp('model.language_model.') },
});

/** the TP styles of the decoder layers' linears under one checkpoint prefix */
function layerTp(prefix: string): Record<string, 'colwise' | 'rowwise'> {
  const p = `${prefix}layers.*.`;
  return {
    [`${p}self_attn.q_proj`]: 'colwise',
    [`${p}self_attn.k_proj`]: 'colwise',
    [`${p}self_attn.v_proj`]: 'colwise',
    [`${p}self_attn.o_proj`]: 'rowwise',
    [`${p}mlp.gate_proj`]: 'colwise',
    [`${p}mlp.up_proj`]: 'colwise',
    [`${p}mlp.down_proj`]: 'rowwise',
  };
}
