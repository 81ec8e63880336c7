// TE-P of the T5 encoders (Cache-DiT §4.9): FLUX.1's T5EncoderModel and Wan's UMT5EncoderModel tensor-parallel
// over 2 ranks (heads, their relative position bias columns, the gated-GELU hidden) == the diffusers
// pipelines' prompt embeddings on the fixtures (test/fixtures/*/reference) within 1e-5 relative L2.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileParallelPlans, directoryConfig } from '../../compiler/index.ts';
import { runShm } from '../../runtime/comm/index.ts';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { ComponentWeights } from '../../runtime/io/weights.ts';
import { relL2 } from '../../runtime/metrics.ts';
import { componentConfig } from '../../runtime/model-dir.ts';
import { native, nativeAvailable } from '../../runtime/native.ts';
import { ParallelExecutor } from '../../runtime/parallel/executor.ts';
import { planWeightData } from '../../runtime/parallel/tp.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures');

async function tep(dir: string, model: string, component: 'text_encoder' | 'text_encoder_2', inputs: Record<string, Float32Array>, tokens: number): Promise<Float32Array[]> {
  const config = directoryConfig(model, component, componentConfig(dir, component));
  const plans = compileParallelPlans(model, { component, dims: { batch: 1, textTokens: tokens }, config, parallel: { tp_size: 2 } });
  const w = await ComponentWeights.open(path.join(dir, component));
  expect(plans[1]!.weights.find((x) => x.name.endsWith('relative_attention_bias.weight'))!.slice).toMatchObject({ axis: 1, ranges: [[2, 2]] });
  return runShm(2, async (comm) => {
    const pe = new ParallelExecutor(comm, plans[comm.rank]!, native, { threads: 1 });
    for (const x of pe.plan.weights) pe.bindWeight(x.name, planWeightData(x, w.tensor(x.name), component));
    for (const [k, v] of Object.entries(inputs)) pe.setInput(k, v);
    await pe.forward();
    return pe.output('last_hidden_state');
  });
}

describe.skipIf(!nativeAvailable())('TE-P: T5 / UMT5 on 2 ranks', () => {
  it("Wan's UMT5 (per-layer bias tables, padding mask): the pipeline's prompt_embeds", async () => {
    const dir = path.join(FIX, 'wan2.1-random');
    const ref = openSafetensorsSync(path.join(dir, 'reference/golden_0_s4.safetensors'));
    const mask = Float32Array.from(ref.ints('attention_mask'));
    const outs = await tep(dir, 'wan2.1-t2v-1.3b', 'text_encoder', { input_ids: Float32Array.from(ref.ints('input_ids')), attention_mask: mask }, 512);
    const n = mask.reduce((a, b) => a + b, 0);
    for (const o of outs) {
      o.fill(0, n * 64); // WanPipeline zeroes the rows past the prompt
      const e = relL2(o, ref.tensor('prompt_embeds').data);
      console.log(`[te-p] umt5 tp=2: relL2 ${e.toExponential(2)}`);
      expect(e).toBeLessThan(1e-5);
    }
  });
  it("FLUX.1's T5 (block 0's bias table shared): the pipeline's prompt_embeds", async () => {
    const dir = path.join(FIX, 'flux1-random');
    const ref = openSafetensorsSync(path.join(dir, 'reference/golden_0_s4.safetensors'));
    const ids = Float32Array.from(ref.ints('t5_input_ids'));
    const outs = await tep(dir, 'flux1-dev', 'text_encoder_2', { input_ids: ids }, ids.length);
    for (const o of outs) {
      const e = relL2(o, ref.tensor('prompt_embeds').data);
      console.log(`[te-p] t5 tp=2: relL2 ${e.toExponential(2)}`);
      expect(e).toBeLessThan(1e-5);
    }
  });
});
