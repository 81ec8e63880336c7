// Deterministic random weights/inputs for plans (compiler tests).
import type { Plan } from '../../runtime/plan.ts';

import { mulberry32 as rng } from '../../runtime/seeded-random.ts';

export { rng };

export function randn(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/** weights ~ N(0, 1/fan_in) (norm weights ~ 1 + N(0, 0.1)), so activations stay O(1) */
export function randomWeights(plan: Plan, seed: number): Map<string, Float32Array> {
  const r = rng(seed);
  const m = new Map<string, Float32Array>();
  for (const w of plan.weights) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    const fan = w.shape.length >= 2 ? w.shape.slice(1).reduce((a, b) => a * b, 1) : 0;
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = fan ? randn(r) / Math.sqrt(fan) : /norm|weight$/.test(w.name) && w.shape.length === 1 && !w.name.endsWith('bias') ? 1 + 0.1 * randn(r) : 0.1 * randn(r);
    m.set(w.name, a);
  }
  return m;
}

/** inputs by name: ids/masks/timesteps get meaningful values, the rest N(0, 1) */
export function randomInputs(plan: Plan, seed: number): Record<string, Float32Array> {
  const r = rng(seed);
  const out: Record<string, Float32Array> = {};
  for (const i of plan.inputs) {
    const n = i.shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    if (i.name === 'img_ids') {
      const N = i.shape[0]!;
      const wTok = Number(plan.dims.width ?? 0) && Number(plan.dims.imageTokens) ? Math.round(Math.sqrt(N)) : N;
      const cols = plan.dims.width && plan.dims.height ? Math.round(Math.sqrt((N * plan.dims.width) / plan.dims.height)) : wTok;
      for (let t = 0; t < N; t++) {
        a[t * 3 + 1] = Math.floor(t / cols);
        a[t * 3 + 2] = t % cols;
      }
    } else if (i.name === 'txt_ids') {
      // zeros, like FLUX
    } else if (i.name === 'timestep' || i.name === 'guidance') {
      for (let k = 0; k < n; k++) a[k] = i.name === 'guidance' ? 3.5 : 0.1 + 0.8 * r();
    } else if (i.name === 'input_ids') {
      const V = Number(plan.config.vocab_size ?? 10);
      for (let k = 0; k < n; k++) a[k] = k % i.shape[1]! >= i.shape[1]! - 2 ? 0 : 1 + Math.floor(r() * (V - 1));
    } else if (i.name === 'attention_mask') {
      for (let k = 0; k < n; k++) a[k] = k % i.shape[1]! >= i.shape[1]! - 2 ? 0 : 1;
    } else for (let k = 0; k < n; k++) a[k] = randn(r);
    out[i.name] = a;
  }
  if (out.input_ids && out.attention_mask) for (let k = 0; k < out.input_ids.length; k++) out.attention_mask[k] = out.input_ids[k] !== 0 ? 1 : 0;
  return out;
}
