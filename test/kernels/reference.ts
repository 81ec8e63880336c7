// Float64 scalar references for the CPU kernels of docs/architecture.md §2 (all but linear/attention, which
// live in reference-gemm.ts). Arguments mirror the kernels' t/i/f slots; inputs are read as float32 values,
// every intermediate is float64, outputs are Float64Array.
type Arr = ArrayLike<number>;

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
export const geluTanh = (u: number): number => 0.5 * u * (1 + Math.tanh(SQRT_2_OVER_PI * (u + 0.044715 * u * u * u)));
export const silu = (x: number): number => x / (1 + Math.exp(-x));
export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

export function layerNorm(x: Arr, w: Arr | null, b: Arr | null, M: number, C: number, eps: number): Float64Array {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[m * C + c];
    mean /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[m * C + c] - mean) ** 2;
    const r = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) y[m * C + c] = (x[m * C + c] - mean) * r * (w ? w[c] : 1) + (b ? b[c] : 0);
  }
  return y;
}

/** y = LN(x) * (1 + scale[m/S]) + shift[m/S]; shift/scale rows are `stride` floats apart */
export function lnModulate(x: Arr, shift: Arr, scale: Arr, M: number, C: number, S: number, shiftStride: number, scaleStride: number, eps: number): Float64Array {
  const n = layerNorm(x, null, null, M, C, eps);
  for (let m = 0; m < M; m++) {
    const g = Math.floor(m / S);
    for (let c = 0; c < C; c++) n[m * C + c] = n[m * C + c] * (1 + scale[g * scaleStride + c]) + shift[g * shiftStride + c];
  }
  return n;
}

export function rmsNorm(x: Arr, w: Arr | null, M: number, C: number, eps: number): Float64Array {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[m * C + c] ** 2;
    const r = 1 / Math.sqrt(s / C + eps);
    for (let c = 0; c < C; c++) y[m * C + c] = x[m * C + c] * r * (w ? w[c] : 1);
  }
  return y;
}

/** distributed RMSNorm, first half: per-row sums of squares of x[M, C] (float64) */
export function rmsSumsq(x: Arr, M: number, C: number): Float64Array {
  const ss = new Float64Array(M);
  for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) ss[m] += x[m * C + c] ** 2;
  return ss;
}

/** distributed RMSNorm, second half: x[M, C] (C of the Cfull channels) with the all-reduced sums ss[M] */
export function rmsNormApply(x: Arr, ss: Arr, w: Arr | null, M: number, C: number, Cfull: number, eps: number): Float64Array {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    const r = 1 / Math.sqrt(ss[m] / Cfull + eps);
    for (let c = 0; c < C; c++) y[m * C + c] = x[m * C + c] * r * (w ? w[c] : 1);
  }
  return y;
}

export function groupNorm(x: Arr, w: Arr | null, b: Arr | null, N: number, C: number, HW: number, G: number, fuseSilu: boolean, eps: number): Float64Array {
  const y = new Float64Array(N * C * HW);
  const Cg = C / G;
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const base = (n * C + g * Cg) * HW, len = Cg * HW;
      let mean = 0;
      for (let k = 0; k < len; k++) mean += x[base + k];
      mean /= len;
      let v = 0;
      for (let k = 0; k < len; k++) v += (x[base + k] - mean) ** 2;
      const r = 1 / Math.sqrt(v / len + eps);
      for (let k = 0; k < len; k++) {
        const ch = g * Cg + Math.floor(k / HW);
        const t = (x[base + k] - mean) * r * (w ? w[ch] : 1) + (b ? b[ch] : 0);
        y[base + k] = fuseSilu ? silu(t) : t;
      }
    }
  }
  return y;
}

/** y = r + g[m/S] * x */
export function gateResidual(r: Arr, g: Arr, x: Arr, M: number, C: number, S: number, gStride: number): Float64Array {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    const gr = Math.floor(m / S) * gStride;
    for (let c = 0; c < C; c++) y[m * C + c] = r[m * C + c] + g[gr + c] * x[m * C + c];
  }
  return y;
}

/**
 * Interleaved-pair RoPE over [B, S, *] rows with strides; head h owns channels [h*D, (h+1)*D).
 * Output rows are written at yStride into a buffer of (B*S-1)*yStride + H*D (other entries stay 0).
 * When `w` is given, each head is first RMS-normalised with weight w[D] (qk_norm_rope); cos == null: no rope.
 */
export function rope(x: Arr, cos: Arr | null, sin: Arr | null, B: number, S: number, H: number, D: number, xStride: number, yStride: number,
  norm?: { w: Arr | null; eps: number }): Float64Array {
  const y = new Float64Array((B * S - 1) * yStride + H * D);
  const t = new Float64Array(D);
  for (let r = 0; r < B * S; r++) {
    const s = r % S;
    for (let h = 0; h < H; h++) {
      const xo = r * xStride + h * D, yo = r * yStride + h * D;
      let scale = 1;
      if (norm) {
        let ss = 0;
        for (let d = 0; d < D; d++) ss += x[xo + d] ** 2;
        scale = 1 / Math.sqrt(ss / D + norm.eps);
      }
      for (let d = 0; d < D; d++) t[d] = x[xo + d] * scale * (norm?.w ? norm.w[d] : 1);
      for (let j = 0; j < D / 2; j++) {
        if (!cos || !sin) {
          y[yo + 2 * j] = t[2 * j];
          y[yo + 2 * j + 1] = t[2 * j + 1];
          continue;
        }
        const c0 = cos[s * D + 2 * j], c1 = cos[s * D + 2 * j + 1], s0 = sin[s * D + 2 * j], s1 = sin[s * D + 2 * j + 1];
        y[yo + 2 * j] = t[2 * j] * c0 - t[2 * j + 1] * s0;
        y[yo + 2 * j + 1] = t[2 * j + 1] * c1 + t[2 * j] * s1;
      }
    }
  }
  return y;
}

/** diffusers FluxPosEmbed / get_1d_rotary_pos_embed(repeat_interleave_real=True), float64 then float32 */
export function ropeTable(ids: Arr, S: number, A: number, dims: number[], theta: number): { cos: Float64Array; sin: Float64Array } {
  const D = dims.slice(0, A).reduce((a, b) => a + b, 0);
  const cos = new Float64Array(S * D), sin = new Float64Array(S * D);
  for (let s = 0; s < S; s++) {
    let off = 0;
    for (let a = 0; a < A; a++) {
      const d = dims[a];
      for (let j = 0; j < d / 2; j++) {
        const freq = 1 / Math.pow(theta, (2 * j) / d);
        const ang = ids[s * A + a] * freq;
        const c = Math.fround(Math.cos(ang)), sv = Math.fround(Math.sin(ang));
        cos[s * D + off + 2 * j] = cos[s * D + off + 2 * j + 1] = c;
        sin[s * D + off + 2 * j] = sin[s * D + off + 2 * j + 1] = sv;
      }
      off += d;
    }
  }
  return { cos, sin };
}

/** diffusers get_timestep_embedding (float64 here; the kernel computes in float32) */
export function timestepEmbedding(t: Arr, B: number, C: number, flipSinToCos: boolean, scale: number, freqShift: number, maxPeriod: number): Float64Array {
  const half = Math.floor(C / 2);
  const y = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < half; j++) {
      const emb = Math.exp((-Math.log(maxPeriod) * j) / (half - freqShift));
      const arg = scale * (t[b] * emb);
      const s = Math.sin(arg), c = Math.cos(arg);
      y[b * C + j] = flipSinToCos ? c : s;
      y[b * C + half + j] = flipSinToCos ? s : c;
    }
    if (C % 2) y[b * C + C - 1] = 0;
  }
  return y;
}

export function embedding(ids: Arr, table: Arr, M: number, C: number, V: number): Float64Array {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    const id = Math.trunc(ids[m]);
    if (!(ids[m] >= 0) || id >= V) continue;
    for (let c = 0; c < C; c++) y[m * C + c] = table[id * C + c];
  }
  return y;
}

export function maskedMean(x: Arr, mask: Arr, B: number, S: number, C: number): Float64Array {
  const y = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let s = 0; s < S; s++) {
      if (!(mask[b * S + s] >= 0.5)) continue;
      n++;
      for (let c = 0; c < C; c++) y[b * C + c] += x[(b * S + s) * C + c];
    }
    if (n) for (let c = 0; c < C; c++) y[b * C + c] /= n;
  }
  return y;
}

/** strided copy into a copy of `yInit` (entries not covered keep their value) */
export function copy3d(x: Arr, yInit: Arr, outer: number, rows: number, cols: number, xo: number, xr: number, yo: number, yr: number): Float64Array {
  const y = Float64Array.from(yInit);
  for (let o = 0; o < outer; o++)
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) y[o * yo + r * yr + c] = x[o * xo + r * xr + c];
  return y;
}

export function transpose(x: Arr, batch: number, R: number, C: number): Float64Array {
  const y = new Float64Array(batch * R * C);
  for (let b = 0; b < batch; b++)
    for (let r = 0; r < R; r++)
      for (let c = 0; c < C; c++) y[(b * C + c) * R + r] = x[(b * R + r) * C + c];
  return y;
}

export function upsampleNearest2x(x: Arr, NC: number, H: number, W: number): Float64Array {
  const y = new Float64Array(NC * 4 * H * W);
  for (let n = 0; n < NC; n++)
    for (let i = 0; i < 2 * H; i++)
      for (let j = 0; j < 2 * W; j++) y[(n * 2 * H + i) * 2 * W + j] = x[(n * H + (i >> 1)) * W + (j >> 1)];
  return y;
}

/** `pad` zeros before each spatial axis, `padEnd` after it */
export function conv2dOutSize(H: number, W: number, kh: number, kw: number, stride: number, pad: number, padEnd = pad): [number, number] {
  return [Math.floor((H + pad + padEnd - kh) / stride) + 1, Math.floor((W + pad + padEnd - kw) / stride) + 1];
}

/** NCHW cross-correlation with zero padding: each image is a one-frame video of conv3dChannelFirst */
export function conv2d(x: Arr, w: Arr, bias: Arr | null, N: number, Ci: number, H: number, W: number, Co: number, kh: number, kw: number,
  stride: number, pad: number, padEnd = pad): Float64Array {
  const [Ho, Wo] = conv2dOutSize(H, W, kh, kw, stride, pad, padEnd);
  const y = new Float64Array(N * Co * Ho * Wo);
  for (let n = 0; n < N; n++) y.set(conv3dChannelFirst(Array.prototype.slice.call(x, n * Ci * H * W, (n + 1) * Ci * H * W) as number[], w, bias, Ci, 1, H, W, Co, 1, kh, kw, stride, pad, padEnd), n * Co * Ho * Wo);
  return y;
}

export function elementwise(n: number, inputs: Arr[], fn: (...a: number[]) => number): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) y[i] = fn(...inputs.map((a) => a[i]));
  return y;
}

/** ew_selftest (compiler/codegen/kernels.ts): a0 * (1 + a1) + silu(a2) * f0 - gelu_tanh(a0) * f1 */
export const ewSelftest = (f0: number, f1: number) => (a0: number, a1: number, a2: number): number =>
  a0 * (1 + a1) + silu(a2) * f0 - geluTanh(a0) * f1;

/**
 * `attn_merge` (Cache-DiT fused_merge_attn_states) in float64: per (row, head) with LSEs `[B*S, H]`,
 * `y = prev - sigmoid(lse - prevLse) * (prev - out)`, `yLse = prevLse - logsigmoid(prevLse - lse)`;
 * +inf LSE counts as -inf, and a -inf side contributes nothing (the kernel's documented limits).
 * Outputs are compact `[B*S, H*D]`; inputs are read at their row strides.
 */
export function attnMerge(prevOut: Arr, prevLse: Arr, out: Arr, lse: Arr, rows: number, H: number, D: number, ps: number, ss: number): { y: Float64Array; yLse: Float64Array } {
  const y = new Float64Array(rows * H * D), yLse = new Float64Array(rows * H);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < H; h++) {
      let p = prevLse[r * H + h], s = lse[r * H + h];
      if (p === Infinity) p = -Infinity;
      if (s === Infinity) s = -Infinity;
      const yo = (r * H + h) * D;
      const pick = s === -Infinity ? 'prev' : p === -Infinity ? 'suffix' : 'merge';
      const w = pick === 'merge' ? sigmoid(s - p) : 0;
      for (let d = 0; d < D; d++) {
        const a = prevOut[r * ps + h * D + d], b = out[r * ss + h * D + d];
        y[yo + d] = pick === 'prev' ? a : pick === 'suffix' ? b : a - w * (a - b);
      }
      // logsigmoid(x) = min(x, 0) - log1p(exp(-|x|))
      const x = p - s;
      yLse[r * H + h] = pick === 'prev' ? p : pick === 'suffix' ? s : p - (Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x))));
    }
  return { y, yLse };
}

/**
 * PyTorch's Conv3d on one video in its own layout: x [Ci, T, H, W], w [Co, Ci, kt, kh, kw] -> [Co, T - kt + 1,
 * Ho, Wo], no temporal padding, spatial zero padding `pad` before and `padEnd` after.
 */
export function conv3dChannelFirst(x: Arr, w: Arr, bias: Arr | null, Ci: number, T: number, H: number, W: number, Co: number, kt: number, kh: number, kw: number,
  stride: number, pad: number, padEnd = pad): Float64Array {
  const [Ho, Wo] = conv2dOutSize(H, W, kh, kw, stride, pad, padEnd);
  const To = T - kt + 1;
  const y = new Float64Array(Co * To * Ho * Wo);
  for (let co = 0; co < Co; co++)
    for (let t = 0; t < To; t++)
      for (let oh = 0; oh < Ho; oh++)
        for (let ow = 0; ow < Wo; ow++) {
          let acc = bias ? bias[co] : 0;
          for (let ci = 0; ci < Ci; ci++)
            for (let dt = 0; dt < kt; dt++)
              for (let a = 0; a < kh; a++) {
                const ih = oh * stride - pad + a;
                if (ih < 0 || ih >= H) continue;
                for (let b = 0; b < kw; b++) {
                  const iw = ow * stride - pad + b;
                  if (iw < 0 || iw >= W) continue;
                  acc += x[((ci * T + t + dt) * H + ih) * W + iw] * w[(((co * Ci + ci) * kt + dt) * kh + a) * kw + b];
                }
              }
          y[((co * To + t) * Ho + oh) * Wo + ow] = acc;
        }
  return y;
}
