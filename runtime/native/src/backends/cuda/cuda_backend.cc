// The CUDA backend: device buffers (cudaMalloc), one stream, the CUDA kernel tables of generated/kernels/cuda
// (registry.cu), host <-> device copies with cudaMemcpyAsync on the stream. The runtime is linked statically
// and finds the driver when a CUDA call is first made, so a build with CUDA loads and runs CPU plans on a
// machine with no GPU and no driver; asking for this backend there is a BackendError saying what is missing.
#include <string>
#include <unordered_map>

#include "../../backend.h"

#ifdef HAVE_CUDA
#include <cuda_runtime.h>

namespace ditforge {
using CudaKernelFn = int (*)(const KernelArgs* args, void* stream);
struct CudaKernelEntry {
  const char* name;
  CudaKernelFn fn;
};
}  // namespace ditforge

extern "C" const ditforge::CudaKernelEntry* const ditforge_cuda_tables[];

namespace ditforge {
namespace {

std::string cuda_error(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) throw BackendError("--device cuda: no usable CUDA driver or device (" + cuda_error(e) + ")");
    if (device < 0 || device >= count) throw BackendError("--device cuda:" + std::to_string(device) + ": this machine has " + std::to_string(count) + " CUDA device(s)");
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    for (int f = 0; ditforge_cuda_tables[f]; ++f)
      for (const CudaKernelEntry* k = ditforge_cuda_tables[f]; k->name; ++k) kernels_[k->name] = k->fn;
  }
  ~CudaBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  bool host_addressable() const override { return false; }
  float* alloc(int64_t floats) override {
    size_t bytes = static_cast<size_t>(floats > 0 ? floats : 1) * sizeof(float);
    void* p = nullptr;
    check(cudaMalloc(&p, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
    check(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemset");
    return static_cast<float*>(p);
  }
  void free(float* p) noexcept override { cudaFree(p); }
  void upload(float* dst, const float* src, int64_t n) override {
    check(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice, stream_), "cudaMemcpy host to device");
    synchronize();
  }
  void download(float* dst, const float* src, int64_t n) override {
    check(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost, stream_), "cudaMemcpy device to host");
    synchronize();
  }
  const void* find(const std::string& kernel) const override {
    auto it = kernels_.find(kernel);
    return it == kernels_.end() ? nullptr : reinterpret_cast<const void*>(it->second);
  }
  void launch(const void* kernel, const KernelArgs& args) noexcept override {
    if (failed_ != cudaSuccess) return;
    int e = reinterpret_cast<CudaKernelFn>(const_cast<void*>(kernel))(&args, stream_);
    if (e != 0) failed_ = static_cast<cudaError_t>(e);
  }
  void synchronize() override {
    cudaError_t e = failed_ != cudaSuccess ? failed_ : cudaStreamSynchronize(stream_);
    failed_ = cudaSuccess;
    if (e != cudaSuccess) throw BackendError(name() + ": " + cuda_error(e));
  }
  int threads() const override { return 1; }

 private:
  void check(cudaError_t e, const std::string& what) {
    if (e != cudaSuccess) throw BackendError("cuda:" + std::to_string(device_) + ": " + what + " failed (" + cuda_error(e) + ")");
  }
  int device_;
  cudaStream_t stream_ = nullptr;
  cudaError_t failed_ = cudaSuccess;
  std::unordered_map<std::string, CudaKernelFn> kernels_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

std::vector<std::string> cuda_kernel_names() {
  std::vector<std::string> out;
  for (int f = 0; ditforge_cuda_tables[f]; ++f)
    for (const CudaKernelEntry* k = ditforge_cuda_tables[f]; k->name; ++k) out.push_back(k->name);
  return out;
}

}  // namespace ditforge

#else

namespace ditforge {
std::unique_ptr<Backend> make_cuda_backend(int) {
  throw BackendError("--device cuda: this build has no CUDA backend (nvcc was not found when the addon was built; install the CUDA toolkit and run npm run build:native)");
}

std::vector<std::string> cuda_kernel_names() { return {}; }
}  // namespace ditforge

#endif
