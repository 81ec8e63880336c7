// float32 <-> float8 e4m3fn (OCP FP8: bias 7, max 448, no infinities, NaN = S.1111.111) and Cache-DiT's
// FP8 all-to-all layouts (`kernels/triton/float8_comm.py`), as host-side reference kernels.
//
// Rounding: round-to-nearest-even; |x| > 448 and +/-inf saturate to +/-448 (ORT Cast saturate=1, CUDA
// cvt.rn.satfinite); NaN -> 0x7f | sign; float32 subnormals and |x| <= 2^-10 -> +/-0.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export const E4M3_MAX = 448;

/** float32 (any JS number, rounded to float32 first) -> e4m3fn byte. */
export function f32ToE4m3(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 24) & 0x80;
  const e = (b >>> 23) & 0xff;
  const m = b & 0x7fffff;
  if (e === 0xff) return m !== 0 ? sign | 0x7f : sign | 0x7e; // NaN / +-inf (saturated)
  if (e >= 121) {
    // e4m3 normal range (|x| >= 2^-6): exponent field e - 120, keep 3 mantissa bits, RNE.
    const m3 = m >>> 20;
    const rem = m & 0xfffff;
    let v = ((e - 120) << 3) | m3;
    if (rem > 0x80000 || (rem === 0x80000 && (m3 & 1) !== 0)) v += 1;
    return sign | (v > 0x7e ? 0x7e : v);
  }
  if (e < 117) return sign; // |x| < 2^-10 rounds to zero
  // e4m3 subnormal: units of 2^-9; q = (1.m * 2^(e-127)) * 2^9 = full >> (141 - e), RNE.
  const full = m | 0x800000;
  const shift = 141 - e; // 21..24
  let q = full >>> shift;
  const rem = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) !== 0)) q += 1;
  return sign | q; // q == 8 is 0x08, the smallest normal: the encoding carries over
}

/** e4m3fn byte -> value (exact in float32). */
export const E4M3_TO_F32: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1;
    const e = (b >>> 3) & 0xf;
    const m = b & 7;
    if ((b & 0x7f) === 0x7f) t[b] = NaN;
    else if (e === 0) t[b] = s * m * 2 ** -9;
    else t[b] = s * (1 + m / 8) * 2 ** (e - 7);
  }
  return t;
})();

export function e4m3ToF32(b: number): number {
  return E4M3_TO_F32[b & 0xff];
}

export function quantizeE4m3(src: Float32Array, dst: Uint8Array = new Uint8Array(src.length)): Uint8Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToE4m3(src[i]);
  return dst;
}

export function dequantizeE4m3(src: Uint8Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) dst[i] = E4M3_TO_F32[src[i]];
  return dst;
}

/** float32 -> bfloat16 bits, round-to-nearest-even (torch `.to(bfloat16)`); NaN stays NaN. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

const fr = Math.fround;

/**
 * Cache-DiT `fp8_comm_qkv_permute_quant`: x `(B, S, P, N, D)` float32 -> `(P, S, B, N, D+4)` bytes.
 * Per (token, head) row: scale = max(max|x| over D / 448, 1e-6) (float32, stored little-endian in the
 * row's last 4 bytes), values e4m3(clamp(x / scale, +-448)). Requires D % 4 == 0 (scale alignment).
 */
export function qkvPermuteQuant(
  x: Float32Array,
  B: number,
  S: number,
  P: number,
  N: number,
  D: number,
  out: Uint8Array = new Uint8Array(P * S * B * N * (D + 4)),
): Uint8Array {
  if (D % 4 !== 0) throw new Error(`qkvPermuteQuant: head dim ${D} must be a multiple of 4`);
  if (x.length < B * S * P * N * D) throw new Error('qkvPermuteQuant: input too short');
  if (out.length < P * S * B * N * (D + 4)) throw new Error('qkvPermuteQuant: output too short');
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const R = D + 4;
  for (let p = 0; p < P; p++)
    for (let s = 0; s < S; s++)
      for (let b = 0; b < B; b++)
        for (let n = 0; n < N; n++) {
          const xi = ((((b * S + s) * P + p) * N + n) * D) | 0;
          const oi = (((p * S + s) * B + b) * N + n) * R;
          let amax = 0;
          for (let d = 0; d < D; d++) {
            const a = Math.abs(x[xi + d]);
            if (a > amax) amax = a;
          }
          let scale = fr(amax / 448);
          if (!(scale >= 1e-6)) scale = fr(1e-6); // also maps NaN to eps like tl.maximum
          for (let d = 0; d < D; d++) {
            let q = fr(x[xi + d] / scale);
            if (q > 448) q = 448;
            else if (q < -448) q = -448;
            out[oi + d] = f32ToE4m3(q);
          }
          dv.setFloat32(oi + D, scale, true);
        }
  return out;
}

/** Cache-DiT `fp8_comm_qkv_permute_dequant`: `(S, B, N, D+4)` bytes -> `(B, S, N, D)` float32. */
export function qkvPermuteDequant(
  q: Uint8Array,
  S: number,
  B: number,
  N: number,
  D: number,
  out: Float32Array = new Float32Array(B * S * N * D),
): Float32Array {
  const R = D + 4;
  if (q.length < S * B * N * R) throw new Error('qkvPermuteDequant: input too short');
  const dv = new DataView(q.buffer, q.byteOffset, q.byteLength);
  for (let s = 0; s < S; s++)
    for (let b = 0; b < B; b++)
      for (let n = 0; n < N; n++) {
        const qi = ((s * B + b) * N + n) * R;
        const oi = ((b * S + s) * N + n) * D;
        const scale = dv.getFloat32(qi + D, true);
        for (let d = 0; d < D; d++) out[oi + d] = fr(E4M3_TO_F32[q[qi + d]] * scale);
      }
  return out;
}

/**
 * Cache-DiT `fp8_comm_per_token_quant`: rows of H float32 -> rows of H+2 bytes. absmax starts at
 * eps = 1e-4; scale = absmax / 448 (float32), values e4m3(clamp(x * (1/scale), +-448)); the scale is
 * stored as bfloat16 (little-endian) in the row's last 2 bytes.
 */
export function perTokenQuant(x: Float32Array, rows: number, H: number, out: Uint8Array = new Uint8Array(rows * (H + 2))): Uint8Array {
  if (x.length < rows * H || out.length < rows * (H + 2)) throw new Error('perTokenQuant: buffer too short');
  const R = H + 2;
  for (let r = 0; r < rows; r++) {
    const xi = r * H;
    const oi = r * R;
    let amax = 1e-4;
    for (let h = 0; h < H; h++) {
      const a = Math.abs(x[xi + h]);
      if (a > amax) amax = a;
    }
    const s = fr(fr(amax) / 448);
    const inv = fr(1 / s);
    for (let h = 0; h < H; h++) {
      let q = fr(x[xi + h] * inv);
      if (q > 448) q = 448;
      else if (q < -448) q = -448;
      out[oi + h] = f32ToE4m3(q);
    }
    const sb = f32ToBf16Bits(s);
    out[oi + H] = sb & 0xff;
    out[oi + H + 1] = sb >>> 8;
  }
  return out;
}

/** Cache-DiT `fp8_comm_per_token_dequant`: rows of H+2 bytes -> rows of H float32 (value * bf16 scale). */
export function perTokenDequant(q: Uint8Array, rows: number, H: number, out: Float32Array = new Float32Array(rows * H)): Float32Array {
  const R = H + 2;
  if (q.length < rows * R || out.length < rows * H) throw new Error('perTokenDequant: buffer too short');
  for (let r = 0; r < rows; r++) {
    const qi = r * R;
    const scale = bf16BitsToF32(q[qi + H] | (q[qi + H + 1] << 8));
    for (let h = 0; h < H; h++) out[r * H + h] = fr(E4M3_TO_F32[q[qi + h]] * scale);
  }
  return out;
}
