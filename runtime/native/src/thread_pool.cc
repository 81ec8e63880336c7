// Persistent worker pool behind ditforge/thread_pool.h.
//
// A job is published as one atomic word {generation, chunk count, next chunk}. The caller and the workers
// claim chunks from it with a CAS, so the caller never waits for a worker that has not started yet (it just
// runs the remaining chunks itself; this matters on oversubscribed machines), and it only waits for chunks
// a worker has actually claimed. Workers spin for a short while on the word, then sleep on a condition
// variable. Nested calls (from inside a chunk) and calls while another thread owns the pool run inline.
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
thread_local int tl_in_pool_depth = 0;  // > 0 while this thread executes a chunk
constexpr int kSpinIters = 4000;         // ~100 us of pause before a worker sleeps

// state word: [63..40] generation (24 bits) | [39..20] chunks | [19..0] next chunk
constexpr uint64_t kMask20 = (1u << 20) - 1;
inline uint64_t gen_of(uint64_t s) { return s >> 40; }
inline uint64_t chunks_of(uint64_t s) { return (s >> 20) & kMask20; }
inline uint64_t next_of(uint64_t s) { return s & kMask20; }
inline uint64_t pack(uint64_t g, uint64_t c, uint64_t nx) { return ((g & 0xFFFFFF) << 40) | (c << 20) | nx; }
}  // namespace

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex dispatch;  // one parallel_for at a time
  std::mutex m;
  std::condition_variable cv_work;
  std::condition_variable cv_done;
  std::atomic<uint64_t> state{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> caller_sleeping{false};
  // current job; valid while any of its chunks is unfinished
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;

  // claims and runs chunks of generation g until none is left
  void drain(uint64_t g) {
    uint64_t s = state.load(std::memory_order_acquire);
    for (;;) {
      if (gen_of(s) != (g & 0xFFFFFF)) return;
      const uint64_t c = chunks_of(s), k = next_of(s);
      if (k >= c) return;
      if (!state.compare_exchange_weak(s, pack(g, c, k + 1), std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      const int64_t q = n / static_cast<int64_t>(c), r = n % static_cast<int64_t>(c);
      const int64_t kk = static_cast<int64_t>(k);
      const int64_t b = kk * q + std::min(kk, r), e = b + q + (kk < r ? 1 : 0);
      ++tl_in_pool_depth;
      if (b < e) (*fn)(b, e);
      --tl_in_pool_depth;
      // seq_cst on done/caller_sleeping: a store-load handshake with the caller's sleep path
      if (done.fetch_add(1, std::memory_order_seq_cst) + 1 == static_cast<int64_t>(c) &&
          caller_sleeping.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lk(m);
        cv_done.notify_all();
      }
      s = state.load(std::memory_order_acquire);
    }
  }

  void worker() {
    uint64_t seen = gen_of(state.load(std::memory_order_acquire));
    for (;;) {
      int spins = 0;
      uint64_t g;
      while ((g = gen_of(state.load(std::memory_order_acquire))) == seen) {
        if (stop.load(std::memory_order_relaxed)) return;
        if (++spins < kSpinIters) {
          DF_PAUSE();
        } else {
          std::unique_lock<std::mutex> lk(m);
          cv_work.wait(lk, [&] { return gen_of(state.load(std::memory_order_acquire)) != seen || stop.load(); });
          spins = 0;
        }
      }
      if (stop.load()) return;
      seen = g;
      drain(g);
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl_(new Impl), threads_(std::max(1, std::min(threads, 1 << 19))) {
  for (int i = 1; i < threads_; ++i) impl_->workers.emplace_back([this] { impl_->worker(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->m);
    impl_->stop.store(true);
  }
  impl_->cv_work.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = std::min<int64_t>(threads_, (n + grain - 1) / grain);
  if (chunks <= 1 || tl_in_pool_depth > 0) {
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
  I.done.store(0, std::memory_order_relaxed);
  const uint64_t g = (gen_of(I.state.load(std::memory_order_relaxed)) + 1) & 0xFFFFFF;
  {
    std::lock_guard<std::mutex> lk(I.m);  // pairs with the workers' predicate check
    I.state.store(pack(g, static_cast<uint64_t>(chunks), 0), std::memory_order_release);
  }
  I.cv_work.notify_all();
  I.drain(g);
  int spins = 0;
  while (I.done.load(std::memory_order_acquire) != chunks) {
    if (++spins < kSpinIters) {
      DF_PAUSE();
    } else {
      std::unique_lock<std::mutex> lk(I.m);
      I.caller_sleeping.store(true, std::memory_order_seq_cst);
      I.cv_done.wait(lk, [&] { return I.done.load(std::memory_order_seq_cst) == chunks; });
      I.caller_sleeping.store(false, std::memory_order_relaxed);
    }
  }
  I.fn = nullptr;
}

}  // namespace ditforge
