// Kernel tables produced by the kernel renderer (generated/kernels/cpu/registry.cpp).
#pragma once
#include "ditforge/kernel_abi.h"

namespace ditforge {
struct ElementwiseInfo {
  const char* name;
  int arity;  // number of input tensors (the output is t[arity])
};
}  // namespace ditforge

// Every family's table, terminated by nullptr (generated/kernels/cpu/registry.cpp).
extern "C" const ditforge::KernelEntry* const ditforge_cpu_tables[];
extern "C" const char* const ditforge_cpu_table_names[];
// Arity of every elementwise kernel (add, mul, silu, gelu_tanh, ew_<hash>), terminated by {nullptr, 0}.
extern "C" const ditforge::ElementwiseInfo ditforge_cpu_elementwise_info[];
