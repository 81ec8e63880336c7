// Float64-accumulating reference attention with log-sum-exp, deterministic RNG and error metrics:
// the host-side ground truth the distributed (Ulysses / ring / USP) paths are checked against.

import { Rng } from '../seeded-random.ts';

export { Rng };

export function randn(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

export interface AttentionResult {
  /** `[B, Sq, H, D]` float32. */
  o: Float32Array;
  /** `[B, H, Sq]` natural-log sum of exp(scores) (float64). */
  lse: Float64Array;
}

/**
 * softmax(q k^T * scale) v per (b, h), q `[B, Sq, H, D]`, k/v `[B, Sk, H, D]`, float64 accumulation.
 * Sk == 0 gives o = 0 and lse = -inf (an empty block in a ring merge).
 */
export function attentionRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  B: number,
  Sq: number,
  Sk: number,
  H: number,
  D: number,
  scale = 1 / Math.sqrt(D),
): AttentionResult {
  const o = new Float32Array(B * Sq * H * D);
  const lse = new Float64Array(B * H * Sq);
  const s = new Float64Array(Sk);
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Sq; i++) {
        const qi = ((b * Sq + i) * H + h) * D;
        let mx = -Infinity;
        for (let j = 0; j < Sk; j++) {
          const kj = ((b * Sk + j) * H + h) * D;
          let d = 0;
          for (let c = 0; c < D; c++) d += q[qi + c] * k[kj + c];
          s[j] = d * scale;
          if (s[j] > mx) mx = s[j];
        }
        acc.fill(0);
        let den = 0;
        for (let j = 0; j < Sk; j++) {
          const p = Math.exp(s[j] - mx);
          den += p;
          const vj = ((b * Sk + j) * H + h) * D;
          for (let c = 0; c < D; c++) acc[c] += p * v[vj + c];
        }
        for (let c = 0; c < D; c++) o[qi + c] = den > 0 ? acc[c] / den : 0;
        lse[(b * H + h) * Sq + i] = Sk > 0 ? mx + Math.log(den) : -Infinity;
      }
  return { o, lse };
}

export { relL2, psnr } from '../metrics.ts';

/** Splits `n` into `parts` sizes like torch.tensor_split: the first n % parts get one more. */
export function tensorSplitSizes(n: number, parts: number): number[] {
  const base = Math.floor(n / parts);
  const extra = n % parts;
  return Array.from({ length: parts }, (_, i) => base + (i < extra ? 1 : 0));
}

/** Rows [start, start+len) of a `[B, S, C]` tensor (sequence shard), as a new `[B, len, C]` array. */
export function sliceSeq(x: Float32Array, B: number, S: number, C: number, start: number, len: number): Float32Array {
  const out = new Float32Array(B * len * C);
  for (let b = 0; b < B; b++) out.set(x.subarray((b * S + start) * C, (b * S + start + len) * C), b * len * C);
  return out;
}

/** Inverse of sliceSeq over all shards: concatenates `[B, len_r, C]` parts along S. */
export function concatSeq(parts: Float32Array[], B: number, C: number): Float32Array {
  const lens = parts.map((p) => p.length / (B * C));
  const S = lens.reduce((a, b) => a + b, 0);
  const out = new Float32Array(B * S * C);
  let s0 = 0;
  parts.forEach((p, r) => {
    for (let b = 0; b < B; b++) out.set(p.subarray(b * lens[r] * C, (b + 1) * lens[r] * C), (b * S + s0) * C);
    s0 += lens[r];
  });
  return out;
}
