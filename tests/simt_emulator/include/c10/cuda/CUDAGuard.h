// Stand-in for c10/cuda/CUDAGuard.h under the SIMT emulator (tests/simt_emulator/simt.h).
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda
