// Standalone GPU check of the CUDA cache kernels (templates/cuda/cache.cu.hbs) against the CPU kernels of
// the same name (templates/cpu/cache.cpp.hbs, checked against float64 references by test/kernels/cache.test.ts):
// cache_probe (cur bit-exact, sums rtol 1e-12: only the float64 summation order differs), residual_store /
// residual_apply (bit-exact), forecast (bit-exact: no FMA on either side), and the calibrator kernels:
// taylor_diff, foca_forecast (Heun and damped), forecast_f64 (one and chained launches, batch segments, the
// on-device non-finite fallback) bit-exact; dmd_gram (symmetric and tile forms) rtol 1e-12 (float64 summation
// order differs: CPU fixed 4096 chunks, GPU block reduction). Random data, odd sizes.
//   nvcc -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
//     -I runtime/native/include -Xcompiler -fopenmp-simd test/cuda/check_cache_kernels.cu \
//     generated/kernels/cuda/cache.cu generated/kernels/cpu/cache.cpp runtime/native/src/thread_pool.cc \
//     -o /tmp/df-cuda-cache && /tmp/df-cuda-cache
// Exit code 0 = every case within tolerance, 3 = no CUDA device.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check_common.cuh"

extern "C" const ditforge::KernelEntry ditforge_cpu_cache[];
extern "C" const ditforge::CudaKernelEntry ditforge_cuda_table_cache[];

namespace dfcheck {
const std::vector<const ditforge::KernelEntry*> kCpuTables = {ditforge_cpu_cache};
const std::vector<const ditforge::CudaKernelEntry*> kCudaTables = {ditforge_cuda_table_cache};
}  // namespace dfcheck

namespace {

using dfcheck::expect;
using dfcheck::run_both;

std::vector<float> rnd(size_t n) { return dfcheck::normal(n, 0.0f, 1.0f); }

}  // namespace

int main() {
  if (dfcheck::no_cuda_device()) return 3;
  dfcheck::rng.seed(11);
  for (int64_t n : {1, 7, 4095, 4097, 65536 + 37, 1000003}) {
    const std::string sz = " n=" + std::to_string(n);
    {  // probe: fused form and the DBPrune form
      std::vector<std::vector<float>> c = {rnd(n), rnd(n), rnd(n), std::vector<float>(n, 0.0f), std::vector<float>(4, 0.0f)}, g;
      run_both("cache_probe", c, g, {n}, {});
      expect(std::memcmp(c[3].data(), g[3].data(), n * sizeof(float)) == 0, "cache_probe cur" + sz);
      double cs[2], gs[2];
      std::memcpy(cs, c[4].data(), 16);
      std::memcpy(gs, g[4].data(), 16);
      expect(std::fabs(cs[0] - gs[0]) <= 1e-12 * std::fabs(cs[0]) && std::fabs(cs[1] - gs[1]) <= 1e-12 * std::fabs(cs[1]), "cache_probe sums" + sz);
      std::vector<std::vector<float>> c2 = {rnd(n), {}, rnd(n), {}, std::vector<float>(4, 0.0f)}, g2;
      run_both("cache_probe", c2, g2, {n}, {});
      std::memcpy(cs, c2[4].data(), 16);
      std::memcpy(gs, g2[4].data(), 16);
      expect(std::fabs(cs[0] - gs[0]) <= 1e-12 * std::fabs(cs[0]), "cache_probe (no x0)" + sz);
    }
    for (const char* k : {"residual_store", "residual_apply"}) {
      std::vector<std::vector<float>> c = {rnd(n), rnd(n), std::vector<float>(n, 0.0f)}, g;
      run_both(k, c, g, {n}, {});
      expect(std::memcmp(c[2].data(), g[2].data(), n * sizeof(float)) == 0, std::string(k) + sz);
    }
    for (int64_t terms : {1, 2, 3, 6}) {
      std::vector<std::vector<float>> c = {std::vector<float>(n, 0.0f)}, g;
      for (int j = 0; j < 6; ++j) c.push_back(j < terms ? rnd(n) : std::vector<float>());
      run_both("forecast", c, g, {n, terms}, {0.5f, 0.37f, 1.5f, -2.25f, 0.1f, 3.0f});
      expect(std::memcmp(c[0].data(), g[0].data(), n * sizeof(float)) == 0, "forecast k=" + std::to_string(terms) + sz);
    }
    // calibrator kernels
    auto bits = [&](const std::vector<float>& a, const std::vector<float>& b) { return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0; };
    for (float w : {1.0f, 3.0f, 7.0f}) {
      std::vector<std::vector<float>> c = {rnd(n), rnd(n), std::vector<float>(n, 0.0f)}, g;
      run_both("taylor_diff", c, g, {n}, {w});
      expect(bits(c[2], g[2]), "taylor_diff w=" + std::to_string(w) + sz);
    }
    for (int e : {1, 2, 3, 4, 7}) {
      const bool damped = e > 3;
      const float coef = damped ? 3.0f / static_cast<float>(e) : static_cast<float>(e) / 2.0f;
      std::vector<std::vector<float>> c = {rnd(n), rnd(n), rnd(n), rnd(n), std::vector<float>(n, 0.0f)}, g;
      run_both("foca_forecast", c, g, {n, damped ? 1 : 0}, {coef});
      expect(bits(c[4], g[4]), "foca_forecast e=" + std::to_string(e) + sz);
    }
    for (int64_t batch : {1, 2}) {
      if (n % batch) continue;
      const std::string bz = sz + " batch=" + std::to_string(batch);
      // dmd_gram: symmetric 7 x 7, and a 3 x 4 tile
      for (int64_t kb : {0, 4}) {
        const int64_t ka = kb ? 3 : 7, cols = kb ? kb : ka;
        std::vector<std::vector<float>> c = {std::vector<float>(2 * batch * ka * cols, 0.0f)}, g;
        for (int j = 0; j < 7; ++j) c.push_back(j < ka + kb ? rnd(n) : std::vector<float>());
        run_both("dmd_gram", c, g, {n, batch, ka, kb}, {});
        std::vector<double> cg(batch * ka * cols), gg(batch * ka * cols);
        std::memcpy(cg.data(), c[0].data(), cg.size() * sizeof(double));
        std::memcpy(gg.data(), g[0].data(), gg.size() * sizeof(double));
        bool ok = true;
        for (size_t q = 0; q < cg.size(); ++q) ok = ok && std::fabs(cg[q] - gg[q]) <= 1e-12 * static_cast<double>(n);
        expect(ok, "dmd_gram ka=" + std::to_string(ka) + " kb=" + std::to_string(kb) + bz);
      }
      // forecast_f64: one launch (flags 3), two chained launches (1 then 2 with the float64 accumulator)
      for (int64_t k : {1, 5}) {
        std::vector<float> coefs(2 * batch * k);
        std::vector<double> cd(batch * k);
        for (size_t q = 0; q < cd.size(); ++q) cd[q] = std::sin(1.0 + 0.37 * static_cast<double>(q)) * 1.7;
        std::memcpy(coefs.data(), cd.data(), cd.size() * sizeof(double));
        std::vector<std::vector<float>> c = {std::vector<float>(n, 0.0f), coefs, {}}, g;
        for (int j = 0; j < 5; ++j) c.push_back(j < k ? rnd(n) : std::vector<float>());
        run_both("forecast_f64", c, g, {n, batch, k, 3}, {});
        expect(bits(c[0], g[0]), "forecast_f64 k=" + std::to_string(k) + bz);
        // chained: start into acc (y untouched), then finish from acc with the same terms again
        std::vector<std::vector<float>> c1 = c, g1;
        c1[0].assign(n, 0.0f);
        c1[2].assign(2 * n, 0.0f);
        run_both("forecast_f64", c1, g1, {n, batch, k, 1}, {});
        expect(bits(c1[2], g1[2]), "forecast_f64 start acc k=" + std::to_string(k) + bz);
        std::vector<std::vector<float>> c2 = c1, g2;  // both sides continue from the (bit-equal) CPU accumulator
        run_both("forecast_f64", c2, g2, {n, batch, k, 2}, {});
        expect(bits(c2[0], g2[0]), "forecast_f64 finish k=" + std::to_string(k) + bz);
      }
      {  // overflow in the last segment -> the whole y is the last term, decided on the device
        std::vector<double> cd(batch * 2, 1.0);
        cd[batch * 2 - 2] = 1e300;
        std::vector<float> coefs(4 * batch);
        std::memcpy(coefs.data(), cd.data(), cd.size() * sizeof(double));
        std::vector<std::vector<float>> c = {std::vector<float>(n, 0.0f), coefs, {}, rnd(n), rnd(n)}, g;
        run_both("forecast_f64", c, g, {n, batch, 2, 3}, {});
        expect(bits(g[0], c[4]) && bits(c[0], c[4]), "forecast_f64 non-finite fallback" + bz);
      }
    }
  }
  return dfcheck::summary();
}
