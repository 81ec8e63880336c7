// Deterministic stand-ins the benches feed a plan (random weights and inputs of the right shapes), and the
// median they report.
import { imageIds, textIds } from '../../runtime/latents.ts';
import type { Plan } from '../../runtime/plan.ts';
import { rng as uniform } from '../helpers/random.ts';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** deterministic uniform in [-1, 1) */
function rng(seed: number): () => number {
  const u = uniform(seed);
  return () => u() * 2 - 1;
}

/**
 * nn.Linear-like random weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); norm weights ~1; biases small.
 * `alloc` makes each array (the parallel bench shares them with its worker ranks).
 */
export function randomWeights(plan: Plan, alloc: (n: number) => Float32Array = (n) => new Float32Array(n)): Map<string, Float32Array> {
  const r = rng(1234);
  const out = new Map<string, Float32Array>();
  for (const w of plan.weights) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    const a = alloc(n);
    if (w.shape.length >= 2) {
      const bound = 1 / Math.sqrt(w.shape.slice(1).reduce((x, y) => x * y, 1));
      for (let i = 0; i < n; i++) a[i] = r() * bound;
    } else if (/norm/.test(w.name) && w.name.endsWith('weight')) {
      for (let i = 0; i < n; i++) a[i] = 1 + 0.1 * r();
    } else {
      for (let i = 0; i < n; i++) a[i] = 0.02 * r();
    }
    out.set(w.name, a);
  }
  return out;
}

/** the plan's inputs: real image / text position ids, timestep 0.7, the rest U(-1, 1) */
export function randomInputs(plan: Plan, dims: { height: number; width: number; textTokens: number }): Record<string, Float32Array> {
  const r = rng(99);
  const ins: Record<string, Float32Array> = {};
  for (const io of plan.inputs) {
    const n = io.shape.reduce((a, b) => a * b, 1);
    if (io.name === 'img_ids') {
      // packed token grid h2 x w2 with h2 / w2 = height / width
      const h2 = Math.round(Math.sqrt((io.shape[0]! * dims.height) / dims.width));
      ins[io.name] = imageIds(h2, io.shape[0]! / h2);
    } else if (io.name === 'txt_ids') ins[io.name] = textIds(dims.textTokens);
    else if (io.name === 'timestep') ins[io.name] = new Float32Array(n).fill(0.7);
    else ins[io.name] = Float32Array.from({ length: n }, () => r());
  }
  return ins;
}
