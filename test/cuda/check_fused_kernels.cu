// Standalone GPU check of the CUDA versions of the norm / modulate / rope / embed / layout / conv /
// elementwise kernels (templates/cuda/*.cu.hbs rendered into generated/kernels/cuda/) against the CPU kernels
// of the same name (generated/kernels/cpu/*.cpp, themselves checked against float64 references by
// test/kernels/*.test.ts), on random data with odd sizes. Build and run on a machine with a GPU:
//   F="norm modulate rope embed layout conv elementwise"
//   nvcc -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
//     -I runtime/native/include -Xcompiler -fopenmp-simd test/cuda/check_fused_kernels.cu \
//     $(for f in $F; do echo generated/kernels/cuda/$f.cu generated/kernels/cpu/$f.cpp; done) \
//     runtime/native/src/thread_pool.cc -o /tmp/df-cuda-fused && /tmp/df-cuda-fused
// Exit code 0 = every case within tolerance, 3 = no CUDA device.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check_common.cuh"

extern "C" const ditforge::KernelEntry ditforge_cpu_norm[], ditforge_cpu_modulate[], ditforge_cpu_rope[], ditforge_cpu_embed[],
    ditforge_cpu_layout[], ditforge_cpu_conv[], ditforge_cpu_elementwise[];
extern "C" const ditforge::CudaKernelEntry ditforge_cuda_table_norm[], ditforge_cuda_table_modulate[], ditforge_cuda_table_rope[],
    ditforge_cuda_table_embed[], ditforge_cuda_table_layout[], ditforge_cuda_table_conv[], ditforge_cuda_table_elementwise[];

namespace dfcheck {
const std::vector<const ditforge::KernelEntry*> kCpuTables = {ditforge_cpu_norm,   ditforge_cpu_modulate, ditforge_cpu_rope,
                                                              ditforge_cpu_embed,  ditforge_cpu_layout,   ditforge_cpu_conv,
                                                              ditforge_cpu_elementwise};
const std::vector<const ditforge::CudaKernelEntry*> kCudaTables = {
    ditforge_cuda_table_norm,   ditforge_cuda_table_modulate, ditforge_cuda_table_rope,       ditforge_cuda_table_embed,
    ditforge_cuda_table_layout, ditforge_cuda_table_conv,     ditforge_cuda_table_elementwise};
}  // namespace dfcheck

namespace {

using dfcheck::cases;
using dfcheck::failures;

std::vector<float> rnd(size_t n, float lo = -2.0f, float hi = 2.0f) { return dfcheck::uniform(n, lo, hi); }
std::vector<float> fill(size_t n, float v) { return std::vector<float>(n, v); }

// tensors: host data per slot (empty = null); outs: slots compared after the run
void check(const std::string& name, std::vector<std::vector<float>> tensors, std::vector<int> outs, std::vector<int64_t> ints,
           std::vector<float> floats, float atol = 1e-4f, float rtol = 1e-4f) {
  ++cases;
  auto cf = dfcheck::cpu_fn(name);
  auto gf = dfcheck::cuda_fn(name);
  if (!cf || !gf) {
    std::printf("FAIL %s: kernel missing (cpu %p, cuda %p)\n", name.c_str(), (void*)cf, (void*)gf);
    ++failures;
    return;
  }
  ditforge::KernelArgs ca{}, ga{};
  std::vector<std::vector<float>> host = tensors;
  std::vector<float*> devp(tensors.size(), nullptr);
  for (size_t s = 0; s < tensors.size(); ++s) {
    if (tensors[s].empty()) continue;
    ca.t[s] = host[s].data();
    cudaMalloc(&devp[s], tensors[s].size() * sizeof(float));
    cudaMemcpy(devp[s], tensors[s].data(), tensors[s].size() * sizeof(float), cudaMemcpyHostToDevice);
    ga.t[s] = devp[s];
  }
  for (size_t k = 0; k < ints.size(); ++k) ca.i[k] = ga.i[k] = ints[k];
  for (size_t k = 0; k < floats.size(); ++k) ca.f[k] = ga.f[k] = floats[k];
  ditforge::ThreadPool pool(1);
  ditforge::KernelCtx ctx{&pool};
  cf(ca, ctx);
  int err = gf(&ga, nullptr);
  cudaError_t sync = cudaDeviceSynchronize();
  bool ok = err == 0 && sync == cudaSuccess;
  double worst = 0;
  size_t worst_at = 0;
  int worst_slot = -1;
  for (int s : outs) {
    std::vector<float> g(tensors[s].size());
    cudaMemcpy(g.data(), devp[s], g.size() * sizeof(float), cudaMemcpyDeviceToHost);
    for (size_t k = 0; k < g.size(); ++k) {
      const double d = std::fabs((double)g[k] - host[s][k]);
      const double bound = atol + rtol * std::fabs((double)host[s][k]);
      if (!(d <= bound)) ok = false;
      if (!(d <= worst)) { worst = d; worst_at = k; worst_slot = s; }
    }
  }
  for (auto p : devp) if (p) cudaFree(p);
  std::printf("%s %-20s max |gpu - cpu| = %.3g", ok ? "ok  " : "FAIL", name.c_str(), worst);
  if (!ok) std::printf(" (slot %d element %zu, launch %d, sync %s)", worst_slot, worst_at, err, cudaGetErrorString(sync));
  std::printf("\n");
  if (!ok) ++failures;
}

}  // namespace

int main() {
  if (dfcheck::no_cuda_device()) return 3;
  dfcheck::rng.seed(7);
  const int64_t M = 13, C = 37, B = 2, S = 7;
  check("layer_norm", {rnd(M * C), rnd(C), rnd(C), fill(M * C, 0)}, {3}, {M, C}, {1e-6f});
  check("layer_norm", {rnd(5 * 1029), {}, {}, fill(5 * 1029, 0)}, {3}, {5, 1029}, {1e-6f});
  check("ln_modulate", {rnd(B * S * C), rnd(B * 6 * C), rnd(B * 6 * C), fill(B * S * C, 0)}, {3}, {B * S, C, S, 6 * C, 6 * C}, {1e-6f});
  check("rms_norm", {rnd(M * 129), rnd(129), fill(M * 129, 0)}, {2}, {M, 129}, {1e-6f});
  check("group_norm", {rnd(2 * 12 * 35), rnd(12), rnd(12), fill(2 * 12 * 35, 0)}, {3}, {2, 12, 35, 4, 1}, {1e-6f});
  check("group_norm", {rnd(1 * 9 * 13), {}, {}, fill(9 * 13, 0)}, {3}, {1, 9, 13, 3, 0}, {1e-6f});
  check("gate_residual", {rnd(B * S * C), rnd(B * 6 * C), rnd(B * S * C), fill(B * S * C, 0)}, {3}, {B * S, C, S, 6 * C}, {});
  {
    const int64_t H = 3, D = 10;
    check("rope", {rnd(B * S * H * D), rnd(S * D, -1, 1), rnd(S * D, -1, 1), fill(B * S * H * D, 0)}, {3}, {B, S, H, D, H * D, H * D}, {});
    const int64_t xs = 3 * H * D + 1;
    check("qk_norm_rope", {rnd((B * S - 1) * xs + H * D), rnd(D), rnd(S * D, -1, 1), rnd(S * D, -1, 1), fill(B * S * H * D, 0)}, {4},
          {B, S, H, D, xs, H * D}, {1e-6f});
    check("qk_norm_rope", {rnd(B * S * H * D), rnd(D), {}, {}, fill(B * S * H * D, 0)}, {4}, {B, S, H, D, H * D, H * D}, {1e-6f});
  }
  {
    std::vector<float> ids;
    for (int s = 0; s < 13; ++s) ids.insert(ids.end(), {0.0f, (float)(s / 4), (float)(s % 4)});
    check("rope_table", {ids, fill(13 * 128, 0), fill(13 * 128, 0)}, {1, 2}, {13, 3, 16, 56, 56, 0}, {10000.0f}, 1e-6f, 0);
  }
  check("timestep_embedding", {rnd(3, 0, 1000), fill(3 * 129, 0)}, {1}, {3, 129, 1}, {1.0f, 1.0f, 10000.0f}, 5e-4f, 0);
  check("timestep_embedding", {rnd(3, 0, 1), fill(3 * 64, 0)}, {1}, {3, 64, 0}, {1000.0f, 0.0f, 10000.0f}, 5e-4f, 0);
  {
    std::vector<float> ids = {0, 5, 28, 29, -1, 3, 3, 17, 2, 9, 11, 12, 28};
    check("embedding", {ids, rnd(29 * C), fill(13 * C, 0)}, {2}, {13, C, 29}, {}, 0, 0);
    std::vector<float> mask(3 * 13, 0);
    for (int s = 0; s < 13; ++s) { mask[s] = s % 3 == 0; mask[13 + s] = 1; }
    check("masked_mean", {rnd(3 * 13 * C), mask, fill(3 * C, 0)}, {2}, {3, 13, C}, {}, 1e-5f, 1e-5f);
  }
  check("copy3d", {rnd(3 * 99), rnd(3 * 40)}, {1}, {3, 4, 7, 99, 11, 40, 9}, {}, 0, 0);
  check("transpose", {rnd(2 * 37 * 13), fill(2 * 37 * 13, 0)}, {1}, {2, 37, 13}, {}, 0, 0);
  check("upsample_nearest2x", {rnd(6 * 35), fill(6 * 140, 0)}, {1}, {6, 5, 7}, {}, 0, 0);
  check("conv2d", {rnd(2 * 5 * 13 * 11), rnd(7 * 5 * 9), rnd(7), fill(2 * 7 * 13 * 11, 0)}, {3}, {2, 5, 13, 11, 7, 3, 3, 1, 1, 1}, {});
  check("conv2d", {rnd(3 * 15 * 9), rnd(6 * 3 * 9), {}, fill(6 * 8 * 5, 0)}, {3}, {1, 3, 15, 9, 6, 3, 3, 2, 1, 1}, {});
  check("conv2d", {rnd(2 * 4 * 10 * 8), rnd(5 * 4 * 9), rnd(5), fill(2 * 5 * 5 * 4, 0)}, {3}, {2, 4, 10, 8, 5, 3, 3, 2, 0, 1}, {});
  const int64_t E = 100003;
  check("add", {rnd(E), rnd(E), fill(E, 0)}, {2}, {E}, {}, 1e-6f, 1e-6f);
  check("mul", {rnd(E), rnd(E), fill(E, 0)}, {2}, {E}, {}, 1e-6f, 1e-6f);
  check("silu", {rnd(E, -10, 10), fill(E, 0)}, {1}, {E}, {}, 1e-5f, 1e-5f);
  check("gelu_tanh", {rnd(E, -10, 10), fill(E, 0)}, {1}, {E}, {}, 1e-5f, 1e-5f);
  check("ew_selftest", {rnd(E), rnd(E), rnd(E), fill(E, 0)}, {3}, {E}, {0.75f, -1.25f, 0, 0, 0, 0, 0, 0}, 1e-5f, 1e-5f);
  return dfcheck::summary();
}
