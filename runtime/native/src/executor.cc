#include "executor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "json.h"
#include "kernel_sigs.h"
#include "registry_index.h"

namespace ditforge {

namespace {

const json::Value& need(const json::Value& o, const char* key, const std::string& where) {
  const json::Value* v = o.is_object() ? o.get(key) : nullptr;
  if (!v) throw PlanError(where + ": missing field '" + key + "'");
  return *v;
}

int64_t as_int(const json::Value& v, const std::string& where) {
  if (!v.is_number() || std::floor(v.num) != v.num || std::fabs(v.num) > 9007199254740992.0)
    throw PlanError(where + ": expected an integer");
  return static_cast<int64_t>(v.num);
}

const std::string& as_str(const json::Value& v, const std::string& where) {
  if (!v.is_string()) throw PlanError(where + ": expected a string");
  return v.str;
}

const std::vector<json::Value>& as_arr(const json::Value& v, const std::string& where) {
  if (!v.is_array()) throw PlanError(where + ": expected an array");
  return v.arr;
}

}  // namespace

void PlanExecutor::fail(const std::string& msg) const { throw PlanError(label_ + ": " + msg); }

PlanExecutor::PlanExecutor(const std::string& plan_json, std::unique_ptr<Backend> backend) : backend_(std::move(backend)) {
  json::Value root;
  try {
    root = json::parse(plan_json);
  } catch (const json::ParseError& e) {
    throw PlanError(std::string("plan.json: ") + e.what());
  }
  if (!root.is_object()) throw PlanError("plan.json: the top level must be an object");
  auto str_or = [&](const char* k, const char* d) {
    const json::Value* v = root.get(k);
    return v && v->is_string() ? v->str : std::string(d);
  };
  label_ = "plan " + str_or("model", "?") + "/" + str_or("component", "?");
  std::string tag = str_or("tag", "");
  if (!tag.empty()) label_ += " (" + tag + ")";
  const json::Value* fmt = root.get("format");
  if (!fmt || !fmt->is_string() || fmt->str != "ditforge-plan/1")
    fail("format must be \"ditforge-plan/1\"" + std::string(fmt && fmt->is_string() ? ", got \"" + fmt->str + "\"" : ""));

  try {
    arena_floats_ = as_int(need(root, "arenaFloats", label_), label_ + ": arenaFloats");
    if (arena_floats_ < 0) fail("arenaFloats must be >= 0");

    // weights
    if (const json::Value* ws = root.get("weights")) {
      for (auto& w : as_arr(*ws, label_ + ": weights")) {
        std::string name = as_str(need(w, "name", label_ + ": weights[]"), label_ + ": weight name");
        int64_t numel = 1;
        for (auto& d : as_arr(need(w, "shape", label_ + ": weight " + name), label_ + ": weight " + name + " shape"))
          numel *= as_int(d, label_ + ": weight " + name + " shape");
        if (weight_index_.count(name)) fail("weight '" + name + "' listed twice");
        weight_index_[name] = static_cast<int>(weights_.size());
        weights_.push_back(Weight{name, numel, nullptr, 0});
      }
    }
    // tensors
    for (auto& t : as_arr(need(root, "tensors", label_), label_ + ": tensors")) {
      int64_t id = as_int(need(t, "id", label_ + ": tensors[]"), label_ + ": tensor id");
      std::string where = label_ + ": tensor " + std::to_string(id);
      TensorView v;
      const std::string& base = as_str(need(t, "base", where), where + " base");
      v.offset = as_int(need(t, "offset", where), where + " offset");
      v.numel = as_int(need(t, "numel", where), where + " numel");
      if (v.offset < 0 || v.numel < 0) fail("tensor " + std::to_string(id) + " has a negative offset or numel");
      if (base == "arena") {
        if (v.offset + v.numel > arena_floats_)
          fail("tensor " + std::to_string(id) + " [" + std::to_string(v.offset) + ", " + std::to_string(v.offset + v.numel) +
               ") is out of the arena bounds (arenaFloats " + std::to_string(arena_floats_) + ")");
      } else if (base == "weight") {
        v.arena = false;
        const std::string& wn = as_str(need(t, "weight", where), where + " weight");
        auto it = weight_index_.find(wn);
        if (it == weight_index_.end()) {
          weight_index_[wn] = static_cast<int>(weights_.size());
          weights_.push_back(Weight{wn, -1, nullptr, 0});
          it = weight_index_.find(wn);
        }
        v.weight = it->second;
        weights_[v.weight].max_view_end = std::max(weights_[v.weight].max_view_end, v.offset + v.numel);
        int64_t wl = weights_[v.weight].numel;
        if (wl >= 0 && v.offset + v.numel > wl)
          fail("tensor " + std::to_string(id) + " [" + std::to_string(v.offset) + ", " + std::to_string(v.offset + v.numel) +
               ") is out of the bounds of weight '" + wn + "' (" + std::to_string(wl) + " floats)");
      } else {
        fail("tensor " + std::to_string(id) + " has unknown base '" + base + "' (expected arena or weight)");
      }
      if (tensors_.count(id)) fail("tensor id " + std::to_string(id) + " defined twice");
      tensors_[id] = v;
    }
    // inputs / outputs
    auto read_io = [&](const char* key, std::vector<IO>& out) {
      const json::Value* arr = root.get(key);
      if (!arr) return;
      for (auto& e : as_arr(*arr, label_ + ": " + key)) {
        std::string where = label_ + ": " + key + "[]";
        std::string name = as_str(need(e, "name", where), where + " name");
        int64_t id = as_int(need(e, "tensor", where), where + " tensor");
        auto it = tensors_.find(id);
        if (it == tensors_.end()) fail(std::string(key) + " '" + name + "' refers to unknown tensor " + std::to_string(id));
        if (!it->second.arena) fail(std::string(key) + " '" + name + "' must live in the arena");
        if (const json::Value* sh = e.get("shape")) {
          int64_t n = 1;
          for (auto& d : as_arr(*sh, where + " shape")) n *= as_int(d, where + " shape");
          if (n != it->second.numel)
            fail(std::string(key) + " '" + name + "' has shape of " + std::to_string(n) + " elements but tensor " +
                 std::to_string(id) + " holds " + std::to_string(it->second.numel));
        }
        out.push_back(IO{name, static_cast<int>(id), it->second.numel});
      }
    };
    read_io("inputs", inputs_);
    read_io("outputs", outputs_);

    // arena (one zeroed buffer of the backend)
    try {
      arena_ = backend_->alloc(arena_floats_);
    } catch (const BackendError& e) {
      fail(std::string("cannot allocate the arena (") + std::to_string(arena_floats_ * 4) + " bytes): " + e.what());
    }

    // ops: argument signatures (kernel_sigs.cc) and elementwise arities from the catalogue, kernels from the backend
    const Registry& reg = registry();
    auto add_ops = [&](const json::Value& ops, const std::string& where, Range& range) {
      range.begin = ops_.size();
      std::set<int> ws;
      size_t idx = 0;
      for (auto& o : as_arr(ops, label_ + ": " + where + " ops")) {
        std::string ow = where + " op " + std::to_string(idx);
        if (const json::Value* src = o.get("src"))
          if (src->is_string()) ow += " (" + src->str + ")";
        const std::string& k = as_str(need(o, "k", label_ + ": " + ow), label_ + ": " + ow + " k");
        ow = where + " op " + std::to_string(idx) + " '" + k + "'" + ow.substr((where + " op " + std::to_string(idx)).size());
        if (!reg.find(k)) fail("unknown kernel '" + k + "' in " + ow + "; this build registers " + std::to_string(reg.names.size()) +
                      " kernels (re-render generated/kernels and rebuild the addon if the plan is newer)");
        const void* fn = backend_->find(k);
        if (!fn) fail("kernel '" + k + "' in " + ow + " is not implemented by the " + backend_->name() + " backend");
        Op op{};
        op.fn = fn;
        for (auto& t : op.tid) t = -1;
        auto& tj = as_arr(need(o, "t", label_ + ": " + ow), label_ + ": " + ow + " t");
        auto& ij = o.get("i") ? as_arr(*o.get("i"), label_ + ": " + ow + " i") : std::vector<json::Value>{};
        auto& fj = o.get("f") ? as_arr(*o.get("f"), label_ + ": " + ow + " f") : std::vector<json::Value>{};
        if (tj.size() > 8 || ij.size() > 16 || fj.size() > 8)
          fail(ow + ": too many arguments (at most 8 tensors, 16 ints, 8 floats)");
        TensorArg ta[8];
        for (size_t s = 0; s < tj.size(); ++s) {
          int64_t id = as_int(tj[s], label_ + ": " + ow + " t");
          if (id == -1) continue;
          auto it = tensors_.find(id);
          if (it == tensors_.end()) fail(ow + ": t[" + std::to_string(s) + "] refers to unknown tensor " + std::to_string(id));
          op.tid[s] = static_cast<int32_t>(id);
          ta[s].present = true;
          ta[s].numel = it->second.numel;
          if (it->second.arena) {
            op.args.t[s] = arena_ + it->second.offset;
          } else {
            op.args.t[s] = nullptr;  // patched by bind_weight
            ws.insert(it->second.weight);
            weights_[it->second.weight].uses.emplace_back(ops_.size() * 8 + s, it->second.offset);
          }
        }
        for (size_t s = 0; s < ij.size(); ++s) op.args.i[s] = as_int(ij[s], label_ + ": " + ow + " i");
        for (size_t s = 0; s < fj.size(); ++s) {
          if (!fj[s].is_number()) fail(ow + ": f[" + std::to_string(s) + "] must be a number");
          op.args.f[s] = static_cast<float>(fj[s].num);
        }
        std::string bad = validate_kernel_args(k, reg.arity(k), static_cast<int>(tj.size()), ta, static_cast<int>(ij.size()),
                                               op.args.i, static_cast<int>(fj.size()));
        if (!bad.empty()) fail(ow + ": " + bad);
        ops_.push_back(op);
        ++idx;
      }
      range.end = ops_.size();
      range.weights.assign(ws.begin(), ws.end());
    };
    std::set<std::string> seg_names;
    for (auto& s : as_arr(need(root, "segments", label_), label_ + ": segments")) {
      Segment seg;
      seg.name = as_str(need(s, "name", label_ + ": segments[]"), label_ + ": segment name");
      if (!seg_names.insert(seg.name).second) fail("segment '" + seg.name + "' defined twice");
      if (const json::Value* blocks = s.get("blocks")) {
        seg.blocks = true;
        size_t b = 0;
        for (auto& blk : as_arr(*blocks, label_ + ": segment " + seg.name + " blocks")) {
          Range r;
          const json::Value* bn = blk.get("name");
          r.name = bn && bn->is_string() ? bn->str : seg.name + "[" + std::to_string(b) + "]";
          add_ops(need(blk, "ops", label_ + ": block " + r.name), "segment '" + seg.name + "' block '" + r.name + "'", r);
          seg.ranges.push_back(std::move(r));
          ++b;
        }
      } else {
        Range r;
        r.name = seg.name;
        add_ops(need(s, "ops", label_ + ": segment " + seg.name), "segment '" + seg.name + "'", r);
        seg.ranges.push_back(std::move(r));
      }
      segments_.push_back(std::move(seg));
    }
    if (const json::Value* ks = root.get("kernels")) {
      for (auto& k : as_arr(*ks, label_ + ": kernels")) {
        const std::string& name = as_str(k, label_ + ": kernels[]");
        if (!reg.find(name))
          fail("unknown kernel '" + name + "' (listed in the plan's kernels); re-render generated/kernels and rebuild the addon");
      }
    }
  } catch (...) {
    if (arena_) backend_->free(arena_);
    arena_ = nullptr;
    throw;
  }
}

PlanExecutor::~PlanExecutor() {
  for (auto& w : weights_)
    if (w.owned) backend_->free(w.data);
  if (arena_) backend_->free(arena_);
}

void PlanExecutor::patch_weight(int w) {
  const Weight& wt = weights_[w];
  for (const auto& u : wt.uses) ops_[u.first / 8].args.t[u.first % 8] = wt.data ? wt.data + u.second : nullptr;
}

void PlanExecutor::bind_weight(const std::string& name, float* data, int64_t len) {
  auto it = weight_index_.find(name);
  if (it == weight_index_.end()) fail("bindWeight: the plan has no weight named '" + name + "'");
  Weight& w = weights_[it->second];
  if (w.numel >= 0 && len != w.numel)
    fail("bindWeight('" + name + "'): got " + std::to_string(len) + " floats, the plan expects " + std::to_string(w.numel));
  if (w.max_view_end > len)
    fail("bindWeight('" + name + "'): got " + std::to_string(len) + " floats, but a tensor view of it ends at " +
         std::to_string(w.max_view_end));
  if (w.owned) backend_->free(w.data);
  w.owned = false;
  if (backend_->host_addressable()) {
    w.data = data;
  } else {
    w.data = backend_->alloc(len);  // uploaded once
    w.owned = true;
    backend_->upload(w.data, data, len);
  }
  w.len = len;
  patch_weight(it->second);
}

const PlanExecutor::IO& PlanExecutor::input(const std::string& name) const {
  for (auto& io : inputs_)
    if (io.name == name) return io;
  std::string have;
  for (auto& io : inputs_) have += (have.empty() ? "" : ", ") + io.name;
  fail("no input named '" + name + "' (inputs: " + (have.empty() ? "none" : have) + ")");
}

const PlanExecutor::IO& PlanExecutor::output(const std::string& name) const {
  for (auto& io : outputs_)
    if (io.name == name) return io;
  std::string have;
  for (auto& io : outputs_) have += (have.empty() ? "" : ", ") + io.name;
  fail("no output named '" + name + "' (outputs: " + (have.empty() ? "none" : have) + ")");
}

const PlanExecutor::TensorView& PlanExecutor::view(int64_t id) const {
  auto it = tensors_.find(id);
  if (it == tensors_.end()) fail("no tensor with id " + std::to_string(id));
  return it->second;
}

float* PlanExecutor::view_ptr(const TensorView& v) const {
  if (v.arena) return arena_ + v.offset;
  if (!weights_[v.weight].data) fail("a tensor views weight '" + weights_[v.weight].name + "', which is not bound");
  return weights_[v.weight].data + v.offset;
}

int64_t PlanExecutor::tensor_numel(int64_t id) const { return view(id).numel; }

float* PlanExecutor::tensor_ptr(int64_t id, int64_t* numel, bool writable) const {
  const TensorView& v = view(id);
  if (!backend_->host_addressable())
    fail("tensor " + std::to_string(id) + " lives on " + backend_->name() + ": there is no host view of it (read it with readTensor, write it with writeTensor)");
  *numel = v.numel;
  if (!v.arena && writable) fail("tensor " + std::to_string(id) + " is a view of weight '" + weights_[v.weight].name + "'; only arena tensors can be written");
  return view_ptr(v);
}

void PlanExecutor::read_tensor(int64_t id, float* into, int64_t n) const {
  const TensorView& v = view(id);
  if (n != v.numel) fail("readTensor(" + std::to_string(id) + "): got a buffer of " + std::to_string(n) + " floats, the tensor holds " + std::to_string(v.numel));
  backend_->download(into, view_ptr(v), n);
}

void PlanExecutor::write_tensor(int64_t id, const float* from, int64_t n) {
  const TensorView& v = view(id);
  if (!v.arena) fail("tensor " + std::to_string(id) + " is a view of weight '" + weights_[v.weight].name + "'; only arena tensors can be written");
  if (n != v.numel) fail("writeTensor(" + std::to_string(id) + "): got " + std::to_string(n) + " floats, the tensor holds " + std::to_string(v.numel));
  backend_->upload(view_ptr(v), from, n);
}

PlanExecutor::RunRange PlanExecutor::resolve_run(const std::string& segment, int64_t begin, int64_t end) const {
  int si = -1;
  for (size_t s = 0; s < segments_.size(); ++s)
    if (segments_[s].name == segment) si = static_cast<int>(s);
  if (si < 0) {
    std::string have;
    for (auto& s : segments_) have += (have.empty() ? "" : ", ") + s.name;
    fail("no segment named '" + segment + "' (segments: " + have + ")");
  }
  const Segment& seg = segments_[si];
  RunRange r{si, 0, 1};
  if (seg.blocks) {
    int64_t nb = static_cast<int64_t>(seg.ranges.size());
    r.begin = begin < 0 ? 0 : begin;
    r.end = end < 0 ? nb : end;
    if (r.begin > r.end || r.end > nb)
      fail("segment '" + segment + "': block range [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
           ") is out of [0, " + std::to_string(nb) + "]");
  } else if (begin > 0 || end > 1) {
    fail("segment '" + segment + "' has no blocks; call run('" + segment + "') without a block range");
  }
  for (int64_t b = r.begin; b < r.end; ++b)
    for (int w : seg.ranges[b].weights)
      if (!weights_[w].data)
        fail("weight '" + weights_[w].name + "' is not bound (needed by " +
             (seg.blocks ? "block '" + seg.ranges[b].name + "' of " : std::string()) + "segment '" + segment +
             "'); call bindWeight('" + weights_[w].name + "', data) first");
  return r;
}

void PlanExecutor::execute(const RunRange& r) {
  const Segment& seg = segments_[r.segment];
  if (r.begin >= r.end) return;
  size_t b = seg.ranges[r.begin].begin;
  size_t e = seg.ranges[r.end - 1].end;
  const Op* ops = ops_.data();
  Backend& be = *backend_;
  for (size_t k = b; k < e; ++k) be.launch(ops[k].fn, ops[k].args);
  be.synchronize();  // a device backend reports a failed launch here
}

std::vector<std::string> PlanExecutor::segment_names() const {
  std::vector<std::string> out;
  for (auto& s : segments_) out.push_back(s.name);
  return out;
}

int64_t PlanExecutor::segment_blocks(int seg) const { return segments_[seg].blocks ? (int64_t)segments_[seg].ranges.size() : 0; }

}  // namespace ditforge
