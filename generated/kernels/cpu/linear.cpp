// Generated from templates/cpu/linear.cpp.hbs. Kernel `linear` (docs/architecture.md §2):
//   t = [x, W, bias?, y, gate?, residual?], i = [M, N, K, epilogue, S, gateStride]
//   acc = x[M,K] @ W[N,K]^T (+ bias)
//   epilogue 0: y = acc; 1: y = gelu_tanh(acc); 2: y = silu(acc);
//            3: y = residual + gate[(m / S) * gateStride + n] * acc   (y may alias residual;
//               a null gate counts as 1, a null residual as 0)
//
// Design (BLIS-style):
//  * B = W^T is packed per call into K-panels of NR=32 columns (k-major, zero padded) and A = x
//    into MR=14-row panels; the 14x32 register tile keeps 28 zmm accumulators, each k step loads
//    2 B vectors and broadcasts 14 A values (28 FMAs).
//  * Cache blocking: KC x NC block of packed B, MC x KC block of packed A (L2), one B micro-panel
//    (KC x 32) reused across the MC/MR micro-kernels of a jr step.
//  * K is split into KC blocks; partial sums go through y (epilogues 0-2: the activation is applied
//    after the last block; epilogue 3 is linear in acc, so y += gate * partial per block, which
//    keeps y == residual aliasing correct).
//  * Small M (<= 48 rows, e.g. adaLN / text-token projections): no packing; 6 x 4 blocks of
//    (x row, W row) dot products (24 zmm accumulators, one horizontal reduction per block), W streamed
//    once, so it runs near the packed path's speed at M = 16..48 and is memory-bound below.
//  * Threads: the N panels (or, when N is small, the M rows) are split across parallel_for.
//  * Weights are packed on the fly (no cache keyed by pointer: no extra memory and no risk of a
//    stale packed copy when an address is reused); packing is O(N*K) against O(M*N*K) compute.
//  * The AVX-512 path is compiled with function target attributes and chosen at run time
//    (__builtin_cpu_supports), so it is used even without -march=native; elsewhere a portable
//    blocked scalar path runs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ditforge/cpu_simd.h"
#include "ditforge/kernel_abi.h"
#include "ditforge/thread_pool.h"

namespace ditforge {
namespace linear_impl {

#if DF_X86
using simd::exp512;
#endif

struct Epi {
  int kind;
  const float* bias;
  float* y;
  const float* gate;
  const float* res;
  int64_t N;  // row stride of y / residual
  int64_t S;
  int64_t gateStride;
};

static inline float gelu_tanh_s(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(u));
}
static inline float silu_s(float x) { return x / (1.0f + std::exp(-x)); }

// Scalar epilogue on one row segment [n0, n0 + cnt) of row m; acc holds the partial dot products.
static inline void epi_row_scalar(const Epi& e, int64_t m, int64_t n0, int64_t cnt, const float* acc,
                                  bool first, bool last) {
  float* yr = e.y + m * e.N + n0;
  if (e.kind == 3) {
    const float* g = e.gate ? e.gate + (m / e.S) * e.gateStride + n0 : nullptr;
    const float* rr = e.res ? e.res + m * e.N + n0 : nullptr;
    for (int64_t j = 0; j < cnt; ++j) {
      float v = acc[j];
      if (first && e.bias) v += e.bias[n0 + j];
      const float base = first ? (rr ? rr[j] : 0.0f) : yr[j];
      yr[j] = base + (g ? g[j] : 1.0f) * v;
    }
    return;
  }
  for (int64_t j = 0; j < cnt; ++j) {
    float v = acc[j];
    if (first) {
      if (e.bias) v += e.bias[n0 + j];
    } else {
      v += yr[j];
    }
    if (last) {
      if (e.kind == 1) v = gelu_tanh_s(v);
      else if (e.kind == 2) v = silu_s(v);
    }
    yr[j] = v;
  }
}

// ---------------------------------------------------------------- portable path
static void gemm_scalar_range(const float* x, const float* W, const Epi& e, int64_t K, int64_t m0,
                              int64_t m1, int64_t n0, int64_t n1) {
  constexpr int64_t TB = 64;
  float acc[TB];
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * K;
    for (int64_t nb = n0; nb < n1; nb += TB) {
      const int64_t cnt = std::min(TB, n1 - nb);
      for (int64_t j = 0; j < cnt; ++j) {
        const float* wr = W + (nb + j) * K;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) {
          s0 += xr[k] * wr[k];
          s1 += xr[k + 1] * wr[k + 1];
          s2 += xr[k + 2] * wr[k + 2];
          s3 += xr[k + 3] * wr[k + 3];
        }
        for (; k < K; ++k) s0 += xr[k] * wr[k];
        acc[j] = (s0 + s1) + (s2 + s3);
      }
      epi_row_scalar(e, m, nb, cnt, acc, true, true);
    }
  }
}

#if DF_X86
// ---------------------------------------------------------------- AVX-512 path
constexpr int MR = 14;
constexpr int NR = 32;
// Measured on the 2-core AVX-512 VM (1024^3, 1 thread): KC 256 -> 89, 512 -> 97 GFLOP/s; MC and NC
// matter less. Scratch per thread: packed B <= KC x NC floats = 2 MB, packed A <= MC x KC = 224 KB.
constexpr int64_t KC = 512;
constexpr int64_t MC = 14 * 8;    // 112 rows
constexpr int64_t NC = 32 * 32;   // 1024 columns

static inline DF_AVX512 __m512 act512(int kind, __m512 v) {
  if (kind == 1) {
    // gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)
    const __m512 x2 = _mm512_mul_ps(v, v);
    const __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(x2, _mm512_set1_ps(0.044715f)), v, v);
    const __m512 e = exp512(_mm512_mul_ps(inner, _mm512_set1_ps(-1.5957691216057308f)));
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  }
  if (kind == 2) {
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  }
  return v;
}

static inline DF_AVX512 void epi_vec(const Epi& e, int64_t m, int64_t n, __m512 acc, __mmask16 mk,
                                     bool first, bool last) {
  float* yp = e.y + m * e.N + n;
  if (e.kind == 3) {
    __m512 v = acc;
    if (first && e.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, e.bias + n));
    __m512 base;
    if (first) base = e.res ? _mm512_maskz_loadu_ps(mk, e.res + m * e.N + n) : _mm512_setzero_ps();
    else base = _mm512_maskz_loadu_ps(mk, yp);
    if (e.gate) {
      const __m512 g = _mm512_maskz_loadu_ps(mk, e.gate + (m / e.S) * e.gateStride + n);
      v = _mm512_fmadd_ps(g, v, base);
    } else {
      v = _mm512_add_ps(base, v);
    }
    _mm512_mask_storeu_ps(yp, mk, v);
    return;
  }
  __m512 v = acc;
  if (first) {
    if (e.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, e.bias + n));
  } else {
    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yp));
  }
  if (last && e.kind != 0) v = act512(e.kind, v);
  _mm512_mask_storeu_ps(yp, mk, v);
}

// C[mr x nr] (+)= Ap[kc x 14] * Bp[kc x 32], then the epilogue.
static DF_AVX512 void ukernel(int64_t kc, const float* __restrict Ap, const float* __restrict Bp,
                              const Epi& e, int64_t m0, int64_t n0, int mr, int nr, bool first,
                              bool last) {
  __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
  __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
  __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
  __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
  __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
  __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
  __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
  __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
  __m512 c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps();
  __m512 c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps();
  __m512 ca0 = _mm512_setzero_ps(), ca1 = _mm512_setzero_ps();
  __m512 cb0 = _mm512_setzero_ps(), cb1 = _mm512_setzero_ps();
  __m512 cc0 = _mm512_setzero_ps(), cc1 = _mm512_setzero_ps();
  __m512 cd0 = _mm512_setzero_ps(), cd1 = _mm512_setzero_ps();
#define DF_LIN_STEP(kk)                                                          \
  {                                                                              \
    const float* a = Ap + (kk) * MR;                                             \
    const __m512 b0 = _mm512_load_ps(Bp + (kk) * NR);                            \
    const __m512 b1 = _mm512_load_ps(Bp + (kk) * NR + 16);                       \
    __m512 av;                                                                   \
    av = _mm512_set1_ps(a[0]); c00 = _mm512_fmadd_ps(av, b0, c00); c01 = _mm512_fmadd_ps(av, b1, c01); \
    av = _mm512_set1_ps(a[1]); c10 = _mm512_fmadd_ps(av, b0, c10); c11 = _mm512_fmadd_ps(av, b1, c11); \
    av = _mm512_set1_ps(a[2]); c20 = _mm512_fmadd_ps(av, b0, c20); c21 = _mm512_fmadd_ps(av, b1, c21); \
    av = _mm512_set1_ps(a[3]); c30 = _mm512_fmadd_ps(av, b0, c30); c31 = _mm512_fmadd_ps(av, b1, c31); \
    av = _mm512_set1_ps(a[4]); c40 = _mm512_fmadd_ps(av, b0, c40); c41 = _mm512_fmadd_ps(av, b1, c41); \
    av = _mm512_set1_ps(a[5]); c50 = _mm512_fmadd_ps(av, b0, c50); c51 = _mm512_fmadd_ps(av, b1, c51); \
    av = _mm512_set1_ps(a[6]); c60 = _mm512_fmadd_ps(av, b0, c60); c61 = _mm512_fmadd_ps(av, b1, c61); \
    av = _mm512_set1_ps(a[7]); c70 = _mm512_fmadd_ps(av, b0, c70); c71 = _mm512_fmadd_ps(av, b1, c71); \
    av = _mm512_set1_ps(a[8]); c80 = _mm512_fmadd_ps(av, b0, c80); c81 = _mm512_fmadd_ps(av, b1, c81); \
    av = _mm512_set1_ps(a[9]); c90 = _mm512_fmadd_ps(av, b0, c90); c91 = _mm512_fmadd_ps(av, b1, c91); \
    av = _mm512_set1_ps(a[10]); ca0 = _mm512_fmadd_ps(av, b0, ca0); ca1 = _mm512_fmadd_ps(av, b1, ca1); \
    av = _mm512_set1_ps(a[11]); cb0 = _mm512_fmadd_ps(av, b0, cb0); cb1 = _mm512_fmadd_ps(av, b1, cb1); \
    av = _mm512_set1_ps(a[12]); cc0 = _mm512_fmadd_ps(av, b0, cc0); cc1 = _mm512_fmadd_ps(av, b1, cc1); \
    av = _mm512_set1_ps(a[13]); cd0 = _mm512_fmadd_ps(av, b0, cd0); cd1 = _mm512_fmadd_ps(av, b1, cd1); \
  }
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(Bp + (k + 8) * NR), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(Bp + (k + 8) * NR + 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(Bp + (k + 9) * NR), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(Bp + (k + 9) * NR + 16), _MM_HINT_T0);
    DF_LIN_STEP(k)
    DF_LIN_STEP(k + 1)
    DF_LIN_STEP(k + 2)
    DF_LIN_STEP(k + 3)
  }
  for (; k < kc; ++k) DF_LIN_STEP(k)
#undef DF_LIN_STEP
  const __mmask16 mk0 = nr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nr) - 1u);
  const __mmask16 mk1 =
      nr >= 32 ? __mmask16(0xFFFF) : (nr > 16 ? __mmask16((1u << (nr - 16)) - 1u) : __mmask16(0));
#define DF_LIN_ROW(r, x0, x1)                                                        \
  if ((r) < mr) {                                                                  \
    epi_vec(e, m0 + (r), n0, x0, mk0, first, last);                                \
    if (mk1) epi_vec(e, m0 + (r), n0 + 16, x1, mk1, first, last);                  \
  }
  DF_LIN_ROW(0, c00, c01) DF_LIN_ROW(1, c10, c11) DF_LIN_ROW(2, c20, c21) DF_LIN_ROW(3, c30, c31)
  DF_LIN_ROW(4, c40, c41) DF_LIN_ROW(5, c50, c51) DF_LIN_ROW(6, c60, c61) DF_LIN_ROW(7, c70, c71)
  DF_LIN_ROW(8, c80, c81) DF_LIN_ROW(9, c90, c91) DF_LIN_ROW(10, ca0, ca1) DF_LIN_ROW(11, cb0, cb1)
  DF_LIN_ROW(12, cc0, cc1) DF_LIN_ROW(13, cd0, cd1)
#undef DF_LIN_ROW
}

// Packs W[n0 .. n0+nc, k0 .. k0+kc] (W row-major [N, K]) as ceil(nc/32) panels of kc x 32.
static DF_AVX512 void pack_b(const float* W, int64_t K, int64_t n0, int64_t nc, int64_t k0,
                             int64_t kc, float* Bp) {
  for (int64_t jp = 0; jp < nc; jp += NR) {
    float* dst = Bp + jp * kc;
    const int64_t cols = std::min<int64_t>(NR, nc - jp);
    if (cols == NR) {
      // 16x16 in-register transposes: 16 rows of W (columns of B) x 16 k values at a time.
      int64_t k = 0;
      for (; k + 16 <= kc; k += 16) {
        for (int half = 0; half < 2; ++half) {
          const float* src = W + (n0 + jp + half * 16) * K + k0 + k;
          __m512 r[16];
          for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * K);
          // transpose 16x16
          __m512 t[16];
          for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
          }
          for (int i = 0; i < 16; i += 4) {
            r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
            r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
            r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
            r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
          }
          // r[4q + s] holds, in each 128-bit lane L, rows {4q..4q+3} of column 4L + s.
          for (int q = 0; q < 4; q += 2) {
            for (int s = 0; s < 4; ++s) {
              t[q * 4 + s] = _mm512_shuffle_f32x4(r[q * 4 + s], r[(q + 1) * 4 + s], 0x88);
              t[(q + 1) * 4 + s] = _mm512_shuffle_f32x4(r[q * 4 + s], r[(q + 1) * 4 + s], 0xDD);
            }
          }
          // t[0..3]: rows 0-7, lanes (L0,L2 of q0 | L0,L2 of q1); combine halves.
          for (int s = 0; s < 4; ++s) {
            const __m512 a0 = t[s], a1 = t[4 + s], a2 = t[8 + s], a3 = t[12 + s];
            // a0 lanes: [q0L0, q0L2, q1L0, q1L2]; a1: [q0L1, q0L3, q1L1, q1L3]
            // a2 lanes: [q2L0, q2L2, q3L0, q3L2]; a3: [q2L1, q2L3, q3L1, q3L3]
            const __m512 c0 = _mm512_shuffle_f32x4(a0, a2, 0x88);  // q0L0 q1L0 q2L0 q3L0
            const __m512 c2 = _mm512_shuffle_f32x4(a0, a2, 0xDD);  // q0L2 q1L2 q2L2 q3L2
            const __m512 c1 = _mm512_shuffle_f32x4(a1, a3, 0x88);  // q0L1 ...
            const __m512 c3 = _mm512_shuffle_f32x4(a1, a3, 0xDD);  // q0L3 ...
            // column 4L + s is ready in cL
            _mm512_store_ps(dst + (k + s) * NR + half * 16, c0);
            _mm512_store_ps(dst + (k + 4 + s) * NR + half * 16, c1);
            _mm512_store_ps(dst + (k + 8 + s) * NR + half * 16, c2);
            _mm512_store_ps(dst + (k + 12 + s) * NR + half * 16, c3);
          }
        }
      }
      for (; k < kc; ++k)
        for (int j = 0; j < NR; ++j) dst[k * NR + j] = W[(n0 + jp + j) * K + k0 + k];
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        int j = 0;
        for (; j < cols; ++j) dst[k * NR + j] = W[(n0 + jp + j) * K + k0 + k];
        for (; j < NR; ++j) dst[k * NR + j] = 0.0f;
      }
    }
  }
}

// Packs x[m0 .. m0+mc, k0 .. k0+kc] as ceil(mc/14) panels of kc x 14 (zero padded rows).
static DF_AVX512 void pack_a(const float* x, int64_t K, int64_t m0, int64_t mc, int64_t k0,
                             int64_t kc, float* Ap) {
  for (int64_t ip = 0; ip < mc; ip += MR) {
    float* dst = Ap + ip * kc;
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - ip));
    const float* src[MR];
    for (int r = 0; r < MR; ++r) src[r] = x + (m0 + ip + std::min(r, rows - 1)) * K + k0;
    int64_t k = 0;
    if (rows == MR) {
      for (; k + 16 <= kc; k += 16) {
        __m512 v[MR];
        for (int r = 0; r < MR; ++r) v[r] = _mm512_loadu_ps(src[r] + k);
        alignas(64) float tmp[MR][16];
        for (int r = 0; r < MR; ++r) _mm512_store_ps(tmp[r], v[r]);
        for (int kk = 0; kk < 16; ++kk)
          for (int r = 0; r < MR; ++r) dst[(k + kk) * MR + r] = tmp[r][kk];
      }
    }
    for (; k < kc; ++k) {
      int r = 0;
      for (; r < rows; ++r) dst[k * MR + r] = src[r][k];
      for (; r < MR; ++r) dst[k * MR + r] = 0.0f;
    }
  }
}

// Small-M path (M <= SMALL_M): no packing at all. y[m, n] = dot(x[m, :], W[n, :]) with a 6 x 4
// block of (x row, W row) dot products in 24 zmm accumulators; W rows stream from memory once.
constexpr int64_t SMALL_M = 48;  // measured: the dot path beats the packed path up to M ~ 64

static inline DF_AVX512 __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 s = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

#if defined(__clang__)
#define DF_UNROLL _Pragma("unroll")
#else
#define DF_UNROLL _Pragma("GCC unroll 8")
#endif

template <int RM>
static DF_AVX512 void dot_block(const float* x, const float* W, const Epi& e, int64_t K, int64_t m0,
                                int64_t n0, int nb) {
  const float* xr[RM];
  DF_UNROLL for (int i = 0; i < RM; ++i) xr[i] = x + (m0 + i) * K;
  const float* w0 = W + n0 * K;
  const float* w1 = W + (n0 + std::min(1, nb - 1)) * K;
  const float* w2 = W + (n0 + std::min(2, nb - 1)) * K;
  const float* w3 = W + (n0 + std::min(3, nb - 1)) * K;
  __m512 acc[RM][4];
  DF_UNROLL for (int i = 0; i < RM; ++i) {
    acc[i][0] = _mm512_setzero_ps();
    acc[i][1] = _mm512_setzero_ps();
    acc[i][2] = _mm512_setzero_ps();
    acc[i][3] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512 v0 = _mm512_loadu_ps(w0 + k), v1 = _mm512_loadu_ps(w1 + k);
    const __m512 v2 = _mm512_loadu_ps(w2 + k), v3 = _mm512_loadu_ps(w3 + k);
    DF_UNROLL for (int i = 0; i < RM; ++i) {
      __m512 xv = _mm512_loadu_ps(xr[i] + k);
      // keep xv in a register: some -mtune targets fold the load into all 4 FMAs (4x the loads)
      __asm__("" : "+v"(xv));
      acc[i][0] = _mm512_fmadd_ps(xv, v0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(xv, v1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(xv, v2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(xv, v3, acc[i][3]);
    }
  }
  if (k < K) {
    const __mmask16 mk = __mmask16((1u << (K - k)) - 1u);
    const __m512 v0 = _mm512_maskz_loadu_ps(mk, w0 + k), v1 = _mm512_maskz_loadu_ps(mk, w1 + k);
    const __m512 v2 = _mm512_maskz_loadu_ps(mk, w2 + k), v3 = _mm512_maskz_loadu_ps(mk, w3 + k);
    DF_UNROLL for (int i = 0; i < RM; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(mk, xr[i] + k);
      acc[i][0] = _mm512_fmadd_ps(xv, v0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(xv, v1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(xv, v2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(xv, v3, acc[i][3]);
    }
  }
  DF_UNROLL for (int i = 0; i < RM; ++i) {
    alignas(16) float s[4];
    _mm_store_ps(s, reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
    epi_row_scalar(e, m0 + i, n0, nb, s, true, true);
  }
}

static DF_AVX512 void gemm_small_m_range(const float* x, const float* W, const Epi& e, int64_t K,
                                         int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; n += 4) {
    const int nb = static_cast<int>(std::min<int64_t>(4, n1 - n));
    int64_t m = m0;
    for (; m + 6 <= m1; m += 6) dot_block<6>(x, W, e, K, m, n, nb);
    switch (m1 - m) {
      case 5: dot_block<5>(x, W, e, K, m, n, nb); break;
      case 4: dot_block<4>(x, W, e, K, m, n, nb); break;
      case 3: dot_block<3>(x, W, e, K, m, n, nb); break;
      case 2: dot_block<2>(x, W, e, K, m, n, nb); break;
      case 1: dot_block<1>(x, W, e, K, m, n, nb); break;
      default: break;
    }
  }
}


// One thread's share: rows [m0, m1) x columns [n0, n1).
static DF_AVX512 void gemm_avx512_range(const float* x, const float* W, const Epi& e, int64_t K,
                                        int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  const int64_t ncMax = std::min<int64_t>(NC, (n1 - n0 + NR - 1) / NR * NR);
  const int64_t kcMax = std::min<int64_t>(KC, K);
  const int64_t mcMax = std::min<int64_t>(MC, (m1 - m0 + MR - 1) / MR * MR);
  float* Bp = simd::thread_scratch<0>().get(static_cast<size_t>(ncMax * kcMax));
  float* Ap = simd::thread_scratch<1>().get(static_cast<size_t>(mcMax * kcMax));
  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, K - pc);
      const bool first = pc == 0, last = pc + kc >= K;
      pack_b(W, K, jc, nc, pc, kc, Bp);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, m1 - ic);
        pack_a(x, K, ic, mc, pc, kc, Ap);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            ukernel(kc, Ap + ir * kc, Bp + jr * kc, e, ic + ir, jc + jr, mr, nr, first, last);
          }
        }
      }
    }
  }
}

#endif  // DF_X86

static void run_range(const float* x, const float* W, const Epi& e, int64_t K, int64_t m0, int64_t m1,
                      int64_t n0, int64_t n1) {
#if DF_X86
  if (simd::cpu_has_avx512()) {
    if (m1 - m0 <= SMALL_M) gemm_small_m_range(x, W, e, K, m0, m1, n0, n1);
    else gemm_avx512_range(x, W, e, K, m0, m1, n0, n1);
    return;
  }
#endif
  gemm_scalar_range(x, W, e, K, m0, m1, n0, n1);
}

}  // namespace linear_impl

static void linear(const KernelArgs& a, KernelCtx& ctx) {
  using namespace linear_impl;
  const float* x = a.t[0];
  const float* W = a.t[1];
  const int64_t M = a.i[0], N = a.i[1], K = a.i[2];
  Epi e;
  e.kind = static_cast<int>(a.i[3]);
  e.bias = a.t[2];
  e.y = a.t[3];
  e.gate = a.t[4];
  e.res = a.t[5];
  e.N = N;
  e.S = a.i[4] > 0 ? a.i[4] : (M > 0 ? M : 1);
  e.gateStride = a.i[5];
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // acc = bias (or 0)
    std::vector<float> zero(static_cast<size_t>(N), 0.0f);
    for (int64_t m = 0; m < M; ++m) epi_row_scalar(e, m, 0, N, zero.data(), true, true);
    return;
  }
  const int T = std::max(1, num_threads(ctx));
  const double flops = 2.0 * double(M) * double(N) * double(K);
  constexpr int64_t NRp = 32, MRp = 14;
  const int64_t nPanels = (N + NRp - 1) / NRp;
  const int64_t mPanels = (M + MRp - 1) / MRp;
  if (T == 1 || flops < 2.0e5) {
    run_range(x, W, e, K, 0, M, 0, N);
    return;
  }
  // Split N panels across threads when there are enough of them, else split M panels.
  const bool splitN = nPanels >= 2 * T || nPanels >= mPanels;
  const int64_t units = splitN ? nPanels : mPanels;
  const int parts = static_cast<int>(std::min<int64_t>(T, units));
  parallel_for(ctx, parts, 1, [&](int64_t b, int64_t en) {
    for (int64_t p = b; p < en; ++p) {
      const int64_t u0 = units * p / parts, u1 = units * (p + 1) / parts;
      if (splitN)
        run_range(x, W, e, K, 0, M, std::min(N, u0 * NRp), std::min(N, u1 * NRp));
      else
        run_range(x, W, e, K, std::min(M, u0 * MRp), std::min(M, u1 * MRp), 0, N);
    }
  });
}

}  // namespace ditforge

extern "C" const ditforge::KernelEntry ditforge_cpu_linear[] = {
    {"linear", &ditforge::linear},
    {nullptr, nullptr},
};
