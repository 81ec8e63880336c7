// A fixed pool of worker threads; parallel_for is the only way kernels use threads.
#pragma once
#include <cstdint>
#include <functional>
#include "ditforge/kernel_abi.h"

namespace ditforge {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int size() const { return threads_; }
  // Splits [0, n) into at most size() contiguous chunks of at least `grain` items and runs
  // fn(begin, end) on them, the calling thread taking one; returns when all are done.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct Impl;
  Impl* impl_;
  int threads_;
};

inline void parallel_for(KernelCtx& ctx, int64_t n, int64_t grain,
                         const std::function<void(int64_t, int64_t)>& fn) {
  ctx.pool->parallel_for(n, grain, fn);
}
inline int num_threads(const KernelCtx& ctx) { return ctx.pool->size(); }

}  // namespace ditforge
