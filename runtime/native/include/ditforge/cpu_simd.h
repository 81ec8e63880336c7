// AVX-512 plumbing shared by the CPU kernels with a hand-vectorised path (attention, linear). The
// AVX-512 code is compiled with function target attributes (DF_AVX512) and chosen at run time
// (cpu_has_avx512), so it is used even without -march=native; DF_X86 is 0 where the intrinsics and
// __builtin_cpu_supports are not available, and the kernels then build their portable path only.
#pragma once
#include <cstddef>
#include <cstdlib>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define DF_X86 1
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsic headers trip -W(maybe-)uninitialized (`__m512 __Y = __Y;`) when inlined
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#define DF_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))
#else
#define DF_X86 0
#endif

namespace ditforge {
namespace simd {

// 64-byte aligned scratch that lives as long as the (pool) thread.
struct Scratch {
  float* p = nullptr;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      size_t bytes = ((n * sizeof(float)) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      cap = n;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};

// The calling thread's scratch buffer number Slot; static, so each kernel file has buffers of its own.
template <int Slot>
static Scratch& thread_scratch() {
  static thread_local Scratch s;
  return s;
}

#if DF_X86
// AVX-512F/DQ/BW/VL, everything DF_AVX512 code uses; checked once per process.
static inline bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return ok;
}

// exp(x) for 16 lanes (Cephes polynomial, range reduction by ln 2); clamps to [-103, 88.7].
static inline DF_AVX512 __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, fx);
}
#endif  // DF_X86

}  // namespace simd
}  // namespace ditforge
