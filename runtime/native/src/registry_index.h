#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "ditforge/registry.h"

namespace ditforge {

struct Registry {
  std::vector<std::string> names;  // registration order
  std::unordered_map<std::string, KernelFn> by_name;
  std::unordered_map<std::string, int> ew_arity;
  KernelFn find(const std::string& name) const;
  int arity(const std::string& name) const;  // -1 if not elementwise
};

const Registry& registry();

}  // namespace ditforge
