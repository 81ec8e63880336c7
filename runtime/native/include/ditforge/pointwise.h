// The loop of the pointwise CPU kernels (elementwise, the cache residuals): y[i] = op(t[0][i], .., t[N-1][i])
// for i < i[0], y = t[N] (may alias an input), split over the pool in chunks of kPointwiseGrain.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

#include "ditforge/kernel_abi.h"
#include "ditforge/thread_pool.h"

namespace ditforge {

constexpr int64_t kPointwiseGrain = 16384;

template <class Op, size_t... K>
static void map_inputs(const KernelArgs& args, KernelCtx& ctx, const Op& op, std::index_sequence<K...>) {
  const float* const in[] = {args.t[K]...};
  float* y = args.t[sizeof...(K)];
  parallel_for(ctx, args.i[0], kPointwiseGrain, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) y[i] = static_cast<float>(op(in[K][i]...));
  });
}

template <size_t N, class Op>
static void map_inputs(const KernelArgs& args, KernelCtx& ctx, const Op& op) {
  map_inputs(args, ctx, op, std::make_index_sequence<N>());
}

}  // namespace ditforge
