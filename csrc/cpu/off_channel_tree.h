// Penetration's index: at every location, the responses of its channels under a 16-ary max tree,
// so the best channel of a location is found by reading one 64-byte line per level (O(log C)) and
// taking a channel out repairs one path. Without it, every stroke scans the C channels of its
// centre. Channels are taken out by the caller; it may leave channels in that are on by now and
// drop them when they surface.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../paint_rules.h"
#include "scratch_buffer.h"

namespace cpia {

class OffChannelTree {
 public:
  static constexpr int64_t kFanout = 16;
  static constexpr float kTakenOut = -std::numeric_limits<float>::infinity();  // Y is finite

  // y is (C, H*W); channels where `taken_out` (same shape, may be null) is set start taken out.
  OffChannelTree(const float* y, const bool* taken_out, int64_t channels, int64_t locations)
      : C_(channels), HW_(locations) {
    for (int64_t width = C_;; width = (width + kFanout - 1) / kFanout) {
      widths_.push_back(width);
      levels_.emplace_back(width * HW_);  // uninitialised: every entry is written below
      if (width == 1) break;
    }
    // Blocks of 8 locations x 8 channels keep the transposition's power-of-two strides off shared
    // cache sets; the upper levels of a block are built while its responses are still in cache.
    constexpr int64_t kBlock = 8;
    at::parallel_for(0, (HW_ + kBlock - 1) / kBlock, 64, [&](int64_t begin, int64_t end) {
      for (int64_t at0 = begin * kBlock; at0 < std::min(end * kBlock, HW_); at0 += kBlock) {
        const int64_t at1 = std::min(at0 + kBlock, HW_);
        float* leaves = levels_[0].get();
        for (int64_t c0 = 0; c0 < C_; c0 += kBlock) {
          for (int64_t c = c0; c < std::min(c0 + kBlock, C_); ++c) {
            for (int64_t at = at0; at < at1; ++at) {
              leaves[at * C_ + c] = taken_out != nullptr && taken_out[c * HW_ + at] ? kTakenOut : y[c * HW_ + at];
            }
          }
        }
        for (int64_t at = at0; at < at1; ++at) {
          for (size_t level = 1; level < levels_.size(); ++level) {
            for (int64_t node = 0; node < widths_[level]; ++node) level_row(level, at)[node] = children_max(level, at, node);
          }
        }
      }
    });
  }

  // Takes channel c out at location `at` (no-op if it already was).
  void remove(int64_t at, int64_t c) {
    float* leaf = &level_row(0, at)[c];
    float removed = *leaf;
    if (removed == kTakenOut) return;
    *leaf = kTakenOut;
    int64_t child = c;
    for (size_t level = 1; level < levels_.size(); ++level) {
      const int64_t node = child / kFanout;
      float& value = level_row(level, at)[node];
      if (removed < value) return;  // the removed response was not this node's maximum
      const float updated = children_max(level, at, node);
      if (updated == value) return;
      removed = value;
      value = updated;
      child = node;
    }
  }

  // The channel of highest response still in at `at`, ties to the smaller channel
  // (channel_precedes); -1 if none is left. Each node holds the exact maximum of its children, so the leftmost
  // child equal to it holds the leftmost leaf of that value.
  int64_t best(int64_t at) const {
    const size_t top = levels_.size() - 1;
    float target = level_row(top, at)[0];
    if (target == kTakenOut) return -1;
    int64_t node = 0;
    for (size_t level = top; level >= 1; --level) {
      const float* children = level_row(level - 1, at);
      int64_t child = node * kFanout;
      while (children[child] != target) {
        ++child;
        TORCH_INTERNAL_ASSERT_DEBUG_ONLY(child < std::min((node + 1) * kFanout, widths_[level - 1]),
                                         "OffChannelTree: a node lost its children's maximum");
      }
      node = child;
    }
    return node;
  }

 private:
  float* level_row(size_t level, int64_t at) const { return levels_[level].get() + at * widths_[level]; }

  float children_max(size_t level, int64_t at, int64_t node) const {
    const float* children = level_row(level - 1, at);
    const int64_t first = node * kFanout, last = std::min(first + kFanout, widths_[level - 1]);
    float best = children[first];
    for (int64_t child = first + 1; child < last; ++child) best = children[child] > best ? children[child] : best;
    return best;
  }

  const int64_t C_, HW_;
  std::vector<int64_t> widths_;  // entries per location at each level; level 0 holds the responses
  std::vector<ScratchBuffer<float>> levels_;
};

}  // namespace cpia
