#include "registry_index.h"

#include <algorithm>
#include <cstring>

namespace ditforge {

const Registry& registry() {
  static const Registry reg = [] {
    Registry r;
    for (int f = 0; ditforge_cpu_tables[f]; ++f) {
      for (const KernelEntry* e = ditforge_cpu_tables[f]; e->name; ++e) {
        if (!r.by_name.count(e->name)) r.names.push_back(e->name);
        r.by_name[e->name] = e->fn;
      }
    }
    for (const ElementwiseInfo* e = ditforge_cpu_elementwise_info; e->name; ++e) r.ew_arity[e->name] = e->arity;
    return r;
  }();
  return reg;
}

KernelFn Registry::find(const std::string& name) const {
  auto it = by_name.find(name);
  return it == by_name.end() ? nullptr : it->second;
}

int Registry::arity(const std::string& name) const {
  auto it = ew_arity.find(name);
  return it == ew_arity.end() ? -1 : it->second;
}

}  // namespace ditforge
