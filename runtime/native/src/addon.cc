// node-addon-api glue: docs/architecture.md §4.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <napi.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ditforge/thread_pool.h"
#include <unordered_map>

#include "backend.h"
#include "executor.h"
#include "kernel_sigs.h"
#include "registry_index.h"

#ifdef HAVE_OPENBLAS
extern "C" {
#include <cblas.h>
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
char* openblas_get_corename(void);
}
#endif

#ifdef HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace df = ditforge;

namespace {

int default_threads() {
  if (const char* e = std::getenv("DITFORGE_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

df::ThreadPool& global_pool() {
  static df::ThreadPool pool(default_threads());
  return pool;
}

[[noreturn]] void throw_js(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }
[[noreturn]] void throw_type(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

Napi::Float32Array f32_arg(const Napi::CallbackInfo& info, size_t k, const char* what) {
  if (info.Length() <= k || !info[k].IsTypedArray() || info[k].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw_type(info.Env(), std::string(what) + " must be a Float32Array");
  return info[k].As<Napi::Float32Array>();
}

std::string str_arg(const Napi::CallbackInfo& info, size_t k, const char* what) {
  if (info.Length() <= k || !info[k].IsString()) throw_type(info.Env(), std::string(what) + " must be a string");
  return info[k].As<Napi::String>().Utf8Value();
}

// ---------------------------------------------------------------------------------------------
Napi::Value Kernels(const Napi::CallbackInfo& info) {
  const auto& reg = df::registry();
  auto arr = Napi::Array::New(info.Env(), reg.names.size());
  for (size_t k = 0; k < reg.names.size(); ++k) arr.Set(static_cast<uint32_t>(k), reg.names[k]);
  return arr;
}

// runKernel(name, t[], i[], f[]) on `pool` (the global pool, or an executor's own: Executor.runKernel)
Napi::Value run_kernel_on(const Napi::CallbackInfo& info, df::ThreadPool& pool) {
  Napi::Env env = info.Env();
  std::string name = str_arg(info, 0, "runKernel: name");
  const auto& reg = df::registry();
  df::KernelFn fn = reg.find(name);
  if (!fn) throw_js(env, "runKernel: unknown kernel '" + name + "'");
  if (info.Length() < 4 || !info[1].IsArray() || !info[2].IsArray() || !info[3].IsArray())
    throw_type(env, "runKernel(" + name + "): expected (name, tensors[], ints[], floats[])");
  auto ta = info[1].As<Napi::Array>();
  auto ia = info[2].As<Napi::Array>();
  auto fa = info[3].As<Napi::Array>();
  if (ta.Length() > 8 || ia.Length() > 16 || fa.Length() > 8)
    throw_js(env, "runKernel(" + name + "): at most 8 tensors, 16 ints and 8 floats");
  df::KernelArgs args{};
  df::TensorArg targs[8];
  for (uint32_t k = 0; k < ta.Length(); ++k) {
    Napi::Value v = ta.Get(k);
    if (v.IsNull() || v.IsUndefined()) continue;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_type(env, "runKernel(" + name + "): t[" + std::to_string(k) + "] must be a Float32Array or null");
    auto a = v.As<Napi::Float32Array>();
    args.t[k] = a.Data();
    targs[k].present = true;
    targs[k].numel = static_cast<int64_t>(a.ElementLength());
  }
  for (uint32_t k = 0; k < ia.Length(); ++k) {
    Napi::Value v = ia.Get(k);
    if (!v.IsNumber()) throw_type(env, "runKernel(" + name + "): i[" + std::to_string(k) + "] must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (d != static_cast<double>(static_cast<int64_t>(d)))
      throw_type(env, "runKernel(" + name + "): i[" + std::to_string(k) + "] must be an integer");
    args.i[k] = static_cast<int64_t>(d);
  }
  for (uint32_t k = 0; k < fa.Length(); ++k) {
    Napi::Value v = fa.Get(k);
    if (!v.IsNumber()) throw_type(env, "runKernel(" + name + "): f[" + std::to_string(k) + "] must be a number");
    args.f[k] = v.As<Napi::Number>().FloatValue();
  }
  std::string bad = df::validate_kernel_args(name, reg.arity(name), static_cast<int>(ta.Length()), targs,
                                             static_cast<int>(ia.Length()), args.i, static_cast<int>(fa.Length()));
  if (!bad.empty()) throw_js(env, "runKernel(" + name + "): " + bad);
  df::KernelCtx ctx{&pool};
  fn(args, ctx);
  return env.Undefined();
}

// runKernel on a non-host backend (the backend test's eval(cpu, device)): the same argument checks, then
// each tensor copied to a device buffer, the backend's kernel launched, every tensor copied back.
Napi::Value run_kernel_on_device(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = str_arg(info, 0, "runKernel: name");
  std::string device = info[4].As<Napi::String>().Utf8Value();
  static std::unordered_map<std::string, std::unique_ptr<df::Backend>> backends;
  auto& be = backends[device];
  try {
    if (!be) be = df::make_backend(device, 1);
  } catch (const std::exception& e) {
    backends.erase(device);
    throw_js(env, e.what());
  }
  const void* fn = be->find(name);
  if (!fn) throw_js(env, "runKernel(" + name + "): not implemented by the " + be->name() + " backend");
  if (!info[1].IsArray() || !info[2].IsArray() || !info[3].IsArray()) throw_type(env, "runKernel(" + name + "): expected (name, tensors[], ints[], floats[], device)");
  auto ta = info[1].As<Napi::Array>();
  auto ia = info[2].As<Napi::Array>();
  auto fa = info[3].As<Napi::Array>();
  if (ta.Length() > 8 || ia.Length() > 16 || fa.Length() > 8) throw_js(env, "runKernel(" + name + "): at most 8 tensors, 16 ints and 8 floats");
  df::KernelArgs args{};
  df::TensorArg targs[8];
  std::vector<Napi::Float32Array> host(8);
  for (uint32_t k = 0; k < ta.Length(); ++k) {
    Napi::Value v = ta.Get(k);
    if (v.IsNull() || v.IsUndefined()) continue;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_type(env, "runKernel(" + name + "): t[" + std::to_string(k) + "] must be a Float32Array or null");
    host[k] = v.As<Napi::Float32Array>();
    targs[k].present = true;
    targs[k].numel = static_cast<int64_t>(host[k].ElementLength());
  }
  for (uint32_t k = 0; k < ia.Length(); ++k) args.i[k] = static_cast<int64_t>(ia.Get(k).As<Napi::Number>().DoubleValue());
  for (uint32_t k = 0; k < fa.Length(); ++k) args.f[k] = fa.Get(k).As<Napi::Number>().FloatValue();
  std::string bad = df::validate_kernel_args(name, df::registry().arity(name), static_cast<int>(ta.Length()), targs,
                                             static_cast<int>(ia.Length()), args.i, static_cast<int>(fa.Length()));
  if (!bad.empty()) throw_js(env, "runKernel(" + name + "): " + bad);
  std::vector<float*> dev(8, nullptr);
  try {
    for (uint32_t k = 0; k < ta.Length(); ++k) {
      if (!targs[k].present) continue;
      dev[k] = be->alloc(targs[k].numel);
      be->upload(dev[k], host[k].Data(), targs[k].numel);
      args.t[k] = dev[k];
    }
    be->launch(fn, args);
    be->synchronize();
    for (uint32_t k = 0; k < ta.Length(); ++k)
      if (dev[k]) be->download(host[k].Data(), dev[k], targs[k].numel);
  } catch (const std::exception& e) {
    for (float* p : dev)
      if (p) be->free(p);
    throw_js(env, "runKernel(" + name + ") on " + be->name() + ": " + e.what());
  }
  for (float* p : dev)
    if (p) be->free(p);
  return env.Undefined();
}

Napi::Value RunKernel(const Napi::CallbackInfo& info) {
  // runKernel(name, t, i, f, device): on another backend, every tensor goes to a device buffer and back
  if (info.Length() > 4 && info[4].IsString() && info[4].As<Napi::String>().Utf8Value() != "cpu") return run_kernel_on_device(info);
  return run_kernel_on(info, global_pool());
}

// kernelNeeds(name, present[], ints[], nFloats): the floats each tensor slot needs for these parameters
Napi::Value KernelNeeds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = str_arg(info, 0, "kernelNeeds: name");
  if (info.Length() < 4 || !info[1].IsArray() || !info[2].IsArray() || !info[3].IsNumber())
    throw_type(env, "kernelNeeds(name, present: boolean[], ints: number[], nFloats: number)");
  auto pa = info[1].As<Napi::Array>();
  auto ia = info[2].As<Napi::Array>();
  if (pa.Length() > 8 || ia.Length() > 16) throw_js(env, "kernelNeeds: at most 8 tensors and 16 ints");
  df::TensorArg t[8];
  for (uint32_t k = 0; k < pa.Length(); ++k) {
    t[k].present = pa.Get(k).ToBoolean().Value();
    t[k].numel = INT64_MAX / 4;
  }
  int64_t iv[16] = {0};
  for (uint32_t k = 0; k < ia.Length(); ++k) iv[k] = static_cast<int64_t>(ia.Get(k).As<Napi::Number>().DoubleValue());
  std::vector<int64_t> needs;
  std::string bad = df::validate_kernel_args(name, df::registry().arity(name), static_cast<int>(pa.Length()), t, static_cast<int>(ia.Length()), iv,
                                             info[3].As<Napi::Number>().Int32Value(), &needs);
  if (!bad.empty()) throw_js(env, "kernelNeeds(" + name + "): " + bad);
  auto out = Napi::Array::New(env, needs.size());
  for (size_t k = 0; k < needs.size(); ++k) out.Set(static_cast<uint32_t>(k), Napi::Number::New(env, static_cast<double>(needs[k])));
  return out;
}

// ---------------------------------------------------------------------------------------------
struct Mapping {
  void* addr;
  size_t len;
};

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = str_arg(info, 0, "mapFile: path");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_js(env, "mapFile: cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw_js(env, "mapFile: cannot stat '" + path + "': " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_js(env, "mapFile: '" + path + "' is not a regular file");
  }
  size_t len = static_cast<size_t>(st.st_size);
  if (len == 0) {
    ::close(fd);
    return Napi::ArrayBuffer::New(env, 0);
  }
  // Private copy-on-write mapping: the file is never modified, and a stray JS write touches only a
  // private copy of that page instead of crashing the process.
  void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (addr == MAP_FAILED) throw_js(env, "mapFile: cannot mmap '" + path + "': " + std::strerror(e));
  auto* m = new Mapping{addr, len};
  return Napi::ArrayBuffer::New(env, addr, len, [](Napi::Env, void*, Mapping* mp) {
    ::munmap(mp->addr, mp->len);
    delete mp;
  }, m);
}

// Drops the resident pages of [offset, offset + length) of a mapFile mapping (the whole pages inside
// it): a bf16 / fp16 tensor read once and converted to float32 need not stay in memory twice. The
// mapping is private and never written, so a later read of the range reads the file again.
Napi::Value ReleaseMappedPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArrayBuffer() || !info[1].IsNumber() || !info[2].IsNumber())
    throw_js(env, "releaseMappedPages(buffer: ArrayBuffer, offset: number, length: number)");
  auto buf = info[0].As<Napi::ArrayBuffer>();
  const int64_t off = info[1].As<Napi::Number>().Int64Value(), len = info[2].As<Napi::Number>().Int64Value();
  if (off < 0 || len < 0 || off + len > static_cast<int64_t>(buf.ByteLength())) throw_js(env, "releaseMappedPages: range outside the buffer");
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t base = reinterpret_cast<uintptr_t>(buf.Data());
  const uintptr_t lo = (base + off + page - 1) / page * page, hi = (base + off + len) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
Napi::Value Features(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
#if defined(__x86_64__)
  __builtin_cpu_init();
  o.Set("avx512", Napi::Boolean::New(env, __builtin_cpu_supports("avx512f")));
  o.Set("avx2", Napi::Boolean::New(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
#else
  o.Set("avx512", Napi::Boolean::New(env, false));
  o.Set("avx2", Napi::Boolean::New(env, false));
#endif
#if defined(__AVX512F__)
  o.Set("compiledFor", "avx512");
#elif defined(__AVX2__)
  o.Set("compiledFor", "avx2");
#else
  o.Set("compiledFor", "generic");
#endif
  o.Set("threads", Napi::Number::New(env, default_threads()));
  o.Set("hardwareThreads", Napi::Number::New(env, std::thread::hardware_concurrency()));
#ifdef HAVE_CUDA
  o.Set("cudaCompiled", Napi::Boolean::New(env, true));
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaSuccess) {
    o.Set("cudaDevices", Napi::Number::New(env, n));
    if (n == 0) o.Set("cudaReason", "no CUDA device found");
  } else {
    o.Set("cudaDevices", Napi::Number::New(env, 0));
    o.Set("cudaReason", std::string(cudaGetErrorString(err)));
  }
#else
  o.Set("cudaCompiled", Napi::Boolean::New(env, false));
  o.Set("cudaDevices", Napi::Number::New(env, 0));
  o.Set("cudaReason", "built without CUDA (nvcc not found or WITH_CUDA=OFF)");
#endif
#ifdef HAVE_OPENBLAS
  o.Set("openblas", Napi::Boolean::New(env, true));
  o.Set("openblasCore", std::string(openblas_get_corename()));
#else
  o.Set("openblas", Napi::Boolean::New(env, false));
#endif
  o.Set("kernels", Napi::Number::New(env, df::registry().names.size()));
  return o;
}

#ifdef HAVE_OPENBLAS
// sgemmOpenBLAS(x[M,K], w[N,K], y[M,N], M, N, K, threads?): y = x @ w^T, the `linear` layout.
Napi::Value SgemmOpenBLAS(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = f32_arg(info, 0, "sgemmOpenBLAS: x");
  auto w = f32_arg(info, 1, "sgemmOpenBLAS: w");
  auto y = f32_arg(info, 2, "sgemmOpenBLAS: y");
  if (info.Length() < 6 || !info[3].IsNumber() || !info[4].IsNumber() || !info[5].IsNumber())
    throw_type(env, "sgemmOpenBLAS(x, w, y, M, N, K, threads?)");
  int64_t M = info[3].As<Napi::Number>().Int64Value(), N = info[4].As<Napi::Number>().Int64Value(),
          K = info[5].As<Napi::Number>().Int64Value();
  if (M < 0 || N < 0 || K < 0) throw_js(env, "sgemmOpenBLAS: negative size");
  if ((int64_t)x.ElementLength() < M * K || (int64_t)w.ElementLength() < N * K || (int64_t)y.ElementLength() < M * N)
    throw_js(env, "sgemmOpenBLAS: arrays too small for M, N, K");
  if (info.Length() > 6 && info[6].IsNumber()) openblas_set_num_threads(info[6].As<Napi::Number>().Int32Value());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x.Data(), (int)K, w.Data(), (int)K,
              0.0f, y.Data(), (int)N);
  return env.Undefined();
}
#endif

// ---------------------------------------------------------------------------------------------
class Executor : public Napi::ObjectWrap<Executor> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Executor",
                       {
                           InstanceMethod("bindWeight", &Executor::BindWeight),
                           InstanceMethod("setInput", &Executor::SetInput),
                           InstanceMethod("getOutput", &Executor::GetOutput),
                           InstanceMethod("readTensor", &Executor::ReadTensor),
                           InstanceMethod("writeTensor", &Executor::WriteTensor),
                           InstanceMethod("tensorView", &Executor::TensorView),
                           InstanceMethod("runKernel", &Executor::RunKernelHere),
                           InstanceMethod("run", &Executor::Run),
                           InstanceMethod("runSync", &Executor::RunSync),
                           InstanceMethod("arenaBytes", &Executor::ArenaBytes),
                           InstanceMethod("threads", &Executor::Threads),
                           InstanceMethod("segments", &Executor::Segments),
                           InstanceMethod("device", &Executor::Device),
                       });
  }

  Executor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Executor>(info) {
    Napi::Env env = info.Env();
    std::string plan = str_arg(info, 0, "new Executor: plan (the plan.json text)");
    int threads = default_threads();
    std::string device = "cpu";
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Value t = info[1].As<Napi::Object>().Get("threads");
      if (t.IsNumber()) {
        int n = t.As<Napi::Number>().Int32Value();
        if (n < 1 || n > 1024) throw_js(env, "new Executor: threads must be 1..1024, got " + std::to_string(n));
        threads = n;
      } else if (!t.IsUndefined() && !t.IsNull()) {
        throw_type(env, "new Executor: opts.threads must be a number");
      }
      Napi::Value d = info[1].As<Napi::Object>().Get("device");
      if (d.IsString()) device = d.As<Napi::String>().Utf8Value();
      else if (!d.IsUndefined() && !d.IsNull()) throw_type(env, "new Executor: opts.device must be a string (cpu, cuda, cuda:N)");
    }
    try {
      exec_ = std::make_unique<df::PlanExecutor>(plan, df::make_backend(device, threads));
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
  }

  df::PlanExecutor& exec() { return *exec_; }
  std::mutex run_mu;
  std::atomic<int> in_flight{0};

 private:
  void not_busy(Napi::Env env, const char* what) {
    if (in_flight.load() > 0)
      throw_js(env, std::string(what) + ": " + exec_->label() + " is running a segment; await run() first");
  }

  Napi::Value BindWeight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "bindWeight");
    std::string name = str_arg(info, 0, "bindWeight: name");
    auto data = f32_arg(info, 1, ("bindWeight('" + name + "'): data").c_str());
    try {
      exec_->bind_weight(name, data.Data(), static_cast<int64_t>(data.ElementLength()));
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
    refs_[name] = Napi::Persistent(data.As<Napi::Object>());  // keep the memory alive
    return env.Undefined();
  }

  Napi::Value SetInput(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "setInput");
    std::string name = str_arg(info, 0, "setInput: name");
    auto data = f32_arg(info, 1, "setInput: data");
    try {
      const auto& io = exec_->input(name);
      if ((int64_t)data.ElementLength() != io.numel)
        throw df::PlanError(exec_->label() + ": setInput('" + name + "'): got " + std::to_string(data.ElementLength()) +
                            " floats, the input holds " + std::to_string(io.numel));
      exec_->write_tensor(io.tensor, data.Data(), io.numel);
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
    return env.Undefined();
  }

  Napi::Value GetOutput(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "getOutput");
    std::string name = str_arg(info, 0, "getOutput: name");
    auto into = f32_arg(info, 1, "getOutput: into");
    try {
      const auto& io = exec_->output(name);
      if ((int64_t)into.ElementLength() != io.numel)
        throw df::PlanError(exec_->label() + ": getOutput('" + name + "'): got a buffer of " + std::to_string(into.ElementLength()) +
                            " floats, the output holds " + std::to_string(io.numel));
      exec_->read_tensor(io.tensor, into.Data(), io.numel);
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
    return env.Undefined();
  }

  int64_t id_arg(const Napi::CallbackInfo& info, const char* what) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_type(info.Env(), std::string(what) + ": id must be a number");
    return info[0].As<Napi::Number>().Int64Value();
  }

  Napi::Value ReadTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "readTensor");
    int64_t id = id_arg(info, "readTensor");
    auto into = f32_arg(info, 1, "readTensor: into");
    try {
      exec_->read_tensor(id, into.Data(), static_cast<int64_t>(into.ElementLength()));
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
    return env.Undefined();
  }

  Napi::Value WriteTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "writeTensor");
    int64_t id = id_arg(info, "writeTensor");
    auto data = f32_arg(info, 1, "writeTensor: data");
    try {
      exec_->write_tensor(id, data.Data(), static_cast<int64_t>(data.ElementLength()));
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
    return env.Undefined();
  }

  // A Float32Array aliasing an arena tensor (no copy; the cache engine's kernels run on it with
  // runKernel). The view keeps the executor alive; it must not be touched while a run() is in flight.
  Napi::Value TensorView(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "tensorView");
    int64_t id = id_arg(info, "tensorView");
    float* p = nullptr;
    int64_t n = 0;
    try {
      p = exec_->tensor_ptr(id, &n, true);
    } catch (const std::exception& e) {
      throw_js(env, e.what());
    }
    auto* keep = new Napi::ObjectReference(Napi::Persistent(Value()));
    auto buf = Napi::ArrayBuffer::New(
        env, p, sizeof(float) * static_cast<size_t>(n), [](Napi::Env, void*, Napi::ObjectReference* ref) { delete ref; }, keep);
    return Napi::Float32Array::New(env, static_cast<size_t>(n), buf, 0);
  }

  df::PlanExecutor::RunRange range_args(const Napi::CallbackInfo& info, const char* what) {
    std::string seg = str_arg(info, 0, (std::string(what) + ": segment").c_str());
    int64_t b = -1, e = -1;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
      if (!info[1].IsNumber()) throw_type(info.Env(), std::string(what) + ": blockBegin must be a number");
      b = info[1].As<Napi::Number>().Int64Value();
      if (b < 0) throw_js(info.Env(), std::string(what) + ": blockBegin must be >= 0");
    }
    if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
      if (!info[2].IsNumber()) throw_type(info.Env(), std::string(what) + ": blockEnd must be a number");
      e = info[2].As<Napi::Number>().Int64Value();
      if (e < 0) throw_js(info.Env(), std::string(what) + ": blockEnd must be >= 0");
    }
    return exec_->resolve_run(seg, b, e);  // throws PlanError
  }

  class RunWorker : public Napi::AsyncWorker {
   public:
    RunWorker(Napi::Env env, Executor* ex, Napi::Object self, df::PlanExecutor::RunRange r)
        : Napi::AsyncWorker(env, "ditforge.run"), ex_(ex), r_(r), deferred_(Napi::Promise::Deferred::New(env)) {
      self_ = Napi::Persistent(self);
      ex_->in_flight.fetch_add(1);
    }
    Napi::Promise Promise() { return deferred_.Promise(); }
    void Execute() override {
      std::lock_guard<std::mutex> lk(ex_->run_mu);
      try {
        ex_->exec().execute(r_);
      } catch (const std::exception& e) {
        SetError(ex_->exec().label() + ": " + e.what());
      }
    }
    void OnOK() override {
      ex_->in_flight.fetch_sub(1);
      deferred_.Resolve(Env().Undefined());
    }
    void OnError(const Napi::Error& e) override {
      ex_->in_flight.fetch_sub(1);
      deferred_.Reject(e.Value());
    }

   private:
    Executor* ex_;
    df::PlanExecutor::RunRange r_;
    Napi::Promise::Deferred deferred_;
    Napi::ObjectReference self_;
  };

  Napi::Value Run(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    df::PlanExecutor::RunRange r;
    try {
      r = range_args(info, "run");
    } catch (const Napi::Error& e) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Reject(e.Value());
      return d.Promise();
    } catch (const std::exception& e) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Reject(Napi::Error::New(env, e.what()).Value());
      return d.Promise();
    }
    auto* w = new RunWorker(env, this, info.This().As<Napi::Object>(), r);
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value RunSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    not_busy(env, "runSync");
    df::PlanExecutor::RunRange r;
    try {
      r = range_args(info, "runSync");
    } catch (const df::PlanError& e) {
      throw_js(env, e.what());
    }
    std::lock_guard<std::mutex> lk(run_mu);
    try {
      exec_->execute(r);
    } catch (const std::exception& e) {
      throw_js(env, exec_->label() + ": " + e.what());
    }
    return env.Undefined();
  }

  Napi::Value ArenaBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(exec_->arena_floats()) * sizeof(float));
  }
  Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), exec_->threads()); }

  // runKernel on this executor's thread pool (ranks of one process each keep their own threads, instead of
  // queueing on the global pool); not while a run() is in flight (the pool is busy then)
  Napi::Value RunKernelHere(const Napi::CallbackInfo& info) {
    not_busy(info.Env(), "runKernel");
    df::ThreadPool* pool = exec_->pool();
    if (!pool) throw_js(info.Env(), "runKernel: " + exec_->label() + " runs on " + exec_->backend().name() + "; runKernel takes host arrays (CPU executors only)");
    return run_kernel_on(info, *pool);
  }
  Napi::Value Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), exec_->backend().name()); }

  Napi::Value Segments(const Napi::CallbackInfo& info) {
    auto names = exec_->segment_names();
    auto arr = Napi::Array::New(info.Env(), names.size());
    for (size_t k = 0; k < names.size(); ++k) {
      auto o = Napi::Object::New(info.Env());
      o.Set("name", names[k]);
      o.Set("blocks", Napi::Number::New(info.Env(), static_cast<double>(exec_->segment_blocks(static_cast<int>(k)))));
      arr.Set(static_cast<uint32_t>(k), o);
    }
    return arr;
  }

  std::unique_ptr<df::PlanExecutor> exec_;
  std::unordered_map<std::string, Napi::ObjectReference> refs_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("kernels", Napi::Function::New(env, Kernels, "kernels"));
  exports.Set("runKernel", Napi::Function::New(env, RunKernel, "runKernel"));
  exports.Set("mapFile", Napi::Function::New(env, MapFile, "mapFile"));
  exports.Set("kernelNeeds", Napi::Function::New(env, KernelNeeds, "kernelNeeds"));
  exports.Set("cudaKernels", Napi::Function::New(
                                 env,
                                 [](const Napi::CallbackInfo& info) -> Napi::Value {
                                   auto names = df::cuda_kernel_names();
                                   auto arr = Napi::Array::New(info.Env(), names.size());
                                   for (size_t k = 0; k < names.size(); ++k) arr.Set(static_cast<uint32_t>(k), names[k]);
                                   return arr;
                                 },
                                 "cudaKernels"));
  exports.Set("releaseMappedPages", Napi::Function::New(env, ReleaseMappedPages, "releaseMappedPages"));
  exports.Set("features", Napi::Function::New(env, Features, "features"));
#ifdef HAVE_OPENBLAS
  exports.Set("sgemmOpenBLAS", Napi::Function::New(env, SgemmOpenBLAS, "sgemmOpenBLAS"));
#endif
  exports.Set("Executor", Executor::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(ditforge_native, Init)
