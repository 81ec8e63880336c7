// The decoder-only text encoders (models/text-encoders/decoder-lm.ts) against transformers' own Llama,
// Mistral, Qwen2 (= Qwen2.5-VL's text model on text), Qwen3 and Gemma 3's text model at scaled-down sizes with random weights
// (test/fixtures/decoder-lm, made by test/parity/make-decoder-lm-references.py): a right-padded batch of
// two prompts, the last, the second-to-last and the first layer's hidden states within 1e-5 relative L2
// (float32 end to end; measured ~1e-7), the same plan on onnxruntime (the exported ONNX) alike, and the
// tensor-parallel plan (TE-P) on 2 ranks.
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, compilePlan, exportOnnx } from '../../compiler/index.ts';
import { runShm } from '../../runtime/comm/index.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import { planWeightData } from '../../runtime/parallel/tp.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { runNative } from '../helpers/run-plan.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/decoder-lm');
const FAMILIES = { llama: {}, mistral: {}, qwen2: { attention_bias: true }, qwen3: { qk_norm: true }, gemma3: {} } as const;

/** our config from the transformers config the reference was made with */
function configOf(hf: Record<string, unknown>, extra: object, layer: number): Record<string, unknown> {
  const keys = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'rms_norm_eps', 'hidden_act', 'rope_parameters', 'model_type', 'hidden_activation', 'query_pre_attn_scalar', 'layer_types', 'sliding_window'];
  const c: Record<string, unknown> = Object.fromEntries(keys.filter((k) => hf[k] !== undefined).map((k) => [k, hf[k]]));
  return { ...c, head_dim: (hf.head_dim as number | undefined) ?? null, rope_theta: null, attention_bias: false, qk_norm: false, weight_prefix: 'model.', output_hidden_state: layer, ...extra };
}

describe.skipIf(!nativeAvailable())('decoder-only text encoders vs transformers', () => {
  for (const [family, extra] of Object.entries(FAMILIES)) {
    it(`${family}: hidden_states[-1], [-2] and [1] within 1e-5; onnxruntime agrees`, async () => {
      const f = openSafetensorsSync(path.join(DIR, `${family}.safetensors`));
      const hf = JSON.parse(f.metadata.config!) as Record<string, unknown>;
      const L = hf.num_hidden_layers as number;
      const ids = Float32Array.from(f.ints('input_ids'));
      const mask = Float32Array.from(f.ints('attention_mask'));
      const [B, S] = f.info('input_ids').shape as [number, number];
      const inputs = { input_ids: ids, attention_mask: mask, position_ids: Float32Array.from({ length: S }, (_, i) => i) };
      for (const layer of [-1, -2, 1]) {
        const config = configOf(hf, extra, layer);
        const opts = { component: 'text_encoder' as const, dims: { batch: B, textTokens: S }, config };
        const model = family === 'gemma3' ? 'gemma3-text' : 'qwen-image';
        const plan = compilePlan(model, opts);
        const weights = new Map(plan.weights.map((w) => [w.name, f.tensor(w.name).data] as const));
        const got = runNative(plan, weights, inputs).hidden_states!;
        const want = f.tensor(`hidden_state_${layer < 0 ? L + 1 + layer : layer}`).data;
        const e = relL2(got, want);
        const sess = await ort.InferenceSession.create(exportOnnx(model, { ...opts, weights }));
        const feeds = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, new ort.Tensor('float32', v, plan.inputs.find((i) => i.name === k)!.shape)]));
        const o = (await sess.run(feeds)).hidden_states!.data as Float32Array;
        await sess.release();
        const eo = relL2(got, o);
        console.log(`[decoder-lm] ${family} hidden_states[${layer}]: relL2 vs transformers ${e.toExponential(2)}, vs onnxruntime ${eo.toExponential(2)}`);
        expect(e).toBeLessThan(1e-5);
        expect(eo).toBeLessThan(1e-5);
      }
    });
  }
  it('TE-P: qwen3 (GQA 4:2, qk-norm), qwen2 (q/k/v bias) and gemma3 tensor-parallel over 2 ranks == transformers within 1e-5', async () => {
    for (const family of ['qwen3', 'qwen2', 'gemma3'] as const) {
      const f = openSafetensorsSync(path.join(DIR, `${family}.safetensors`));
      const hf = JSON.parse(f.metadata.config!) as Record<string, unknown>;
      const [B, S] = f.info('input_ids').shape as [number, number];
      const inputs = { input_ids: Float32Array.from(f.ints('input_ids')), attention_mask: Float32Array.from(f.ints('attention_mask')), position_ids: Float32Array.from({ length: S }, (_, i) => i) };
      const opts = { component: 'text_encoder' as const, dims: { batch: B, textTokens: S }, config: configOf(hf, FAMILIES[family], -1) };
      const plans = compileParallelPlans(family === 'gemma3' ? 'gemma3-text' : 'qwen-image', { ...opts, parallel: { tp_size: 2 } });
      const outs = await runShm(2, async (comm) => {
        const pe = new ParallelExecutor(comm, plans[comm.rank]!, native, { threads: 1 });
        for (const w of pe.plan.weights) pe.bindWeight(w.name, planWeightData(w, f.tensor(w.name), `${family}.safetensors`));
        for (const [k, v] of Object.entries(inputs)) pe.setInput(k, v);
        await pe.forward();
        return pe.output('hidden_states');
      });
      const want = f.tensor(`hidden_state_${hf.num_hidden_layers as number}`).data;
      for (const o of outs) {
        const e = relL2(o, want);
        console.log(`[decoder-lm] ${family} tp=2: relL2 vs transformers ${e.toExponential(2)}`);
        expect(e).toBeLessThan(1e-5);
      }
    }
  });
  it('refuses what it does not implement, naming the field', () => {
    const base = { num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 96, vocab_size: 50 };
    const bad = (c: object) => () => compilePlan('qwen-image', { component: 'text_encoder', dims: { batch: 1, textTokens: 4 }, config: { ...base, ...c } });
    expect(bad({ hidden_act: 'gelu' })).toThrow(/hidden_act 'gelu' is not supported/);
    expect(bad({ rope_parameters: { rope_type: 'llama3', rope_theta: 5e5 } })).toThrow(/rope_parameters type 'llama3' is not supported/);
    expect(bad({ num_key_value_heads: 3 })).toThrow(/num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
    expect(bad({ output_hidden_state: 5 })).toThrow(/output_hidden_state 5 is outside -3 \.\. 2/);
    const gemma = { model_type: 'gemma3_text', hidden_activation: 'gelu_pytorch_tanh', query_pre_attn_scalar: 16, layer_types: ['sliding_attention', 'full_attention'], sliding_window: 3, rope_parameters: { sliding_attention: { rope_type: 'default', rope_theta: 1e4 }, full_attention: { rope_type: 'default', rope_theta: 1e6 } } };
    expect(bad(gemma)).toThrow(/4 text tokens exceed sliding_window 3 of the local layers/);
    expect(bad({ ...gemma, sliding_window: 8, rope_parameters: { sliding_attention: { rope_type: 'yarn', rope_theta: 1e4 }, full_attention: { rope_theta: 1e6 } } })).toThrow(/rope_parameters\.sliding_attention type 'yarn' is not supported/);
    expect(bad({ ...gemma, sliding_window: 8, layer_types: ['full_attention'] })).toThrow(/layer_types must list 2 entries/);
  });
});
