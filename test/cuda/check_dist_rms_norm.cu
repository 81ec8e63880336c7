// Standalone GPU check of the CUDA distributed-RMSNorm kernels (templates/cuda/norm.cu.hbs) against the CPU
// kernels of the same name (templates/cpu/norm.cpp.hbs, checked against float64 references by
// test/kernels/norm.test.ts): rms_sumsq rtol 1e-12 (float64 sums; only the summation order differs: CPU serial
// per row, GPU a fixed block tree), rms_norm_apply bit-exact (the same float64 sums fed to both; the scale is a
// correctly rounded double sqrt / division cast once to float, then two float products, no FMA possible), with
// and without weight, in place, Cfull > C (a rank's channel slice). Random data, odd sizes.
//   nvcc -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
//     -I runtime/native/include -Xcompiler -fopenmp-simd test/cuda/check_dist_rms_norm.cu \
//     generated/kernels/cuda/norm.cu generated/kernels/cpu/norm.cpp runtime/native/src/thread_pool.cc \
//     -o /tmp/df-cuda-norm && /tmp/df-cuda-norm
// Exit code 0 = every case within tolerance, 3 = no CUDA device.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check_common.cuh"

extern "C" const ditforge::KernelEntry ditforge_cpu_norm[];
extern "C" const ditforge::CudaKernelEntry ditforge_cuda_table_norm[];

namespace dfcheck {
const std::vector<const ditforge::KernelEntry*> kCpuTables = {ditforge_cpu_norm};
const std::vector<const ditforge::CudaKernelEntry*> kCudaTables = {ditforge_cuda_table_norm};
}  // namespace dfcheck

namespace {

using dfcheck::expect;
using dfcheck::normal;
using dfcheck::run_both;

double f64_at(const std::vector<float>& v, size_t k) {
  double d;
  std::memcpy(&d, v.data() + 2 * k, 8);
  return d;
}

// float64 values packed in float vectors (2 floats each): max relative error within rtol
bool close_f64(const std::vector<float>& got, const std::vector<float>& want, double rtol) {
  for (size_t k = 0; k < want.size() / 2; ++k) {
    const double g = f64_at(got, k), w = f64_at(want, k);
    if (!(std::fabs(g - w) <= rtol * std::fabs(w))) {
      std::printf("  element %zu: gpu %.17g cpu %.17g\n", k, g, w);
      return false;
    }
  }
  return true;
}

bool bit_exact(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t k = 0; k < want.size(); ++k)
    if (std::memcmp(&got[k], &want[k], 4) != 0) {
      std::printf("  element %zu: gpu %.9g cpu %.9g\n", k, got[k], want[k]);
      return false;
    }
  return true;
}

}  // namespace

int main() {
  if (dfcheck::no_cuda_device()) return 3;
  dfcheck::rng.seed(17);
  // (M, C, Cfull): a rank's C of Cfull channels; C > 256 exercises the strided loop, C = 1 a lone channel
  const int64_t shapes[][3] = {{13, 37, 111}, {5, 129, 129}, {1, 1, 3}, {3, 700, 2100}, {70, 48, 96}};
  for (auto& sh : shapes) {
    const int64_t M = sh[0], C = sh[1], Cfull = sh[2];
    const std::string tag = " M=" + std::to_string(M) + " C=" + std::to_string(C) + " Cfull=" + std::to_string(Cfull);
    std::vector<std::vector<float>> c = {normal(M * C, 0.3f, 1.7f), std::vector<float>(2 * M, NAN)}, g;
    run_both("rms_sumsq", c, g, {M, C}, {});
    expect(close_f64(g[1], c[1], 1e-12), "rms_sumsq" + tag);
    // the all-reduced sums: this rank's sums plus the other ranks' (positive) share
    std::vector<float> ss = c[1];
    for (int64_t m = 0; m < M; ++m) {
      const double v = f64_at(ss, m) + static_cast<double>(Cfull - C) * 1.3;
      std::memcpy(ss.data() + 2 * m, &v, 8);
    }
    for (int weighted = 0; weighted < 2; ++weighted) {
      std::vector<std::vector<float>> c2 = {c[0], ss, weighted ? normal(C, 1.0f, 0.4f) : std::vector<float>(), std::vector<float>(M * C, NAN)}, g2;
      run_both("rms_norm_apply", c2, g2, {M, C, Cfull}, {1e-6f});
      expect(bit_exact(g2[3], c2[3]), "rms_norm_apply" + tag + (weighted ? " weighted" : ""));
    }
    // in place (y is x's buffer)
    std::vector<std::vector<float>> c3 = {c[0], ss, normal(C, 1.0f, 0.4f), {}}, g3;
    run_both("rms_norm_apply", c3, g3, {M, C, Cfull}, {1e-5f}, {-1, -1, -1, 0});
    expect(bit_exact(g3[0], c3[0]), "rms_norm_apply in place" + tag);
  }
  return dfcheck::summary();
}
