// A random LoRA over tiny-flux modules (peft keys under `transformer.`, alpha stored) and the weights it
// merges to, computed in float64: W + scale x alpha / r x B A.
import path from 'node:path';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';
import { PACKAGE_ROOT } from '../../runtime/pipeline.ts';
import { Rng } from '../../runtime/seeded-random.ts';

export interface LoraFixture {
  targets: string[];
  rank: number;
  alpha: number;
  /** the scale the merged weights are for */
  scale: number;
  seed: number;
  /** file name in `dir` (default lora.safetensors) */
  name?: string;
}

export function makeLora(dir: string, o: LoraFixture): { file: string; merged: Map<string, Float32Array> } {
  const base = openSafetensorsSync(path.join(PACKAGE_ROOT, 'models', 'tiny-flux', 'transformer', 'diffusion_pytorch_model.safetensors'));
  const rng = new Rng(o.seed);
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  const merged = new Map<string, Float32Array>();
  const { rank } = o;
  for (const m of o.targets) {
    const w = base.tensor(`${m}.weight`);
    const [out, inF] = w.shape as [number, number];
    const A = Float32Array.from({ length: rank * inF }, () => rng.normal() * 0.3);
    const B = Float32Array.from({ length: out * rank }, () => rng.normal() * 0.3);
    tensors[`transformer.${m}.lora_A.weight`] = { dtype: 'F32', shape: [rank, inF], data: A };
    tensors[`transformer.${m}.lora_B.weight`] = { dtype: 'F32', shape: [out, rank], data: B };
    tensors[`transformer.${m}.alpha`] = { dtype: 'F32', shape: [], data: Float32Array.of(o.alpha) };
    const f = o.scale * (o.alpha / rank);
    const mw = new Float32Array(out * inF);
    for (let r = 0; r < out; r++)
      for (let i = 0; i < inF; i++) {
        let d = 0;
        for (let k = 0; k < rank; k++) d += B[r * rank + k]! * A[k * inF + i]!;
        mw[r * inF + i] = w.data[r * inF + i]! + f * d;
      }
    merged.set(`${m}.weight`, mw);
  }
  const file = path.join(dir, o.name ?? 'lora.safetensors');
  writeSafetensors(file, tensors);
  return { file, merged };
}
