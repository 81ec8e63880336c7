// Standalone GPU check of the CUDA cache kernels (templates/cuda/cache.cu.hbs) against the CPU kernels of
// the same name (templates/cpu/cache.cpp.hbs, checked against float64 references by test/kernels/cache.test.ts):
// cache_probe (cur bit-exact, sums rtol 1e-12: only the float64 summation order differs), residual_store /
// residual_apply (bit-exact), forecast (bit-exact: no FMA on either side). Random data, odd sizes.
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

#include "ditforge/cuda_common.cuh"
#include "ditforge/thread_pool.h"

extern "C" const ditforge::KernelEntry ditforge_cpu_cache[];
extern "C" const ditforge::CudaKernelEntry ditforge_cuda_table_cache[];

namespace {

ditforge::KernelFn cpu_fn(const std::string& n) {
  for (auto* t = ditforge_cpu_cache; t->name; ++t)
    if (n == t->name) return t->fn;
  return nullptr;
}
ditforge::CudaKernelFn cuda_fn(const std::string& n) {
  for (auto* t = ditforge_cuda_table_cache; t->name; ++t)
    if (n == t->name) return t->fn;
  return nullptr;
}

std::mt19937 rng(11);
std::vector<float> rnd(size_t n) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

int cases = 0, failures = 0;

// runs `name` on CPU and GPU with the same host inputs; slots with empty vectors are null
void run_both(const std::string& name, std::vector<std::vector<float>>& cpu, std::vector<std::vector<float>>& gpu,
              const std::vector<int64_t>& ints, const std::vector<float>& floats) {
  ditforge::ThreadPool pool(2);
  ditforge::KernelCtx ctx{&pool};
  ditforge::KernelArgs a{};
  for (size_t k = 0; k < ints.size(); ++k) a.i[k] = ints[k];
  for (size_t k = 0; k < floats.size(); ++k) a.f[k] = floats[k];
  ditforge::KernelArgs g = a;
  std::vector<float*> dev(cpu.size(), nullptr);
  for (size_t k = 0; k < cpu.size(); ++k) {
    a.t[k] = cpu[k].empty() ? nullptr : cpu[k].data();
    if (!cpu[k].empty()) {
      cudaMalloc(&dev[k], cpu[k].size() * sizeof(float));
      cudaMemcpy(dev[k], cpu[k].data(), cpu[k].size() * sizeof(float), cudaMemcpyHostToDevice);
    }
    g.t[k] = dev[k];
  }
  cpu_fn(name)(a, ctx);
  int rc = cuda_fn(name)(&g, nullptr);
  cudaDeviceSynchronize();
  if (rc) std::printf("%s: launch error %d\n", name.c_str(), rc);
  gpu = cpu;
  for (size_t k = 0; k < cpu.size(); ++k) {
    if (dev[k]) {
      cudaMemcpy(gpu[k].data(), dev[k], cpu[k].size() * sizeof(float), cudaMemcpyDeviceToHost);
      cudaFree(dev[k]);
    }
  }
}

void expect(bool ok, const std::string& what) {
  ++cases;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

}  // namespace

int main() {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("no CUDA device\n");
    return 3;
  }
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
  }
  std::printf("%d cases, %d failed\n", cases, failures);
  return failures ? 1 : 0;
}
