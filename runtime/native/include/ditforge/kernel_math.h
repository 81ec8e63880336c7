// Vectorisable float math shared by the generated CPU kernels (no libmvec / -ffast-math needed).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ditforge {
namespace kmath {

// exp(x) with ~2 ulp relative error on [-87, 88]; clamps outside (exp(-inf) -> ~1e-38, not 0).
static inline float exp_f(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float s;
  std::memcpy(&s, &bits, sizeof s);
  return p * s;
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }
static inline float silu_f(float x) { return x / (1.0f + exp_f(-x)); }
static inline float tanh_f(float x) {
  // tanh(x) = sign(x) * (1 - 2 / (exp(2|x|) + 1)); small |x| uses the odd Taylor series to keep relative accuracy
  const float ax = std::fabs(x);
  const float e = exp_f(2.0f * ax);
  float big = 1.0f - 2.0f / (e + 1.0f);
  const float x2 = x * x;
  float small = ax * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f + x2 * (-17.0f / 315.0f))));
  float r = ax < 0.125f ? small : big;
  return x < 0.0f ? -r : r;
}
/** exact GELU: x / 2 (1 + erf(x / sqrt 2)) in float32 (std::erf) */
static inline float gelu_erf_f(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }
static inline float gelu_tanh_f(float u) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * u * (1.0f + tanh_f(k * (u + 0.044715f * u * u * u)));
}

}  // namespace kmath
}  // namespace ditforge
