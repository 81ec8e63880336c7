// Argument validation for catalogue kernels (docs/architecture.md §2): counts, required tensors and the
// minimum number of floats every tensor slot must hold for the given integer parameters.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ditforge {

struct TensorArg {
  bool present = false;
  int64_t numel = 0;  // floats available from the pointer on
};

// Returns "" when the call is valid, otherwise a message (without the kernel name prefix).
// ew_arity: arity for elementwise kernels (from ditforge_cpu_elementwise_info), -1 otherwise.
// Kernels not in the catalogue and without arity are accepted with only the generic limits.
// `needs`: when given and the call is valid, the floats every slot needs (what a test sizes its buffers by).
std::string validate_kernel_args(const std::string& name, int ew_arity, int nt, const TensorArg* t, int ni,
                                 const int64_t* i, int nf, std::vector<int64_t>* needs = nullptr);

}  // namespace ditforge
