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

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// butterfly reduction over the warp; every lane gets the result
template <class Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp{}); }

// reduction over the block (blockDim.x a multiple of 32, at most 1024): each warp, then the warp results
// (`identity` fills the missing warps); every thread gets the result
template <class Op>
__device__ __forceinline__ float block_reduce(float v, float identity, Op op) {
  __shared__ float part[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) part[wid] = v;
  __syncthreads();
  if (wid == 0) {
    const int nw = (blockDim.x + 31) >> 5;
    float s = lane < nw ? part[lane] : identity;
    s = warp_reduce(s, op);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ float block_sum(float v) { return block_reduce(v, 0.0f, SumOp{}); }

// float64 sum over the block in a fixed tree order (the same bits on every launch); `sh` is a
// blockDim.x-sized shared buffer (blockDim.x a power of two). Every thread gets the result, and `sh` may be
// reused right after the call.
__device__ __forceinline__ double block_sum_f64(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (unsigned h = blockDim.x / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  const double total = sh[0];
  __syncthreads();
  return total;
}

// mean and 1/sqrt(biased var + eps) of x[0..n) over the block, two passes (numerically stable); the CUDA
// twin of the CPU kernels' row_stats
__device__ __forceinline__ void block_mean_rstd(const float* x, int64_t n, float eps, float& mean, float& rstd) {
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) s += x[c];
  const float mu = block_sum(s) / static_cast<float>(n);
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const float d = x[c] - mu;
    v += d * d;
  }
  mean = mu;
  rstd = rsqrtf(block_sum(v) / static_cast<float>(n) + eps);
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
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
