// Shared helpers of the generated CUDA kernels (templates/cuda/*.cu.hbs). Same names and argument order
// as the CPU kernels (docs/architecture.md §2); every pointer is a device pointer.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

#include "ditforge/kernel_abi.h"

namespace ditforge {

// Host-side launcher: launches on `stream` (a cudaStream_t, may be null), returns a cudaError_t.
using CudaKernelFn = int (*)(const KernelArgs* args, void* stream);
struct CudaKernelEntry {
  const char* name;
  CudaKernelFn fn;
};

namespace cuda {

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) part[wid] = v;
  __syncthreads();
  if (wid == 0) {
    const int nw = (blockDim.x + 31) >> 5;
    float s = lane < nw ? part[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float gelu_tanh(float u) {
  return 0.5f * u * (1.0f + tanhf(0.7978845608028654f * (u + 0.044715f * u * u * u)));
}

inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > 65535LL * 32) b = 65535LL * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

}  // namespace cuda
}  // namespace ditforge

#define DF_STREAM(s) (static_cast<cudaStream_t>(s))
#define DF_LAUNCH_RESULT() (static_cast<int>(cudaGetLastError()))
