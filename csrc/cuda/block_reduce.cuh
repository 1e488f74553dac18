// Warp- and block-wide max of comparison keys (paint_rules.h: larger key wins, ties already broken
// by the flat index inside the key, so max is the whole argmax and any order of combining gives it).
#pragma once

#include <cstdint>

#include "../paint_rules.h"

namespace cpia {

// Every lane gets the warp's max.
__device__ __forceinline__ Key warp_max(Key value) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const Key other = __shfl_xor_sync(0xFFFFFFFFu, value, offset);
    value = other > value ? other : value;
  }
  return value;
}

// Block-wide max with one block barrier a call: each warp publishes its max, and after the barrier
// every warp reduces all of them itself, so no second barrier hands a result back. Calls use two
// sets of slots in turn: a call writes the set that the call before the last one read, and the last
// call's barrier lies between those reads and these writes. The slots are the function's own shared
// memory, so a kernel has one BlockMax (two would take turns on the same slots).
class BlockMax {
 public:
  // Every thread of the block must make the same calls; every thread gets the block's max.
  __device__ Key operator()(Key value) {
    __shared__ Key published[2][32];
    Key* const slots = published[turn_];
    turn_ ^= 1;
    const int lane = threadIdx.x & 31;
    const int warps = (blockDim.x + 31) >> 5;
    value = warp_max(value);
    if (lane == 0) slots[threadIdx.x >> 5] = value;
    __syncthreads();
    return warp_max(lane < warps ? slots[lane] : kNoCandidate);
  }

 private:
  int turn_ = 0;
};

}  // namespace cpia
