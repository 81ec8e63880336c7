// Standalone GPU check of the ring-attention kernels (templates/cuda/attention.cu.hbs): `attention_lse` and
// `attn_merge` against the CPU kernels of the same name (templates/cpu/attention.cpp.hbs, checked against
// float64 references by test/kernels/attention.test.ts). Random data, odd sizes, strided rows, masks, Sk = 0,
// in-place merges and the +inf/-inf LSE quirk.
// Tolerances: attention o within 2e-5 * (1 + |cpu|) and lse within 2e-5 * (1 + |lse|) (the CUDA kernel uses
// __expf, 32-key tiles and FMA dot products, the CPU one a polynomial exp, 64-key tiles: both are within
// ~1e-6 relative of the float64 reference at these sizes, so 2e-5 leaves a 10x margin); -inf LSEs exactly.
// attn_merge within 1e-6 * (1 + |cpu|) (expf/log1pf vs std::exp/std::log1p: a few ulps on w and the LSE).
//   nvcc -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
//     -I runtime/native/include -Xcompiler -fopenmp-simd test/cuda/check_attention_lse.cu \
//     generated/kernels/cuda/attention.cu generated/kernels/cpu/attention.cpp runtime/native/src/thread_pool.cc \
//     -o /tmp/df-cuda-attn-lse && /tmp/df-cuda-attn-lse
// Exit code 0 = every case within tolerance, 3 = no CUDA device.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "check_common.cuh"

extern "C" const ditforge::KernelEntry ditforge_cpu_attention[];
extern "C" const ditforge::CudaKernelEntry ditforge_cuda_table_attention[];

namespace dfcheck {
const std::vector<const ditforge::KernelEntry*> kCpuTables = {ditforge_cpu_attention};
const std::vector<const ditforge::CudaKernelEntry*> kCudaTables = {ditforge_cuda_table_attention};
}  // namespace dfcheck

namespace {

using dfcheck::run_both;

std::vector<float> rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return dfcheck::uniform(n, lo, hi); }

// |g - c| <= tol * (1 + |c|) elementwise; infinities must match exactly
bool close(const std::vector<float>& c, const std::vector<float>& g, double tol, std::string& why) {
  for (size_t k = 0; k < c.size(); ++k) {
    if (std::isinf(c[k]) || std::isinf(g[k]) || std::isnan(c[k]) || std::isnan(g[k])) {
      if (!(c[k] == g[k])) {
        why = "element " + std::to_string(k) + ": cpu " + std::to_string(c[k]) + " gpu " + std::to_string(g[k]);
        return false;
      }
      continue;
    }
    if (std::fabs(double(g[k]) - c[k]) > tol * (1.0 + std::fabs(c[k]))) {
      why = "element " + std::to_string(k) + ": cpu " + std::to_string(c[k]) + " gpu " + std::to_string(g[k]);
      return false;
    }
  }
  return true;
}

void expect_close(const std::vector<float>& c, const std::vector<float>& g, double tol, const std::string& what) {
  std::string why;
  const bool ok = close(c, g, tol, why);
  dfcheck::expect(ok, ok ? what : what + ": " + why);
}

}  // namespace

int main() {
  if (dfcheck::no_cuda_device()) return 3;
  dfcheck::rng.seed(17);
  struct Att { int64_t B, Sq, Sk, H, D; bool mask; };
  for (const Att& c : {Att{1, 1, 1, 1, 5, false}, Att{2, 7, 13, 3, 16, false}, Att{2, 37, 65, 3, 64, true},
                       Att{1, 97, 130, 2, 72, false}, Att{1, 576, 577, 4, 64, false}, Att{3, 5, 0, 2, 8, false}}) {
    const int64_t HD = c.H * c.D, qs = HD + 2, ks = HD + 5, vs = HD + 1, os = HD + 3;
    std::vector<std::vector<float>> cpu = {rnd(c.B * c.Sq * qs, -2, 2), rnd(std::max<int64_t>(1, c.B * c.Sk * ks), -2, 2),
                                           rnd(std::max<int64_t>(1, c.B * c.Sk * vs)), {}, std::vector<float>(c.B * c.Sq * os, 0.0f),
                                           std::vector<float>(c.B * c.Sq * c.H, 0.0f)},
                                       gpu;
    if (c.mask) {
      cpu[3].assign(c.B * c.Sk, 1.0f);
      for (int64_t j = 0; j < c.Sk; ++j) cpu[3][j] = 0.0f;  // batch row 0 fully masked: lse -inf
      for (int64_t j = 0; j < c.Sk; j += 3) cpu[3][c.Sk + j] = 0.0f;
    }
    run_both("attention_lse", cpu, gpu, {c.B, c.Sq, c.Sk, c.H, c.D, qs, ks, vs, os}, {1.0f / std::sqrt(float(c.D))});
    const std::string sz = " B" + std::to_string(c.B) + " Sq" + std::to_string(c.Sq) + " Sk" + std::to_string(c.Sk) + " H" +
                           std::to_string(c.H) + " D" + std::to_string(c.D);
    expect_close(cpu[4], gpu[4], 2e-5, "attention_lse o" + sz);
    expect_close(cpu[5], gpu[5], 2e-5, "attention_lse lse" + sz);
  }
  struct Mrg { int64_t B, S, H, D; int alias; };  // alias: 0 none, 1 y = prev, 2 y = suffix
  for (const Mrg& c : {Mrg{1, 1, 1, 1, 0}, Mrg{2, 7, 3, 5, 0}, Mrg{1, 33, 5, 64, 1}, Mrg{3, 11, 2, 17, 2}, Mrg{1, 1000, 16, 64, 1}}) {
    const int64_t rows = c.B * c.S, HD = c.H * c.D, ps = HD + 3, ss = HD + 1;
    const int64_t ys = c.alias == 1 ? ps : c.alias == 2 ? ss : HD + 2;
    std::vector<std::vector<float>> cpu = {rnd(rows * ps), rnd(rows * c.H, -5, 12), rnd(rows * ss), rnd(rows * c.H, -5, 12),
                                           std::vector<float>(rows * ys, 0.0f), std::vector<float>(rows * c.H, 0.0f)},
                                       gpu;
    const float inf = INFINITY;
    const float quirks[][2] = {{inf, 2}, {2, inf}, {-inf, 3}, {3, -inf}, {inf, inf}, {-inf, inf}, {0, 150}, {150, 0}};
    for (size_t q = 0; q < 8 && q < static_cast<size_t>(rows * c.H); ++q) {
      cpu[1][q] = quirks[q][0];
      cpu[3][q] = quirks[q][1];
    }
    std::vector<int> alias = {-1, -1, -1, -1, -1, -1};
    if (c.alias == 1) alias[4] = 0, alias[5] = 1;
    if (c.alias == 2) alias[4] = 2, alias[5] = 3;
    run_both("attn_merge", cpu, gpu, {c.B, c.S, c.H, c.D, ps, ss, ys}, {}, alias);
    const int yo = c.alias == 1 ? 0 : c.alias == 2 ? 2 : 4, yl = c.alias == 1 ? 1 : c.alias == 2 ? 3 : 5;
    const std::string sz = " B" + std::to_string(c.B) + " S" + std::to_string(c.S) + " H" + std::to_string(c.H) + " D" +
                           std::to_string(c.D) + " alias" + std::to_string(c.alias);
    expect_close(cpu[yo], gpu[yo], 1e-6, "attn_merge out" + sz);
    expect_close(cpu[yl], gpu[yl], 1e-6, "attn_merge lse" + sz);
  }
  return dfcheck::summary();
}
