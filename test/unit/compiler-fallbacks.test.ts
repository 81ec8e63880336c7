// Small hand-written models exercising the paths FLUX does not: P2 lists, [B, 1, C] modulation
// chunks from a broadcast add, unfused modulate/gate, gate_residual kernel, elementwise chains with
// constants, strided slices as outputs. Fused plan (JS interpreter) vs ONNX of the unfused IR.
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileDetailed, exportOnnx, registerModel } from '../../compiler/index.ts';
import { PlanInterpreter } from '../helpers/plan-interpreter.ts';
import { randomInputs, randomWeights } from '../helpers/random.ts';
import { relL2 } from '../helpers/safetensors-lite.ts';
import { goodModel, wanLike } from './fixtures/dsl-bad-models.ts';

beforeAll(() => {
  registerModel(goodModel.name, goodModel);
  registerModel(wanLike.name, wanLike);
});

describe.each([['good-p2'], ['good-wanlike']])('%s', (model) => {
  it('fused plan == ONNX (batch 3, 5 tokens), rel L2 <= 1e-5', async () => {
    const opts = { component: 'transformer' as const, dims: { batch: 3 } };
    const { plan } = compileDetailed(model, opts);
    const w = randomWeights(plan, 1);
    const ins = randomInputs(plan, 2);
    const it = new PlanInterpreter(plan, w);
    for (const [k, v] of Object.entries(ins)) it.setInput(k, v);
    it.runAll();
    const s = await ort.InferenceSession.create(exportOnnx(model, { ...opts, weights: w }));
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of plan.inputs) feeds[i.name] = new ort.Tensor('float32', ins[i.name]!, i.shape);
    const r = await s.run(feeds);
    for (const o of plan.outputs) expect(relL2(it.getOutput(o.name), r[o.name]!.data as Float32Array), o.name).toBeLessThanOrEqual(1e-5);
  });
});

describe('fallback kernels are used where nothing fuses', () => {
  it('wan-like: ln_modulate on [B,1,C] chunks, ew modulate after RMSNorm, gate_residual, epilogue 3', () => {
    const { plan, fusion } = compileDetailed('good-wanlike', { component: 'transformer', dims: { batch: 2 } });
    const ops = plan.segments.flatMap((s) => s.ops ?? s.blocks!.flatMap((b) => b.ops));
    expect(fusion.lnModulate).toBe(2);
    expect(fusion.linearGateResidual).toBe(2);
    expect(ops.filter((o) => o.k === 'gate_residual').length).toBe(2);
    expect(ops.filter((o) => o.k === 'rms_norm').length).toBe(2);
    const lm = ops.find((o) => o.k === 'ln_modulate')!;
    expect(lm.i[3]).toBe(384); // shift row stride = 6 * 64 (a view of the broadcast-add result)
    expect(plan.elementwise.length).toBeGreaterThan(0);
  });
});
