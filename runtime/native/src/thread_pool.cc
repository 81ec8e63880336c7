// Persistent worker pool behind ditforge/thread_pool.h.
// Workers spin for a short while on a generation counter, then sleep on a condition variable.
// The calling thread always takes chunk 0. A pool in use by another caller (or a nested call from
// inside a chunk) runs the work inline, so parallel_for never deadlocks.
#include "ditforge/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DF_PAUSE() _mm_pause()
#else
#define DF_PAUSE() std::this_thread::yield()
#endif

namespace ditforge {

namespace {
thread_local int tl_in_pool_depth = 0;  // >0 while this thread executes a chunk
constexpr int kSpinIters = 20000;
}  // namespace

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex dispatch;  // one parallel_for at a time
  std::mutex m;
  std::condition_variable cv_work;
  std::condition_variable cv_done;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> remaining{0};
  std::atomic<bool> stop{false};
  std::atomic<int> sleepers_done{0};
  // current job
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int chunks = 0;

  void run_chunk(int c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    ++tl_in_pool_depth;
    if (b < e) (*fn)(b, e);
    --tl_in_pool_depth;
  }

  void worker(int idx) {  // idx in [1, threads)
    uint64_t seen = 0;
    for (;;) {
      uint64_t g;
      int spins = 0;
      while ((g = generation.load(std::memory_order_acquire)) == seen && !stop.load(std::memory_order_relaxed)) {
        if (++spins < kSpinIters) {
          DF_PAUSE();
        } else {
          std::unique_lock<std::mutex> lk(m);
          cv_work.wait(lk, [&] { return generation.load(std::memory_order_acquire) != seen || stop.load(); });
          spins = 0;
        }
      }
      if (stop.load()) return;
      seen = g;
      // Every worker checks in for every job (even without a chunk), so the job fields are never
      // rewritten while a worker may still read them.
      if (idx < chunks) run_chunk(idx);
      if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m);
        cv_done.notify_all();
      }
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl_(new Impl), threads_(std::max(1, threads)) {
  for (int i = 1; i < threads_; ++i) impl_->workers.emplace_back([this, i] { impl_->worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->m);
    impl_->stop.store(true);
    impl_->cv_work.notify_all();
  }
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t max_chunks = std::min<int64_t>(threads_, (n + grain - 1) / grain);
  if (max_chunks <= 1 || tl_in_pool_depth > 0) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> busy(impl_->dispatch, std::try_to_lock);
  if (!busy.owns_lock()) {  // another thread is using this pool: run inline rather than wait
    fn(0, n);
    return;
  }
  Impl& I = *impl_;
  I.fn = &fn;
  I.n = n;
  I.chunks = static_cast<int>(max_chunks);
  I.remaining.store(threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(I.m);
    I.generation.fetch_add(1, std::memory_order_acq_rel);
  }
  I.cv_work.notify_all();
  I.run_chunk(0);
  int spins = 0;
  while (I.remaining.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpinIters) {
      DF_PAUSE();
    } else {
      std::unique_lock<std::mutex> lk(I.m);
      I.cv_done.wait(lk, [&] { return I.remaining.load(std::memory_order_acquire) == 0; });
    }
  }
  I.fn = nullptr;
}

}  // namespace ditforge
