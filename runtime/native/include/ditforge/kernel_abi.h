// The one calling convention every generated kernel uses (docs/architecture.md §2).
// The plan interpreter fills KernelArgs from a plan op: tensor views, integer and float params.
#pragma once
#include <cstdint>

namespace ditforge {

class ThreadPool;

struct KernelArgs {
  float* t[8];     // tensors, in the order the kernel catalogue lists them; nullptr = absent
  int64_t i[16];   // integer params
  float f[8];      // float params
};

struct KernelCtx {
  ThreadPool* pool;  // never null; a pool of 1 thread runs inline
};

using KernelFn = void (*)(const KernelArgs&, KernelCtx&);

struct KernelEntry {
  const char* name;
  KernelFn fn;
};

}  // namespace ditforge
