// The CPU backend: host buffers (64-byte aligned), the CPU kernel tables (registry.cc), the executor's thread
// pool. Launches run the kernel inline on the calling thread, which fans out over the pool.
#include <cstdlib>
#include <cstring>

#include "../../backend.h"
#include "../../registry_index.h"
#include "ditforge/thread_pool.h"

namespace ditforge {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : pool_(std::make_unique<ThreadPool>(threads)) {}
  std::string name() const override { return "cpu"; }
  bool host_addressable() const override { return true; }
  float* alloc(int64_t floats) override {
    size_t bytes = static_cast<size_t>(floats > 0 ? floats : 1) * sizeof(float);
    size_t rounded = ((bytes + 63) / 64) * 64;
    auto* p = static_cast<float*>(std::aligned_alloc(64, rounded));
    if (!p) throw BackendError("cpu: cannot allocate " + std::to_string(bytes) + " bytes");
    std::memset(p, 0, rounded);
    return p;
  }
  void free(float* p) noexcept override { std::free(p); }
  void upload(float* dst, const float* src, int64_t n) override { std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); }
  void download(float* dst, const float* src, int64_t n) override { std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); }
  const void* find(const std::string& kernel) const override { return reinterpret_cast<const void*>(registry().find(kernel)); }
  void launch(const void* kernel, const KernelArgs& args) noexcept override {
    KernelCtx ctx{pool_.get()};
    reinterpret_cast<KernelFn>(const_cast<void*>(kernel))(args, ctx);
  }
  void synchronize() override {}
  int threads() const override { return pool_->size(); }
  ThreadPool* pool() noexcept override { return pool_.get(); }

 private:
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  if (device == "cpu") return make_cpu_backend(threads);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (device.size() > 5) {
      const std::string n = device.substr(5);
      if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos) throw BackendError("device '" + device + "': expected cuda or cuda:N");
      index = std::stoi(n);
    }
    return make_cuda_backend(index);
  }
  throw BackendError("unknown device '" + device + "' (valid: cpu, cuda, cuda:N)");
}

}  // namespace ditforge
