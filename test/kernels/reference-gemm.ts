// float64 references for the two heavy kernels, `linear` and `attention` (docs/architecture.md §2),
// plus the rounding-error bounds the tests compare against.

/** unit roundoff of float32 */
export const U32 = 2 ** -24;

export const geluTanh = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
export const silu = (x: number): number => x / (1 + Math.exp(-x));

export interface LinearArgs {
  x: Float32Array; // [M, K]
  W: Float32Array; // [N, K] (PyTorch layout)
  bias: Float32Array | null; // [N]
  gate: Float32Array | null; // rows of gateStride floats, one per batch (m / S)
  residual: Float32Array | null; // [M, N]
  M: number;
  N: number;
  K: number;
  epilogue: number;
  S: number;
  gateStride: number;
}

/**
 * y (float64) and an elementwise error bound for a float32 implementation.
 * The accumulation bound is the classical one for a float32 dot product of length K (any summation
 * order, with or without FMA): |acc - exact| <= gamma_K * sum_k |x_k w_k| (+ |b|), gamma_K ~ K u.
 * gelu_tanh and silu have |f'| <= 1.13, so the same bound carries through, plus a few ulps of the
 * function itself (vectorized exp / tanh: 8 u |y|). Epilogue 3 scales the acc bound by |gate| and
 * adds the two float32 roundings of the fused multiply-add / per-K-block updates (4 u (|r| + |y|)).
 */
export function linearRef(a: LinearArgs): { y: Float64Array; tol: Float64Array } {
  const { x, W, bias, gate, residual, M, N, K, epilogue, S, gateStride } = a;
  const y = new Float64Array(M * N), tol = new Float64Array(M * N);
  const gammaK = ((K + 2) * U32) / (1 - (K + 2) * U32);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0, mag = 0;
      for (let k = 0; k < K; k++) {
        const p = x[m * K + k] * W[n * K + k];
        acc += p;
        mag += Math.abs(p);
      }
      if (bias) {
        acc += bias[n];
        mag += Math.abs(bias[n]);
      }
      let v: number, t: number;
      const accTol = gammaK * mag + 1e-30;
      if (epilogue === 0) {
        v = acc;
        t = accTol + U32 * Math.abs(v);
      } else if (epilogue === 1) {
        v = geluTanh(acc);
        t = 1.13 * accTol + 8 * U32 * Math.abs(v) + 1e-12;
      } else if (epilogue === 2) {
        v = silu(acc);
        t = 1.13 * accTol + 8 * U32 * Math.abs(v) + 1e-12;
      } else {
        const g = gate ? gate[Math.floor(m / S) * gateStride + n] : 1;
        const r = residual ? residual[m * N + n] : 0;
        v = r + g * acc;
        t = Math.abs(g) * accTol + 4 * U32 * (Math.abs(r) + Math.abs(v) + Math.abs(g * acc));
      }
      y[m * N + n] = v;
      tol[m * N + n] = t;
    }
  }
  return { y, tol };
}

export interface AttentionArgs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  keyMask: Float32Array | null; // [B, Sk], 1 keep / 0 drop
  B: number;
  Sq: number;
  Sk: number;
  H: number;
  D: number;
  qStride: number;
  kStride: number;
  vStride: number;
  scale: number;
  /** [H, Sq, Sk] added to the scaled scores (attention_bias) */
  bias?: Float32Array | null;
  /** query i sees keys 0..i (attention_bias) */
  causal?: boolean;
}

/**
 * Compact output [B*Sq, H*D] (float64) and an elementwise bound.
 * Error model: each score s_j = scale * q.k_j carries |ds_j| <= gamma_D * scale * sum_d |q_d k_jd|;
 * softmax turns a score perturbation of at most delta into probabilities p_j (1 + e_j), |e_j| <= 2 delta
 * (+ a few ulps of exp), so |do| <= (2 delta + 8 u) * sum_j p_j |v_j| + gamma_Sk * max|v| for the
 * float32 P V accumulation and normalization.
 * A row whose keys are all dropped is exactly 0 (tolerance 0).
 * `lse` [B, Sq, H] (attention_lse): log sum_j exp(s_j) = mx + log(l), -inf when every key is dropped; bound
 * `lseTol`: the score error delta moves it by at most delta, the float32 sum l of Sk exps (each a few ulps)
 * by (Sk + 16) u relative -> that much absolute in log, plus the rounding of m + log(l) (2 u |lse|).
 */
export function attentionRef(a: AttentionArgs): { o: Float64Array; tol: Float64Array; lse: Float64Array; lseTol: Float64Array } {
  const { q, k, v, keyMask, B, Sq, Sk, H, D, qStride, kStride, vStride, scale } = a;
  const bias = a.bias ?? null;
  const HD = H * D;
  const o = new Float64Array(B * Sq * HD), tol = new Float64Array(B * Sq * HD);
  const lse = new Float64Array(B * Sq * H).fill(-Infinity), lseTol = new Float64Array(B * Sq * H);
  const gammaD = (D + 2) * U32, gammaS = (Sk + 4) * U32;
  const s = new Float64Array(Sk), p = new Float64Array(Sk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Sq; i++) {
        const qo = (b * Sq + i) * qStride + h * D;
        let mx = -Infinity, delta = 0;
        for (let j = 0; j < Sk; j++) {
          if ((keyMask && !(keyMask[b * Sk + j] > 0.5)) || (a.causal && j > i)) {
            s[j] = -Infinity;
            continue;
          }
          const ko = (b * Sk + j) * kStride + h * D;
          let dot = 0, mag = 0;
          for (let d = 0; d < D; d++) {
            dot += q[qo + d] * k[ko + d];
            mag += Math.abs(q[qo + d] * k[ko + d]);
          }
          const bj = bias ? bias[(h * Sq + i) * Sk + j]! : 0;
          s[j] = dot * scale + bj;
          // the float32 score: the dot product, its scaling, and the rounding of the bias addition
          delta = Math.max(delta, (gammaD * mag + U32 * Math.abs(dot)) * Math.abs(scale) + 2 * U32 * (Math.abs(dot * scale) + Math.abs(bj)));
          mx = Math.max(mx, s[j]);
        }
        const oo = (b * Sq + i) * HD + h * D;
        if (mx === -Infinity) continue; // all keys dropped: exactly 0
        let l = 0;
        for (let j = 0; j < Sk; j++) {
          p[j] = s[j] === -Infinity ? 0 : Math.exp(s[j] - mx);
          l += p[j];
        }
        const li = (b * Sq + i) * H + h;
        lse[li] = mx + Math.log(l);
        lseTol[li] = delta + (Sk + 16) * U32 + 2 * U32 * Math.abs(lse[li]);
        for (let d = 0; d < D; d++) {
          let acc = 0, absAcc = 0, vmax = 0;
          for (let j = 0; j < Sk; j++) {
            if (p[j] === 0) continue;
            const vv = v[(b * Sk + j) * vStride + h * D + d];
            acc += p[j] * vv;
            absAcc += p[j] * Math.abs(vv);
            vmax = Math.max(vmax, Math.abs(vv));
          }
          o[oo + d] = acc / l;
          tol[oo + d] = (4 * delta + 16 * U32) * (absAcc / l) + gammaS * vmax + 1e-12;
        }
      }
    }
  }
  return { o, tol, lse, lseTol };
}

/** gathers the [B*Sq, H*D] part of a strided output buffer */
export function compactRows(buf: Float32Array, rows: number, cols: number, stride: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(buf.subarray(r * stride, r * stride + cols), r * cols);
  return out;
}
