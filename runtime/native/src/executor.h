// The plan interpreter: parses plan.json, validates it, pre-resolves every op into {kernel, KernelArgs} of
// its backend (backend.h), and runs segments as one launch loop over that backend.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "ditforge/kernel_abi.h"
#include "ditforge/thread_pool.h"

namespace ditforge {

class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class PlanExecutor {
 public:
  PlanExecutor(const std::string& plan_json, std::unique_ptr<Backend> backend);  // throws PlanError
  ~PlanExecutor();

  struct TensorView {
    bool arena = true;
    int weight = -1;  // index into weights_ when !arena
    int64_t offset = 0, numel = 0;
  };
  struct Weight {
    std::string name;
    int64_t numel = -1;  // from plan.weights shapes; -1 if only referenced by tensors
    float* data = nullptr;  // the caller's memory (host backend) or the backend's copy (owned)
    bool owned = false;
    int64_t len = 0;
    int64_t max_view_end = 0;  // largest offset + numel of a tensor view on it
    std::vector<std::pair<size_t, int64_t>> uses;  // (op index * 8 + slot, view offset)
  };
  struct IO {
    std::string name;
    int tensor;
    int64_t numel;
  };

  // a host-addressable backend uses `data` in place (the caller keeps it alive); others copy it in
  void bind_weight(const std::string& name, float* data, int64_t len);
  const IO& input(const std::string& name) const;
  const IO& output(const std::string& name) const;
  // host pointer + numel of a tensor view (arena, or a bound weight); host-addressable backends only
  float* tensor_ptr(int64_t id, int64_t* numel, bool writable) const;
  // copies through the backend (any backend): `n` must be the tensor's numel
  void read_tensor(int64_t id, float* into, int64_t n) const;
  void write_tensor(int64_t id, const float* from, int64_t n);
  int64_t tensor_numel(int64_t id) const;

  struct RunRange {
    int segment;
    int64_t begin, end;  // block range (blocks segments) or [0, 1) for op segments
  };
  RunRange resolve_run(const std::string& segment, int64_t begin, int64_t end) const;  // throws PlanError
  void execute(const RunRange& r);  // no allocation; throws BackendError when a device launch failed

  int64_t arena_floats() const { return arena_floats_; }
  int threads() const { return backend_->threads(); }
  ThreadPool* pool() { return backend_->pool(); }  // Executor.runKernel: kernels on this executor's threads (CPU)
  Backend& backend() { return *backend_; }
  const std::string& label() const { return label_; }
  std::vector<std::string> segment_names() const;
  int64_t segment_blocks(int seg) const;

 private:
  struct Op {
    const void* fn;  // the backend's kernel
    KernelArgs args;
    int32_t tid[8];
  };
  struct Range {
    size_t begin, end;  // into ops_
    std::vector<int> weights;
    std::string name;
  };
  struct Segment {
    std::string name;
    bool blocks = false;
    std::vector<Range> ranges;  // one per block, or exactly one
  };

  [[noreturn]] void fail(const std::string& msg) const;
  void patch_weight(int w);
  const TensorView& view(int64_t id) const;
  float* view_ptr(const TensorView& v) const;

  std::string label_;
  int64_t arena_floats_ = 0;
  std::unique_ptr<Backend> backend_;
  float* arena_ = nullptr;
  std::unordered_map<int64_t, TensorView> tensors_;
  std::vector<Weight> weights_;
  std::unordered_map<std::string, int> weight_index_;
  std::vector<IO> inputs_, outputs_;
  std::vector<Op> ops_;
  std::vector<Segment> segments_;
};

}  // namespace ditforge
