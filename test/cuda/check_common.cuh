// Harness shared by the standalone CUDA kernel checks in this folder: kernel lookup in the CPU / CUDA tables,
// seeded random fills, CPU-vs-GPU runs on the same host inputs, and the tally every check reports the same way
// ("N cases, M failed"; exit 0, 1 on a failure, 3 without a CUDA device).
// A check that looks kernels up by name defines dfcheck::kCpuTables / kCudaTables (the tables it links).
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ditforge/cuda_common.cuh"
#include "ditforge/thread_pool.h"

namespace dfcheck {

extern const std::vector<const ditforge::KernelEntry*> kCpuTables;
extern const std::vector<const ditforge::CudaKernelEntry*> kCudaTables;

template <class Entry>
inline auto find_kernel(const std::vector<const Entry*>& tables, const std::string& name) -> decltype(Entry::fn) {
  for (auto* t : tables)
    for (; t->name; ++t)
      if (name == t->name) return t->fn;
  return nullptr;
}
inline ditforge::KernelFn cpu_fn(const std::string& name) { return find_kernel(kCpuTables, name); }
inline ditforge::CudaKernelFn cuda_fn(const std::string& name) { return find_kernel(kCudaTables, name); }

// Each check seeds it first thing in main(), so its random data stay reproducible run to run.
inline std::mt19937 rng;
inline std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
inline std::vector<float> normal(size_t n, float mean, float std) {
  std::normal_distribution<float> d(mean, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline int cases = 0, failures = 0;

inline void expect(bool ok, const std::string& what) {
  ++cases;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// true (after saying so) when there is no GPU to check on; main() then returns 3
inline bool no_cuda_device() {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("no CUDA device\n");
    return true;
  }
  return false;
}

// the last line of every check; its return value is main()'s
inline int summary() {
  std::printf("%d cases, %d failed\n", cases, failures);
  return failures ? 1 : 0;
}

// runs `name` on CPU and GPU with the same host inputs; empty slots are null. `alias[k] = j` makes slot k the
// same buffer as slot j on both sides (in-place kernels). gpu receives every slot's device contents after the run.
inline void run_both(const std::string& name, std::vector<std::vector<float>>& cpu, std::vector<std::vector<float>>& gpu,
                     const std::vector<int64_t>& ints, const std::vector<float>& floats, const std::vector<int>& alias = {}) {
  ditforge::ThreadPool pool(2);
  ditforge::KernelCtx ctx{&pool};
  ditforge::KernelArgs a{};
  for (size_t k = 0; k < ints.size(); ++k) a.i[k] = ints[k];
  for (size_t k = 0; k < floats.size(); ++k) a.f[k] = floats[k];
  ditforge::KernelArgs g = a;
  std::vector<float*> dev(cpu.size(), nullptr);
  for (size_t k = 0; k < cpu.size(); ++k) {
    const int src = k < alias.size() && alias[k] >= 0 ? alias[k] : -1;
    a.t[k] = src >= 0 ? a.t[src] : cpu[k].empty() ? nullptr : cpu[k].data();
    if (src >= 0) {
      g.t[k] = dev[src];
      continue;
    }
    if (!cpu[k].empty()) {
      cudaMalloc(&dev[k], cpu[k].size() * sizeof(float));
      cudaMemcpy(dev[k], cpu[k].data(), cpu[k].size() * sizeof(float), cudaMemcpyHostToDevice);
    }
    g.t[k] = dev[k];
  }
  gpu = cpu;
  cpu_fn(name)(a, ctx);
  int rc = cuda_fn(name)(&g, nullptr);
  cudaDeviceSynchronize();
  if (rc) std::printf("%s: launch error %d\n", name.c_str(), rc);
  for (size_t k = 0; k < cpu.size(); ++k) {
    if (dev[k]) {
      cudaMemcpy(gpu[k].data(), dev[k], cpu[k].size() * sizeof(float), cudaMemcpyDeviceToHost);
      cudaFree(dev[k]);
    }
  }
}

}  // namespace dfcheck
