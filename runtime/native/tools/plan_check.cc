// plan_check: runs one plan.json on the CPU backend and on another backend (CUDA) with the same weights and
// inputs, and prints the relative L2 of every output and the milliseconds per run on each. Needs no Node:
// scripts/gpu-check.sh builds it with plain CMake on a GPU machine.
//
//   plan_check <plan.json> [--weights F.safetensors] [--device cuda] [--iters N] [--seed S] [--tol X] [--threads T]
//
// Weights come from a safetensors file (F32 / BF16 / F16, converted to float32), else seeded random values
// (so a full-size architecture can be timed without its checkpoint). Exit code 1 when an output differs by
// more than --tol (relative L2; default 1e-4, the fp32 bound of the device-layer checks).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "executor.h"
#include "json.h"

namespace df = ditforge;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

float half_to_float(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const uint32_t s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t u;
  if (e == 0) {
    if (m == 0) u = s;
    else {  // subnormal
      int ee = -1;
      uint32_t mm = m;
      do {
        ++ee;
        mm <<= 1;
      } while (!(mm & 0x400));
      u = s | static_cast<uint32_t>(127 - 15 - ee) << 23 | (mm & 0x3ff) << 13;
    }
  } else if (e == 31) u = s | 0x7f800000u | m << 13;
  else u = s | (e + 112) << 23 | m << 13;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/** the float32 tensors of a safetensors file, by name */
std::unordered_map<std::string, std::vector<float>> read_safetensors(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 8) throw std::runtime_error(path + ": too short for a safetensors file");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (8 + n > bytes.size()) throw std::runtime_error(path + ": header runs past the end of the file");
  const df::json::Value h = df::json::parse(bytes.substr(8, n));
  std::unordered_map<std::string, std::vector<float>> out;
  const char* data = bytes.data() + 8 + n;
  for (const auto& kv : h.obj) {
    if (kv.first == "__metadata__") continue;
    const auto& t = kv.second;
    const std::string dtype = t.get("dtype")->str;
    const auto& off = t.get("data_offsets")->arr;
    const size_t b = static_cast<size_t>(off[0].num), e = static_cast<size_t>(off[1].num);
    std::vector<float> v;
    if (dtype == "F32") {
      v.resize((e - b) / 4);
      std::memcpy(v.data(), data + b, e - b);
    } else if (dtype == "BF16" || dtype == "F16") {
      v.resize((e - b) / 2);
      for (size_t k = 0; k < v.size(); ++k) {
        uint16_t hv;
        std::memcpy(&hv, data + b + 2 * k, 2);
        v[k] = half_to_float(hv, dtype == "BF16");
      }
    } else {
      continue;  // integer buffers (position ids, ...) are no plan weights
    }
    out[kv.first] = std::move(v);
  }
  return out;
}

/** a small deterministic generator: uniform in [-a, a) */
struct Lcg {
  uint64_t s;
  float next(float a) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return a * (static_cast<float>((s >> 40) & 0xffffff) / 8388608.0f - 1.0f);
  }
};

struct Run {
  std::vector<std::vector<float>> outputs;
  double ms = 0;
};

Run run_plan(const std::string& plan_text, const df::json::Value& plan, const std::string& device, int threads,
             const std::unordered_map<std::string, std::vector<float>>& weights, const std::unordered_map<std::string, std::vector<float>>& inputs, int iters) {
  df::PlanExecutor ex(plan_text, df::make_backend(device, threads));
  for (const auto& w : plan.get("weights")->arr) {
    const std::string& name = w.get("name")->str;
    auto it = weights.find(name);
    ex.bind_weight(name, const_cast<float*>(it->second.data()), static_cast<int64_t>(it->second.size()));
  }
  for (const auto& kv : inputs) {
    const auto& io = ex.input(kv.first);
    ex.write_tensor(io.tensor, kv.second.data(), io.numel);
  }
  std::vector<df::PlanExecutor::RunRange> ranges;
  for (const auto& s : ex.segment_names()) ranges.push_back(ex.resolve_run(s, -1, -1));
  for (const auto& r : ranges) ex.execute(r);  // warm-up (and the result: the inputs are not changed by a run)
  Run out;
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < iters; ++k)
    for (const auto& r : ranges) ex.execute(r);
  out.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
  for (const auto& o : plan.get("outputs")->arr) {
    const auto& io = ex.output(o.get("name")->str);
    std::vector<float> v(static_cast<size_t>(io.numel));
    ex.read_tensor(io.tensor, v.data(), io.numel);
    out.outputs.push_back(std::move(v));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: plan_check <plan.json> [--weights F.safetensors] [--device cuda] [--iters N] [--seed S] [--tol X] [--threads T]\n");
    return 2;
  }
  std::string plan_path = argv[1], weights_path, device = "cuda";
  int iters = 3, threads = 8;
  uint64_t seed = 1;
  double tol = 1e-4;
  for (int k = 2; k + 1 < argc; k += 2) {
    const std::string a = argv[k], v = argv[k + 1];
    if (a == "--weights") weights_path = v;
    else if (a == "--device") device = v;
    else if (a == "--iters") iters = std::stoi(v);
    else if (a == "--seed") seed = std::stoull(v);
    else if (a == "--tol") tol = std::stod(v);
    else if (a == "--threads") threads = std::stoi(v);
    else {
      std::fprintf(stderr, "plan_check: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const std::string text = read_file(plan_path);
    const df::json::Value plan = df::json::parse(text);
    std::unordered_map<std::string, std::vector<float>> weights = weights_path.empty() ? decltype(weights){} : read_safetensors(weights_path);
    Lcg g{seed};
    for (const auto& w : plan.get("weights")->arr) {
      const std::string& name = w.get("name")->str;
      int64_t n = 1;
      for (const auto& d : w.get("shape")->arr) n *= static_cast<int64_t>(d.num);
      auto it = weights.find(name);
      if (it != weights.end() && static_cast<int64_t>(it->second.size()) == n) continue;
      if (!weights_path.empty()) throw std::runtime_error(weights_path + ": no float tensor \"" + name + "\" of " + std::to_string(n) + " values");
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& x : v) x = g.next(0.05f);
      weights[name] = std::move(v);
    }
    std::unordered_map<std::string, std::vector<float>> inputs;
    for (const auto& io : plan.get("inputs")->arr) {
      int64_t n = 1;
      for (const auto& d : io.get("shape")->arr) n *= static_cast<int64_t>(d.num);
      std::vector<float> v(static_cast<size_t>(n));
      // small non-negative integers stay valid for id / mask / position inputs; timesteps in [0, 1000)
      const std::string& name = io.get("name")->str;
      const bool ids = name.find("ids") != std::string::npos || name.find("mask") != std::string::npos;
      for (size_t k = 0; k < v.size(); ++k) v[k] = ids ? (name.find("mask") != std::string::npos ? 1.0f : static_cast<float>(k % 7)) : name == "timestep" ? 500.0f : g.next(1.0f);
      inputs[name] = std::move(v);
    }
    const Run cpu = run_plan(text, plan, "cpu", threads, weights, inputs, iters);
    const Run dev = run_plan(text, plan, device, threads, weights, inputs, iters);
    bool ok = true;
    std::printf("%-44s %-24s %12s %12s %12s %8s\n", "plan", "output", "relL2", "cpu ms", (device + " ms").c_str(), "speedup");
    const auto& outs = plan.get("outputs")->arr;
    for (size_t o = 0; o < outs.size(); ++o) {
      double num = 0, den = 0;
      for (size_t k = 0; k < cpu.outputs[o].size(); ++k) {
        const double d = static_cast<double>(dev.outputs[o][k]) - cpu.outputs[o][k];
        num += d * d;
        den += static_cast<double>(cpu.outputs[o][k]) * cpu.outputs[o][k];
      }
      const double e = std::sqrt(num / (den > 0 ? den : 1));
      if (!(e <= tol)) ok = false;
      std::printf("%-44s %-24s %12.3e %12.3f %12.3f %7.1fx\n", plan_path.c_str(), outs[o].get("name")->str.c_str(), e, cpu.ms, dev.ms, cpu.ms / dev.ms);
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "plan_check: %s\n", e.what());
    return 2;
  }
}
