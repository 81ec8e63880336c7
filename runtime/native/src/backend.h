// One backend interface for the plan executor (modelled on ggml's ggml_backend_i): buffers, host <-> buffer
// copies, kernel lookup and launch, synchronisation. The executor allocates its arena, binds weights, reads
// and writes tensors and launches every op only through it, so the same plan loop runs on the CPU
// (backends/cpu) and on a CUDA device (backends/cuda); an Ascend backend plugs in the same way.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ditforge/kernel_abi.h"

namespace ditforge {

class ThreadPool;

/** The backend cannot be created or failed at run time (the message says which device and why). */
class BackendError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Backend {
 public:
  virtual ~Backend() = default;
  /** "cpu", "cuda:0", ... */
  virtual std::string name() const = 0;
  /** buffers are host memory: tensors may be handed out as zero-copy views, weights used in place */
  virtual bool host_addressable() const = 0;
  /** a zeroed buffer of `floats` floats (at least one); throws BackendError */
  virtual float* alloc(int64_t floats) = 0;
  virtual void free(float* p) noexcept = 0;
  /** host -> buffer, buffer -> host (`n` floats); complete when they return */
  virtual void upload(float* dst, const float* src, int64_t n) = 0;
  virtual void download(float* dst, const float* src, int64_t n) = 0;
  /** the backend's kernel of that name, or nullptr when it does not implement it */
  virtual const void* find(const std::string& kernel) const = 0;
  /** launches one op (queued on a device backend); errors surface in synchronize() */
  virtual void launch(const void* kernel, const KernelArgs& args) noexcept = 0;
  /** waits for every launched op; throws BackendError naming the first failed launch */
  virtual void synchronize() = 0;
  /** worker threads (the CPU backend's pool; 1 elsewhere) */
  virtual int threads() const = 0;
  /** the CPU backend's pool (runKernel on the executor's threads), nullptr elsewhere */
  virtual ThreadPool* pool() noexcept { return nullptr; }
  bool supports(const std::string& kernel) const { return find(kernel) != nullptr; }
};

/** "cpu" (threads) or "cuda" / "cuda:N"; throws BackendError with the reason a device is unavailable */
std::unique_ptr<Backend> make_backend(const std::string& device, int threads);

std::unique_ptr<Backend> make_cpu_backend(int threads);
std::unique_ptr<Backend> make_cuda_backend(int device);

/** the kernels the CUDA backend of this build implements (no device needed; empty without CUDA) */
std::vector<std::string> cuda_kernel_names();

}  // namespace ditforge
