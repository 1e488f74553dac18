// Stand-in for c10/cuda/CUDAException.h under the SIMT emulator (tests/simt_emulator/simt.h).
#pragma once

#include "simt.h"

#define C10_CUDA_CHECK(expression) TORCH_CHECK((expression) == cudaSuccess, "simt: " #expression " failed")
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)
