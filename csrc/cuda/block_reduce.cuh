// Warp- and block-wide max of comparison keys (paint_rules.h: larger key wins, ties already broken
// by the flat index inside the key, so max is the whole argmax).
#pragma once

#include <cstdint>

#include "../paint_rules.h"

namespace cpia {

__device__ __forceinline__ Key warp_max(Key value) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const Key other = __shfl_down_sync(0xFFFFFFFFu, value, offset);
    value = other > value ? other : value;
  }
  return __shfl_sync(0xFFFFFFFFu, value, 0);
}

// Every thread of the block must call it; every thread gets the block's max.
// `scratch` holds at least 32 keys of shared memory.
__device__ __forceinline__ Key block_max(Key value, Key* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  value = warp_max(value);
  __syncthreads();  // the previous call's result has been read by everyone
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < warps ? scratch[lane] : kNoCandidate;
    value = warp_max(value);
    if (lane == 0) scratch[0] = value;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace cpia
