// Penetration's index: at every location, the responses of its channels under a 16-ary max tree,
// so the best channel of a location is found by reading one 64-byte line per level (O(log C)) and
// taking a channel out repairs one path. Without it, every stroke scans the C channels of its
// centre. Channels are taken out by the caller; it may leave channels in that are on by now and
// drop them when they surface.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../paint_rules.h"
#include "float_lanes.h"
#include "scratch_buffer.h"

namespace cpia {

class OffChannelTree {
 public:
  static constexpr int64_t kFanout = 16;
  static constexpr float kTakenOut = -std::numeric_limits<float>::infinity();  // Y is finite

  // Leaves and nodes are left unwritten: fill() sets every location before it is asked.
  OffChannelTree(int64_t channels, int64_t locations) : C_(channels) {
    for (int64_t width = C_;; width = (width + kFanout - 1) / kFanout) {
      widths_.push_back(width);
      levels_.emplace_back(width * locations);
      if (width == 1) break;
    }
  }

  // Sets locations [first, first + count): channel c's response at location first + i is
  // responses[c * channel_stride + i] (kTakenOut for a channel that starts taken out).
  void fill(int64_t first, int64_t count, const float* responses, int64_t channel_stride) {
    float* leaves = level_row(0, first);
    // 4 channels x 4 locations at a time: four contiguous reads, one register transpose, four
    // contiguous writes; the channels past the last multiple of 4, and locations likewise, one by one.
    const int64_t c_blocks = C_ / kLanes * kLanes, i_blocks = count / kLanes * kLanes;
    for (int64_t c0 = 0; c0 < c_blocks; c0 += kLanes) {
      for (int64_t i0 = 0; i0 < i_blocks; i0 += kLanes) {
        FloatLanes block[kLanes];
        for (int64_t k = 0; k < kLanes; ++k) block[k] = load_lanes(responses + (c0 + k) * channel_stride + i0);
        transpose_lanes(block);
        for (int64_t k = 0; k < kLanes; ++k) store_lanes(leaves + (i0 + k) * C_ + c0, block[k]);
      }
    }
    for (int64_t i = 0; i < count; ++i) {
      const int64_t c_begin = i < i_blocks ? c_blocks : 0;
      for (int64_t c = c_begin; c < C_; ++c) leaves[i * C_ + c] = responses[c * channel_stride + i];
    }
    for (int64_t at = first; at < first + count; ++at) {
      for (size_t level = 1; level < levels_.size(); ++level) {
        float* nodes = level_row(level, at);
        for (int64_t node = 0; node < widths_[level]; ++node) nodes[node] = children_max(level, at, node);
      }
    }
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

  // The channel of highest response still in at `at`, ties to the smaller channel (channel
  // precedence, paint_rules.h); -1 if none is left. Each node holds the exact maximum of its
  // children, so the leftmost child equal to it holds the leftmost leaf of that value.
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
    if (last - first == kFanout) {
      FloatLanes lanes = load_lanes(children + first);
      for (int64_t k = kLanes; k < kFanout; k += kLanes) lanes = max_lanes(lanes, load_lanes(children + first + k));
      return max_of_lanes(lanes);
    }
    float best = kTakenOut;
    for (int64_t child = first; child < last; ++child) best = std::max(best, children[child]);
    return best;
  }

  const int64_t C_;
  std::vector<int64_t> widths_;  // entries per location at each level; level 0 holds the responses
  std::vector<ScratchBuffer<float>> levels_;
};

}  // namespace cpia
