// Generated from templates/cpu/attention.cpp.hbs. Kernels (docs/architecture.md §2):
// `attention`: t = [q, k, v, keyMask?, o], i = [B, Sq, Sk, H, D, qStride, kStride, vStride, oStride], f = [scale]
//   o = softmax(q k^T * scale) v per (b, h). Row (b, s) of q starts at q + (b*Sq + s)*qStride, head h
//   at +h*D (same for k, v, o). keyMask [B, Sk] float: 1 keep / 0 drop; dropped keys get probability
//   exactly 0; a row whose keys are all dropped gets o = 0.
// `attention_lse`: the same plus t[5] = lse [B, Sq, H] (float32, Cache-DiT's [B, N, H, 1] layout):
//   lse = log(sum_j exp(q.k_j * scale)) over kept keys (running max + log of the running sum of the online
//   softmax); -inf when no key is kept (Sk = 0 or all masked). Ring attention merges blocks with it.
// `attn_merge`: Cache-DiT's fused_merge_attn_states (ring attention, §4.6) in float32, below.
//
// Flash-style on CPU: work items are (b, h, tile of BQ queries), split over parallel_for. Within an
// item, blocks of 6 query rows run over key tiles of 64 keys with an online softmax (running max and
// sum per row), so memory is O(tile): S = q k^T for 6 x 64 lives in 24 zmm registers (K^T of the
// current (b, h) is packed once per thread into 64-key panels), P = exp(S - max) goes to a 6 x 64
// buffer and O (6 x D, L1) += P V (V of the head packed once per thread into contiguous rows). Arbitrary D (masked tail vectors),
// arbitrary Sq / Sk. The AVX-512 path is chosen at run time; a scalar path runs elsewhere.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "ditforge/cpu_simd.h"
#include "ditforge/kernel_abi.h"
#include "ditforge/thread_pool.h"

namespace ditforge {
namespace attention_impl {

#if DF_X86
using simd::exp512;
#endif

struct Params {
  const float* q;
  const float* k;
  const float* v;
  const float* mask;
  float* o;
  float* lse;  // [B, Sq, H] or null (plain `attention`)
  int64_t B, Sq, Sk, H, D, qs, ks, vs, os;
  float scale;
};

constexpr int64_t BQ = 96;  // queries per work item

// log-sum-exp of a row from the online softmax state: max m and sum l of exp(s - m); no kept key -> -inf
static inline float row_lse(float m, float l) {
  return l > 0.0f ? m + std::log(l) : -std::numeric_limits<float>::infinity();
}

// ------------------------------------------------------------------ scalar path
static void attn_scalar_item(const Params& P, int64_t b, int64_t h, int64_t s0, int64_t s1) {
  std::vector<float> acc(static_cast<size_t>(P.D));
  const float* mrow = P.mask ? P.mask + b * P.Sk : nullptr;
  for (int64_t s = s0; s < s1; ++s) {
    const float* qr = P.q + (b * P.Sq + s) * P.qs + h * P.D;
    float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t j = 0; j < P.Sk; ++j) {
      if (mrow && !(mrow[j] > 0.5f)) continue;
      const float* kr = P.k + (b * P.Sk + j) * P.ks + h * P.D;
      float dot = 0.0f;
      for (int64_t d = 0; d < P.D; ++d) dot += qr[d] * kr[d];
      const float sv = dot * P.scale;
      const float* vr = P.v + (b * P.Sk + j) * P.vs + h * P.D;
      if (sv > m) {
        const float alpha = std::exp(m - sv);  // exp(-inf) = 0 on the first key
        for (int64_t d = 0; d < P.D; ++d) acc[d] = acc[d] * alpha + vr[d];
        l = l * alpha + 1.0f;
        m = sv;
      } else {
        const float p = std::exp(sv - m);
        for (int64_t d = 0; d < P.D; ++d) acc[d] += p * vr[d];
        l += p;
      }
    }
    float* orow = P.o + (b * P.Sq + s) * P.os + h * P.D;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int64_t d = 0; d < P.D; ++d) orow[d] = acc[d] * inv;
    if (P.lse) P.lse[(b * P.Sq + s) * P.H + h] = row_lse(m, l);
  }
}

#if DF_X86
// ------------------------------------------------------------------ AVX-512 path
constexpr int RB = 6;    // query rows per register block
constexpr int BK = 64;   // keys per tile (4 zmm)

// O[RB x 16*NV] (at column d0 of a row-stride-ldo buffer) += Pt[RB x nk] * Vp[nk x 16*NV], Vp being
// the packed, zero-padded V of the head (row stride ldo).
template <int NV>
static DF_AVX512 void pv_block(const float* Pt, int nk, const float* vbase, int64_t d0, float* O,
                                    int64_t ldo) {
  __m512 acc[RB][NV];
  for (int i = 0; i < RB; ++i)
    for (int c = 0; c < NV; ++c) acc[i][c] = _mm512_load_ps(O + i * ldo + d0 + 16 * c);
  for (int j = 0; j < nk; ++j) {
    const float* vr = vbase + j * ldo + d0;
    __m512 vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = _mm512_load_ps(vr + 16 * c);
    for (int i = 0; i < RB; ++i) {
      const __m512 p = _mm512_set1_ps(Pt[i * BK + j]);
      for (int c = 0; c < NV; ++c) acc[i][c] = _mm512_fmadd_ps(p, vv[c], acc[i][c]);
    }
  }
  for (int i = 0; i < RB; ++i)
    for (int c = 0; c < NV; ++c) _mm512_store_ps(O + i * ldo + d0 + 16 * c, acc[i][c]);
}

static DF_AVX512 void attn_item_avx512(const Params& P, int64_t b, int64_t h, int64_t s0,
                                            int64_t s1, const float* Kt, const float* Vp,
                                            const float* keep, float* O, float* Pt) {
  const int64_t D = P.D;
  const int64_t nd = (D + 15) / 16;
  const int64_t ldo = nd * 16;
  const int64_t nT = (P.Sk + BK - 1) / BK;
  const float ninf = -std::numeric_limits<float>::infinity();
  const __m512 vscale = _mm512_set1_ps(P.scale);
  const __m512 vninf = _mm512_set1_ps(ninf);
  const int rem = static_cast<int>(D - (nd - 1) * 16);
  const __mmask16 tailMask = __mmask16(rem >= 16 ? 0xFFFFu : ((1u << rem) - 1u));
  for (int64_t r0 = s0; r0 < s1; r0 += RB) {
    const int rows = static_cast<int>(std::min<int64_t>(RB, s1 - r0));
    const float* qr[RB];
    for (int i = 0; i < RB; ++i)
      qr[i] = P.q + (b * P.Sq + r0 + std::min(i, rows - 1)) * P.qs + h * D;
    float m[RB], l[RB];
    for (int i = 0; i < RB; ++i) {
      m[i] = ninf;
      l[i] = 0.0f;
    }
    std::memset(O, 0, sizeof(float) * RB * ldo);
    for (int64_t t = 0; t < nT; ++t) {
      const float* kt = Kt + t * D * BK;
      __m512 s[RB][4];
      for (int i = 0; i < RB; ++i)
        for (int c = 0; c < 4; ++c) s[i][c] = _mm512_setzero_ps();
      for (int64_t d = 0; d < D; ++d) {
        const __m512 k0 = _mm512_load_ps(kt + d * BK), k1 = _mm512_load_ps(kt + d * BK + 16);
        const __m512 k2 = _mm512_load_ps(kt + d * BK + 32), k3 = _mm512_load_ps(kt + d * BK + 48);
        for (int i = 0; i < RB; ++i) {
          const __m512 qv = _mm512_set1_ps(qr[i][d]);
          s[i][0] = _mm512_fmadd_ps(qv, k0, s[i][0]);
          s[i][1] = _mm512_fmadd_ps(qv, k1, s[i][1]);
          s[i][2] = _mm512_fmadd_ps(qv, k2, s[i][2]);
          s[i][3] = _mm512_fmadd_ps(qv, k3, s[i][3]);
        }
      }
      __mmask16 km[4];
      for (int c = 0; c < 4; ++c)
        km[c] = _mm512_cmp_ps_mask(_mm512_load_ps(keep + t * BK + 16 * c), _mm512_set1_ps(0.5f),
                                   _CMP_GT_OQ);
      if ((km[0] | km[1] | km[2] | km[3]) == 0) continue;  // whole tile dropped
      // Online softmax for the 6 rows: tile max, new running max, one vector exp for the 6 rescale
      // factors alpha = exp(m_old - m_new) (m_old = -inf gives ~0; O and l are 0 then anyway).
      alignas(64) float mnew[16], mold[16], alpha[16];
      for (int i = 0; i < RB; ++i) {
        __m512 mx = vninf;
        for (int c = 0; c < 4; ++c) {
          s[i][c] = _mm512_mask_blend_ps(km[c], vninf, _mm512_mul_ps(s[i][c], vscale));
          mx = _mm512_max_ps(mx, s[i][c]);
        }
        mold[i] = m[i];
        mnew[i] = std::max(m[i], _mm512_reduce_max_ps(mx));  // finite: the tile has a kept key
        m[i] = mnew[i];
      }
      const __mmask16 rowMask = __mmask16((1u << RB) - 1u);
      _mm512_store_ps(alpha, exp512(_mm512_sub_ps(_mm512_maskz_load_ps(rowMask, mold),
                                                   _mm512_maskz_load_ps(rowMask, mnew))));
      for (int i = 0; i < RB; ++i) {
        const __m512 vm = _mm512_set1_ps(mnew[i]);
        __m512 sum = _mm512_setzero_ps();
        for (int c = 0; c < 4; ++c) {
          const __m512 p = _mm512_maskz_mov_ps(km[c], exp512(_mm512_sub_ps(s[i][c], vm)));
          sum = _mm512_add_ps(sum, p);
          _mm512_store_ps(Pt + i * BK + 16 * c, p);
        }
        const float a = mold[i] == mnew[i] ? 1.0f : alpha[i];
        l[i] = l[i] * a + _mm512_reduce_add_ps(sum);
        if (a != 1.0f) {
          const __m512 va = _mm512_set1_ps(a);
          float* orow = O + i * ldo;
          for (int64_t c = 0; c < nd; ++c)
            _mm512_store_ps(orow + 16 * c, _mm512_mul_ps(va, _mm512_load_ps(orow + 16 * c)));
        }
      }
      const int nk = static_cast<int>(std::min<int64_t>(BK, P.Sk - t * BK));
      const float* vb = Vp + t * BK * ldo;
      int64_t c = 0;
      for (; c + 4 < nd; c += 4) pv_block<4>(Pt, nk, vb, c * 16, O, ldo);
      switch (nd - c) {
        case 4: pv_block<4>(Pt, nk, vb, c * 16, O, ldo); break;
        case 3: pv_block<3>(Pt, nk, vb, c * 16, O, ldo); break;
        case 2: pv_block<2>(Pt, nk, vb, c * 16, O, ldo); break;
        case 1: pv_block<1>(Pt, nk, vb, c * 16, O, ldo); break;
        default: break;
      }
    }
    for (int i = 0; i < rows; ++i) {
      float* orow = P.o + (b * P.Sq + r0 + i) * P.os + h * D;
      const float* src = O + i * ldo;
      const __m512 inv = _mm512_set1_ps(l[i] > 0.0f ? 1.0f / l[i] : 0.0f);
      for (int64_t c = 0; c < nd; ++c) {
        const __mmask16 mk = c == nd - 1 ? tailMask : __mmask16(0xFFFF);
        _mm512_mask_storeu_ps(orow + 16 * c, mk, _mm512_mul_ps(inv, _mm512_load_ps(src + 16 * c)));
      }
      if (P.lse) P.lse[(b * P.Sq + r0 + i) * P.H + h] = row_lse(m[i], l[i]);
    }
  }
}

// K^T of head (b, h) as 64-key panels: Kt[t][d][j] = k[b, t*64 + j, h, d] (zero padded), V of the
// head as contiguous rows Vp[j][d] (row stride ldv = D rounded up to 16, zero padded: aligned loads,
// no TLB walk over the strided qkv rows in the inner loop), and the keep flags (1/0, padding 0).
static void pack_kv(const Params& P, int64_t b, int64_t h, float* Kt, float* Vp, int64_t ldv,
                    float* keep) {
  const int64_t D = P.D;
  const int64_t nT = (P.Sk + BK - 1) / BK;
  for (int64_t t = 0; t < nT; ++t) {
    float* dst = Kt + t * D * BK;
    const int nk = static_cast<int>(std::min<int64_t>(BK, P.Sk - t * BK));
    for (int j = 0; j < nk; ++j) {
      const float* kr = P.k + (b * P.Sk + t * BK + j) * P.ks + h * D;
      for (int64_t d = 0; d < D; ++d) dst[d * BK + j] = kr[d];
    }
    for (int j = nk; j < BK; ++j)
      for (int64_t d = 0; d < D; ++d) dst[d * BK + j] = 0.0f;
  }
  for (int64_t j = 0; j < nT * BK; ++j) {
    float* vr = Vp + j * ldv;
    if (j < P.Sk) {
      std::memcpy(vr, P.v + (b * P.Sk + j) * P.vs + h * D, sizeof(float) * D);
      for (int64_t d = D; d < ldv; ++d) vr[d] = 0.0f;
    } else {
      for (int64_t d = 0; d < ldv; ++d) vr[d] = 0.0f;
    }
  }
  for (int64_t j = 0; j < nT * BK; ++j)
    keep[j] = j < P.Sk ? ((!P.mask || P.mask[b * P.Sk + j] > 0.5f) ? 1.0f : 0.0f) : 0.0f;
}

// DITFORGE_ATTENTION_SCALAR=1 forces the scalar path (what CPUs without AVX-512 run), so the tests cover it
static bool has_avx512() {
  static const bool ok = std::getenv("DITFORGE_ATTENTION_SCALAR") == nullptr && simd::cpu_has_avx512();
  return ok;
}

#endif  // DF_X86

static void run_items(const Params& P, int64_t it0, int64_t it1) {
  const int64_t nQT = (P.Sq + BQ - 1) / BQ;
#if DF_X86
  if (has_avx512()) {
    const int64_t nT = (P.Sk + BK - 1) / BK;
    const int64_t ldo = (P.D + 15) / 16 * 16;
    float* Kt = simd::thread_scratch<0>().get(static_cast<size_t>(nT * BK * (P.D + ldo + 1)));
    float* Vp = Kt + nT * BK * P.D;
    float* keep = Vp + nT * BK * ldo;
    float* work = simd::thread_scratch<1>().get(static_cast<size_t>(RB * ldo + RB * BK));
    float* O = work;
    float* Pt = work + RB * ldo;
    int64_t packedBH = -1;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t bh = it / nQT, qt = it % nQT;
      const int64_t b = bh / P.H, h = bh % P.H;
      if (bh != packedBH) {
        pack_kv(P, b, h, Kt, Vp, ldo, keep);
        packedBH = bh;
      }
      attn_item_avx512(P, b, h, qt * BQ, std::min(P.Sq, (qt + 1) * BQ), Kt, Vp, keep, O, Pt);
    }
    return;
  }
#endif
  for (int64_t it = it0; it < it1; ++it) {
    const int64_t bh = it / nQT, qt = it % nQT;
    attn_scalar_item(P, bh / P.H, bh % P.H, qt * BQ, std::min(P.Sq, (qt + 1) * BQ));
  }
}

}  // namespace attention_impl

static void attention_run(const KernelArgs& a, KernelCtx& ctx, float* lse) {
  using namespace attention_impl;
  Params P;
  P.q = a.t[0];
  P.k = a.t[1];
  P.v = a.t[2];
  P.mask = a.t[3];
  P.o = a.t[4];
  P.lse = lse;
  P.B = a.i[0];
  P.Sq = a.i[1];
  P.Sk = a.i[2];
  P.H = a.i[3];
  P.D = a.i[4];
  P.qs = a.i[5];
  P.ks = a.i[6];
  P.vs = a.i[7];
  P.os = a.i[8];
  P.scale = a.f[0];
  if (P.B <= 0 || P.Sq <= 0 || P.H <= 0 || P.D <= 0) return;
  if (P.Sk <= 0) {
    for (int64_t b = 0; b < P.B; ++b)
      for (int64_t s = 0; s < P.Sq; ++s)
        std::memset(P.o + (b * P.Sq + s) * P.os, 0, sizeof(float) * P.H * P.D);
    if (P.lse) std::fill(P.lse, P.lse + P.B * P.Sq * P.H, -std::numeric_limits<float>::infinity());
    return;
  }
  const int64_t nQT = (P.Sq + BQ - 1) / BQ;
  const int64_t items = P.B * P.H * nQT;
  const double work = double(P.B) * P.H * P.Sq * P.Sk * P.D;
  if (num_threads(ctx) <= 1 || work < 1e5) {
    run_items(P, 0, items);
    return;
  }
  parallel_for(ctx, items, 1, [&](int64_t b, int64_t e) { run_items(P, b, e); });
}

static void attention(const KernelArgs& a, KernelCtx& ctx) { attention_run(a, ctx, nullptr); }
static void attention_lse(const KernelArgs& a, KernelCtx& ctx) { attention_run(a, ctx, a.t[5]); }

// attn_merge: t = [prevOut, prevLse, out, lse, yOut, yLse], i = [B, S, H, D, prevStride, outStride, yStride]
//   Cache-DiT's fused_merge_attn_states (kernels/triton/merge_attn_states.py), float32 math per (row, head):
//     yOut = prevOut - sigmoid(lse - prevLse) * (prevOut - out)
//     yLse = prevLse - logsigmoid(prevLse - lse)
//   Rows (b, s) of the outputs at +(b*S + s)*stride, head h at +h*D; LSEs are [B, S, H] contiguous.
//   yOut may alias prevOut or out, yLse prevLse or lse (each (row, head) is read before it is written).
//   QUIRK (kept from the Triton kernel): an LSE of +inf is treated as -inf (FA2 reports +inf for an empty
//   key set, FA3 -inf). A -inf side holds no keys and contributes nothing: lse = -inf gives exactly
//   (prevOut, prevLse); prevLse = -inf gives exactly (out, lse) -- where Cache-DiT's formula would give
//   lse = -inf - log(0) = NaN (its ring never merges into an empty state, so it never hits that); both
//   -inf give (prevOut, -inf). logsigmoid uses the overflow-free form min(x, 0) - log1p(exp(-|x|)) (torch's
//   F.logsigmoid, the fallback path); the Triton kernel's log(sigmoid(x)) agrees to float32 rounding where
//   sigmoid(x) does not underflow (x > -87).
static void attn_merge(const KernelArgs& a, KernelCtx& ctx) {
  const float* po = a.t[0];
  const float* pl = a.t[1];
  const float* so = a.t[2];
  const float* sl = a.t[3];
  float* yo = a.t[4];
  float* yl = a.t[5];
  const int64_t B = a.i[0], S = a.i[1], H = a.i[2], D = a.i[3];
  const int64_t ps = a.i[4], ss = a.i[5], ys = a.i[6];
  const int64_t rows = B * S;
  if (rows <= 0 || H <= 0) return;
  const float inf = std::numeric_limits<float>::infinity();
  auto body = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t h = 0; h < H; ++h) {
        float p = pl[r * H + h], s = sl[r * H + h];
        if (p == inf) p = -inf;
        if (s == inf) s = -inf;
        const float* pr = po + r * ps + h * D;
        const float* sr = so + r * ss + h * D;
        float* yr = yo + r * ys + h * D;
        if (s == -inf) {  // empty suffix (or both empty): keep the running state
          if (yr != pr) std::memmove(yr, pr, sizeof(float) * D);
          yl[r * H + h] = p;
        } else if (p == -inf) {  // empty running state: take the suffix
          if (yr != sr) std::memmove(yr, sr, sizeof(float) * D);
          yl[r * H + h] = s;
        } else {
          const float w = 1.0f / (1.0f + std::exp(p - s));  // sigmoid(s - p)
          for (int64_t d = 0; d < D; ++d) yr[d] = pr[d] - w * (pr[d] - sr[d]);
          const float x = p - s;  // logsigmoid(x) = min(x, 0) - log1p(exp(-|x|))
          yl[r * H + h] = p - (std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x))));
        }
      }
    }
  };
  if (num_threads(ctx) <= 1 || rows * H * D < (1 << 15)) {
    body(0, rows);
    return;
  }
  parallel_for(ctx, rows, 16, body);
}


// `attention_bias`: t = [q, k, v, bias?, mask?, o], i = [B, Sq, Sk, H, D, qStride, kStride, vStride, oStride, causal,
//   kvHeads] (grouped-query attention: query head h reads key/value head h / (H / kvHeads); 0 = H),
//   f = [scale]. o = softmax(q k^T * scale + bias[h]) v per (b, h), the text encoders' attention: bias
//   [H, Sq, Sk] (T5's relative position bias, shared by the batch) is added to the scaled scores;
//   causal = 1 drops the keys j > i (CLIP's causal mask: the additive finfo.min of transformers gives
//   those keys probability exactly 0 too); mask [B, Sk] drops the keys whose mask is <= 0.5 (the T5 / UMT5
//   attention_mask over padding, for the same reason). A row with no key left is 0. Rows as in `attention`. Plain two-pass softmax per query row
//   (max, then exp and sum in float32), accumulation of P V in float32: these encoders run once per
//   prompt over <= 512 tokens, so a scalar kernel split over (b, h, query rows) is enough.
static void attention_bias(const KernelArgs& a, KernelCtx& ctx) {
  const float* q = a.t[0];
  const float* k = a.t[1];
  const float* v = a.t[2];
  const float* bias = a.t[3];
  const float* mask = a.t[4];
  float* o = a.t[5];
  const int64_t B = a.i[0], Sq = a.i[1], Sk = a.i[2], H = a.i[3], D = a.i[4];
  const int64_t qs = a.i[5], ks = a.i[6], vs = a.i[7], os = a.i[8];
  const bool causal = a.i[9] != 0;
  const int64_t group = H / (a.i[10] == 0 ? H : a.i[10]);
  const float scale = a.f[0];
  const int64_t items = B * H * Sq;
  if (items <= 0 || D <= 0) return;
  auto body = [&](int64_t r0, int64_t r1) {
    std::vector<float> p(static_cast<size_t>(std::max<int64_t>(Sk, 1)));
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = r % Sq, h = (r / Sq) % H, b = r / (Sq * H);
      const float* qr = q + (b * Sq + s) * qs + h * D;
      const float* brow = bias ? bias + (h * Sq + s) * Sk : nullptr;
      const float* mrow = mask ? mask + b * Sk : nullptr;
      const int64_t nk = causal ? std::min<int64_t>(Sk, s + 1) : Sk;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < nk; ++j) {
        if (mrow && !(mrow[j] > 0.5f)) {
          p[j] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float* kr = k + (b * Sk + j) * ks + (h / group) * D;
        float dot = 0.0f;
        for (int64_t d = 0; d < D; ++d) dot += qr[d] * kr[d];
        float sv = dot * scale;
        if (brow) sv += brow[j];
        p[j] = sv;
        m = std::max(m, sv);
      }
      float l = 0.0f;
      for (int64_t j = 0; j < nk; ++j) {
        p[j] = m == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(p[j] - m);
        l += p[j];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < nk; ++j) {
        const float* vr = v + (b * Sk + j) * vs + (h / group) * D;
        const float pj = p[j];
        for (int64_t d = 0; d < D; ++d) acc[d] += pj * vr[d];
      }
      float* orow = o + (b * Sq + s) * os + h * D;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (int64_t d = 0; d < D; ++d) orow[d] = acc[d] * inv;
    }
  };
  if (num_threads(ctx) <= 1 || items * Sk * D < (1 << 14)) {
    body(0, items);
    return;
  }
  parallel_for(ctx, items, 8, body);
}

// T5's relative position bucket (transformers T5Attention._relative_position_bucket) of
// rel = key position - query position, with torch's float32 arithmetic for the logarithmic buckets.
static inline int64_t t5_bucket(int64_t rel, int64_t numBuckets, int64_t maxDistance, bool bidirectional) {
  int64_t bucket = 0;
  int64_t nb = numBuckets;
  if (bidirectional) {
    nb /= 2;
    if (rel > 0) bucket += nb;
    rel = rel < 0 ? -rel : rel;
  } else {
    rel = rel < 0 ? -rel : 0;  // -min(rel, 0)
  }
  const int64_t maxExact = nb / 2;
  if (rel < maxExact) return bucket + rel;
  const float lg = std::log(static_cast<float>(rel) / static_cast<float>(maxExact)) /
                   static_cast<float>(std::log(static_cast<double>(maxDistance) / static_cast<double>(maxExact)));
  int64_t large = maxExact + static_cast<int64_t>(lg * static_cast<float>(nb - maxExact));
  large = std::min<int64_t>(large, nb - 1);
  return bucket + large;
}

// `t5_position_bias`: t = [table [numBuckets, H], bias [H, Sq, Sk]], i = [H, Sq, Sk, numBuckets, maxDistance,
//   bidirectional]: bias[h, i, j] = table[bucket(j - i), h] (T5Attention.compute_bias; the first layer's
//   relative_attention_bias, reused by every layer of the stack).
static void t5_position_bias(const KernelArgs& a, KernelCtx&) {
  const float* table = a.t[0];
  float* out = a.t[1];
  const int64_t H = a.i[0], Sq = a.i[1], Sk = a.i[2], NB = a.i[3], MD = a.i[4];
  const bool bidir = a.i[5] != 0;
  for (int64_t i = 0; i < Sq; ++i)
    for (int64_t j = 0; j < Sk; ++j) {
      const int64_t bk = t5_bucket(j - i, NB, MD, bidir);
      for (int64_t h = 0; h < H; ++h) out[(h * Sq + i) * Sk + j] = table[bk * H + h];
    }
}
}  // namespace ditforge

extern "C" const ditforge::KernelEntry ditforge_cpu_attention[] = {
    {"attention", &ditforge::attention},
    {"attention_lse", &ditforge::attention_lse},
    {"attn_merge", &ditforge::attn_merge},
    {"attention_bias", &ditforge::attention_bias},
    {"t5_position_bias", &ditforge::t5_position_bias},
    {nullptr, nullptr},
};
