// Standalone GPU check of the CUDA `linear` and `attention` kernels (templates/cuda/*.cu.hbs rendered into
// generated/kernels/cuda/) against float64 CPU loops on random data with odd sizes, plus a GFLOP/s line.
// Build and run on a machine with a GPU (see README.md in this folder):
//   nvcc -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
//     -I runtime/native/include test/cuda/check_linear_attention.cu generated/kernels/cuda/linear.cu \
//     generated/kernels/cuda/attention.cu -o /tmp/df-cuda-check && /tmp/df-cuda-check
// Exit code 0 = every case within tolerance.
#include <cuda_runtime.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "check_common.cuh"

extern "C" int ditforge_cuda_linear(const ditforge::KernelArgs* a, void* stream);
extern "C" int ditforge_cuda_attention(const ditforge::KernelArgs* a, void* stream);

#define CK(x)                                                                             \
  do {                                                                                    \
    cudaError_t e_ = (x);                                                                 \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                       \
    }                                                                                     \
  } while (0)

using dfcheck::cases;
using dfcheck::failures;

static std::vector<float> rnd(size_t n, float amp = 1.0f) { return dfcheck::uniform(n, -amp, amp); }
static float* dev(const std::vector<float>& h) {
  float* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(1, h.size()) * sizeof(float)));
  if (!h.empty()) CK(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  return p;
}
static std::vector<float> host(const float* d, size_t n) {
  std::vector<float> h(n);
  CK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

static void check_linear(int64_t M, int64_t N, int64_t K, int epi, bool withBias, bool alias, int64_t S) {
  ++cases;
  const int64_t gs = N + 3, G = (M + S - 1) / S;
  auto x = rnd(M * K), W = rnd(N * K, 0.5f), b = rnd(N), g = rnd(G * gs), res = rnd(M * N);
  float *dx = dev(x), *dW = dev(W), *db = withBias ? dev(b) : nullptr, *dg = dev(g), *dr = dev(res);
  float* dy = alias ? dr : dev(std::vector<float>(M * N, 7.0f));
  ditforge::KernelArgs a{};
  a.t[0] = dx; a.t[1] = dW; a.t[2] = db; a.t[3] = dy;
  if (epi == 3) { a.t[4] = dg; a.t[5] = dr; }
  a.i[0] = M; a.i[1] = N; a.i[2] = K; a.i[3] = epi; a.i[4] = S; a.i[5] = gs;
  CK(static_cast<cudaError_t>(ditforge_cuda_linear(&a, nullptr)));
  CK(cudaDeviceSynchronize());
  auto y = host(dy, M * N);
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) { acc += double(x[m * K + k]) * W[n * K + k]; mag += std::fabs(double(x[m * K + k]) * W[n * K + k]); }
      if (withBias) { acc += b[n]; mag += std::fabs(b[n]); }
      double r, tol = (K + 2) * 6e-8 * mag;
      if (epi == 0) r = acc;
      else if (epi == 1) { r = 0.5 * acc * (1 + std::tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc))); tol = 1.13 * tol + 1e-6 * std::fabs(r); }
      else if (epi == 2) { r = acc / (1 + std::exp(-acc)); tol = 1.13 * tol + 1e-6 * std::fabs(r); }
      else { double gg = g[(m / S) * gs + n]; r = res[m * N + n] + gg * acc; tol = std::fabs(gg) * tol + 4 * 6e-8 * (std::fabs(res[m * N + n]) + std::fabs(r)); }
      worst = std::max(worst, std::fabs(y[m * N + n] - r) / (tol + 1e-30));
    }
  if (!(worst <= 1.0)) { ++failures; std::printf("FAIL linear M=%ld N=%ld K=%ld epi=%d bias=%d alias=%d: error/tol %.3g\n", (long)M, (long)N, (long)K, epi, withBias, alias, worst); }
  cudaFree(dx); cudaFree(dW); if (db) cudaFree(db); cudaFree(dg); cudaFree(dr); if (!alias) cudaFree(dy);
}

static void check_attention(int64_t B, int64_t Sq, int64_t Sk, int64_t H, int64_t D, int maskMode) {
  ++cases;
  const int64_t qs = H * D + 5, ks = 2 * H * D + 3, vs = H * D + 1, os = H * D + 2;
  auto q = rnd(B * Sq * qs, 2.0f), k = rnd(B * Sk * ks, 2.0f), v = rnd(B * Sk * vs);
  std::vector<float> mask(B * Sk, 1.0f);
  if (maskMode)
    for (int64_t bb = 0; bb < B; ++bb)
      for (int64_t j = 0; j < Sk; ++j) mask[bb * Sk + j] = (maskMode == 2 && bb == 0) ? 0.0f : ((j * 7 + bb) % 3 == 0 ? 0.0f : 1.0f);
  float *dq = dev(q), *dk = dev(k), *dv = dev(v), *dm = dev(mask), *dout = dev(std::vector<float>(B * Sq * os, 9.0f));
  const float scale = 1.0f / std::sqrt(float(D));
  ditforge::KernelArgs a{};
  a.t[0] = dq; a.t[1] = dk; a.t[2] = dv; a.t[3] = maskMode ? dm : nullptr; a.t[4] = dout;
  const int64_t I[9] = {B, Sq, Sk, H, D, qs, ks, vs, os};
  for (int i = 0; i < 9; ++i) a.i[i] = I[i];
  a.f[0] = scale;
  CK(static_cast<cudaError_t>(ditforge_cuda_attention(&a, nullptr)));
  CK(cudaDeviceSynchronize());
  auto o = host(dout, B * Sq * os);
  double worst = 0;
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < Sq; ++s) {
        std::vector<double> sc(Sk), p(Sk, 0.0);
        double mx = -INFINITY;
        for (int64_t j = 0; j < Sk; ++j) {
          if (maskMode && mask[bb * Sk + j] == 0) continue;
          double d = 0;
          for (int64_t e = 0; e < D; ++e) d += double(q[(bb * Sq + s) * qs + h * D + e]) * k[(bb * Sk + j) * ks + h * D + e];
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double l = 0;
        for (int64_t j = 0; j < Sk; ++j)
          if (!(maskMode && mask[bb * Sk + j] == 0)) { p[j] = std::exp(sc[j] - mx); l += p[j]; }
        for (int64_t e = 0; e < D; ++e) {
          double r = 0;
          for (int64_t j = 0; j < Sk; ++j) r += p[j] * v[(bb * Sk + j) * vs + h * D + e];
          r = mx == -INFINITY ? 0.0 : r / l;
          const float got = o[(bb * Sq + s) * os + h * D + e];
          double err = std::fabs(got - r) / 3e-5;  // |v| <= 1, |logit| <= ~2 sqrt(D): fp32 + __expf error << 3e-5
          if (mx == -INFINITY && got != 0.0f) err = 1e9;
          worst = std::max(worst, err);
        }
        for (int64_t c = H * D; c < os; ++c)
          if (o[(bb * Sq + s) * os + c] != 9.0f) worst = 1e9;
      }
  if (!(worst <= 1.0)) { ++failures; std::printf("FAIL attention B=%ld Sq=%ld Sk=%ld H=%ld D=%ld mask=%d: error/tol %.3g\n", (long)B, (long)Sq, (long)Sk, (long)H, (long)D, maskMode, worst); }
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dm); cudaFree(dout);
}

static void bench() {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  {
    const int64_t M = 4096, N = 4096, K = 4096;
    float *dx = dev(rnd(M * K)), *dW = dev(rnd(N * K)), *dy = dev(std::vector<float>(M * N));
    ditforge::KernelArgs a{};
    a.t[0] = dx; a.t[1] = dW; a.t[3] = dy; a.i[0] = M; a.i[1] = N; a.i[2] = K; a.i[4] = M;
    ditforge_cuda_linear(&a, nullptr);
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 10; ++i) ditforge_cuda_linear(&a, nullptr);
    CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
    std::printf("linear 4096^3 fp32: %.1f GFLOP/s\n", 2.0 * M * N * K / (ms / 10 * 1e-3) / 1e9);
    cudaFree(dx); cudaFree(dW); cudaFree(dy);
  }
  {
    const int64_t B = 1, S = 4096, H = 24, D = 128, st = 3 * H * D;
    float *dqkv = dev(rnd(B * S * st)), *dout = dev(std::vector<float>(B * S * H * D));
    ditforge::KernelArgs a{};
    a.t[0] = dqkv; a.t[1] = dqkv + H * D; a.t[2] = dqkv + 2 * H * D; a.t[4] = dout;
    const int64_t I[9] = {B, S, S, H, D, st, st, st, H * D};
    for (int i = 0; i < 9; ++i) a.i[i] = I[i];
    a.f[0] = 0.088f;
    ditforge_cuda_attention(&a, nullptr);
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 3; ++i) ditforge_cuda_attention(&a, nullptr);
    CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
    std::printf("attention B1 S4096 H24 D128: %.1f GFLOP/s\n", 4.0 * B * H * S * S * D / (ms / 3 * 1e-3) / 1e9);
    cudaFree(dqkv); cudaFree(dout);
  }
}

int main() {
  if (dfcheck::no_cuda_device()) return 3;
  dfcheck::rng.seed(42);
  for (int64_t M : {1, 13, 37, 129, 300})
    for (int64_t K : {1, 17, 33, 260})
      for (int64_t N : {1, 31, 65, 130})
        for (int epi = 0; epi < 4; ++epi) check_linear(M, N, K, epi, (M + N + K + epi) % 2 == 0, epi == 3 && M % 2, epi == 3 ? std::max<int64_t>(1, M / 3) : M);
  for (int64_t D : {16, 24, 32, 64, 128, 5, 200})
    for (int64_t Sq : {1, 7, 97})
      for (int64_t Sk : {1, 13, 64, 130})
        for (int mm : {0, 1, 2}) check_attention(2, Sq, Sk, 3, D, mm);
  const int rc = dfcheck::summary();
  bench();
  return rc;
}
