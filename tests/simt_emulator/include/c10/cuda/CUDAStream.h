// Stand-in for c10/cuda/CUDAStream.h under the SIMT emulator (tests/simt_emulator/simt.h).
#pragma once

#include "simt.h"

namespace c10::cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }
}  // namespace c10::cuda
