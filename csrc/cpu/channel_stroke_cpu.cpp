// Channel stroke on the CPU: the whole greedy loop of one image in one call, images of a batch in
// parallel. Semantics: docs/algorithm.md; per-element rules: paint_rules.h.
//
// Data structure. The argmax runs over 64-bit keys (score, flat index). Y is static, so for every
// channel the best unpenalised candidate of each 8x8 tile is kept in the leaves of a per-channel
// max segment tree, whose roots feed a segment tree over channels. A stroke removes candidates only
// (switched-on elements, saturated locations), and a tile is rescanned only when it loses its best
// element (saturated locations lazily, when their element surfaces as a best). The penalised score
// differs from Y on the cursor channel alone, so each step takes
//   max( best over channels != c*           -- channel tree, O(log C)
//        best penalised over channel c*     -- branch and bound down c*'s tile tree )
// and penetration asks a per-location tree over the channels (off_channel_tree.h), O(log C), so no
// step touches C*H*W elements, nor the C channels of one location.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "../brush.h"
#include "../op_checks.h"
#include "../paint_rules.h"
#include "float_lanes.h"
#include "float_mode.h"
#include "off_channel_tree.h"
#include "scratch_buffer.h"

namespace cpia {
namespace {

using StrokeRecord = std::array<int32_t, kStrokeColumns>;

// Max segment tree of fixed size over `leaves` keys (padded to a power of two).
class KeyTree {
 public:
  KeyTree() = default;
  explicit KeyTree(int64_t leaves) {
    width_ = 1;
    while (width_ < leaves) width_ <<= 1;
    nodes_.assign(2 * width_, kNoCandidate);
  }
  Key leaf(int64_t i) const { return nodes_[width_ + i]; }
  Key root() const { return nodes_[1]; }
  Key node(int64_t i) const { return nodes_[i]; }
  int64_t width() const { return width_; }
  // Sets leaf i; returns true if the root changed.
  bool set(int64_t i, Key key) {
    int64_t node = width_ + i;
    if (nodes_[node] == key) return false;
    const Key old_root = nodes_[1];
    nodes_[node] = key;
    for (node >>= 1; node >= 1; node >>= 1) {
      const Key merged = std::max(nodes_[2 * node], nodes_[2 * node + 1]);
      if (nodes_[node] == merged) break;
      nodes_[node] = merged;
    }
    return nodes_[1] != old_root;
  }
  // Rebuilds inner nodes after the leaves were written directly.
  void rebuild() {
    for (int64_t node = width_ - 1; node >= 1; --node) {
      nodes_[node] = std::max(nodes_[2 * node], nodes_[2 * node + 1]);
    }
  }
  Key* leaves() { return nodes_.data() + width_; }
  // Max over leaves [begin, end).
  Key range_max(int64_t begin, int64_t end) const {
    Key best = kNoCandidate;
    for (begin += width_, end += width_; begin < end; begin >>= 1, end >>= 1) {
      if (begin & 1) best = std::max(best, nodes_[begin++]);
      if (end & 1) best = std::max(best, nodes_[--end]);
    }
    return best;
  }

 private:
  int64_t width_ = 1;
  std::vector<Key> nodes_;
};

struct StrokeParams {
  int32_t tau;
  float m;
  int32_t p;
  float min_response;
  int64_t max_strokes;  // < 0: no limit
  double max_coverage;  // < 0: no limit
  const float* distance_weights;
  int64_t distance_weights_size;
  const std::vector<BrushOffset>* brush;
};

class StrokePainter {
 public:
  // `init_mask` may be null (nothing on at the start); `channel_counts` (C) receives, per channel, the
  // elements on at allowed locations at the end.
  StrokePainter(const float* y, const bool* allowed, const bool* init_mask, int32_t* order, int64_t* channel_counts,
                int64_t channels, int64_t height, int64_t width, const StrokeParams& params)
      : order_(order),
        channel_counts_(channel_counts),
        C_(channels),
        H_(height),
        W_(width),
        HW_(height * width),
        params_(params),
        tiles_h_((height + kTileH - 1) / kTileH),
        tiles_w_((width + kTileW - 1) / kTileW),
        tiles_(tiles_h_ * tiles_w_),
        channel_stride_(tiles_ * kTileElements + kChannelPad),
        open_responses_(channels * channel_stride_),
        channels_on_(tiles_ * kTileElements, 0),
        tile_dirty_(channels * tiles_, 0),
        channel_trees_(channels, KeyTree(tiles_)),
        channel_best_(channels) {
    // Threads only pay off with enough elements each (small images stay on one thread).
    constexpr int64_t kElementsPerTask = int64_t{1} << 16;
    if (init_mask != nullptr) count_initially_on(allowed, init_mask, kElementsPerTask);
    // One pass over Y, channel by channel as it is laid out: the working copy, the tile leaves of
    // each channel's tree, and the largest response at allowed locations.
    std::vector<float> channel_max(C_, kClosed);
    at::parallel_for(0, C_, std::max<int64_t>(1, kElementsPerTask / HW_), [&](int64_t begin, int64_t end) {
      const DenormalsKept float_mode;
      for (int64_t c = begin; c < end; ++c) channel_max[c] = prepare_channel(y, allowed, init_mask, c);
    });
    threshold_ = response_threshold(params_.min_response, *std::max_element(channel_max.begin(), channel_max.end()));
    if (params_.p > 1) {
      off_channels_ = std::make_unique<OffChannelTree>(C_, tiles_ * kTileElements);
      at::parallel_for(0, tiles_, std::max<int64_t>(1, kElementsPerTask / (C_ * kTileElements)),
                       [&](int64_t begin, int64_t end) {
                         const DenormalsKept float_mode;
                         for (int64_t t = begin; t < end; ++t) {
                           const int64_t first = t * kTileElements;
                           off_channels_->fill(first, kTileElements, &response(0, first), channel_stride_);
                         }
                       });
    }
    for (int64_t h = 0; h < H_; ++h) {
      for (int64_t w = 0; w < W_; ++w) {
        allowed_count_ += allowed[h * W_ + w];
        covered_ += allowed[h * W_ + w] && channels_on_[cell_of(h, w)] > 0;
      }
    }
    for (int64_t c = 0; c < C_; ++c) channel_best_.leaves()[c] = channel_trees_[c].root();
    channel_best_.rebuild();
  }

  StopReason run(std::vector<StrokeRecord>& strokes) {
    for (int64_t stroke = 0;; ++stroke) {
      if (params_.max_strokes >= 0 && stroke >= params_.max_strokes) return kStopMaxStrokes;
      if (params_.max_coverage >= 0 && coverage_reached(covered_, allowed_count_, params_.max_coverage)) {
        return kStopMaxCoverage;
      }
      const Key best = best_candidate();
      if (best == kNoCandidate) return kStopExhausted;
      const uint32_t flat = key_flat_index(best);
      const auto [c, h, w] = element_of(flat);
      TORCH_INTERNAL_ASSERT(is_candidate_at(c, cell_of(h, w)), "channel_stroke: stale candidate index ", flat);
      if (below_min_response(response(c, cell_of(h, w)), threshold_)) return kStopMinResponse;
      strokes.push_back(paint_stroke(c, h, w, static_cast<int32_t>(stroke)));
      // A candidate centre always switches on; a stroke that does not would repeat forever.
      TORCH_INTERNAL_ASSERT(strokes.back()[kStrokePixelsOn] > 0, "channel_stroke: stroke ", stroke,
                            " switched nothing on");
      cursor_c_ = c;
      cursor_h_ = h;
      cursor_w_ = w;
    }
  }

 private:
  // Channels of the working copy are one cache line further apart than their size: with sizes
  // of 2^k lines, reading a location across channels would map every line to one cache set.
  static constexpr int64_t kChannelPad = 64 / sizeof(float);
  // Marks elements that cannot become candidates again: switched on, or at a location not allowed.
  static constexpr float kClosed = -std::numeric_limits<float>::infinity();  // Y is finite
  static_assert(kClosed == OffChannelTree::kTakenOut, "the penetration index is filled from the working copy");

  // Elements are kept tile-major (paint_rules.h tiles): tile t of channel c holds its 64 elements in
  // raster order, padded past the image border. A stroke's neighbourhood and the rescan of its tile
  // then read a few adjacent cache lines instead of one line per image row.
  int64_t cell_of(int64_t h, int64_t w) const {
    return ((h / kTileH) * tiles_w_ + w / kTileW) * kTileElements + (h % kTileH) * kTileW + w % kTileW;
  }
  float& response(int64_t c, int64_t cell) { return open_responses_[c * channel_stride_ + cell]; }
  float response(int64_t c, int64_t cell) const { return open_responses_[c * channel_stride_ + cell]; }
  uint32_t flat_index(int64_t c, int64_t h, int64_t w) const { return static_cast<uint32_t>(c * HW_ + h * W_ + w); }
  struct Element {
    int64_t c, h, w;
  };
  Element element_of(uint32_t flat) const { return {flat / HW_, (flat % HW_) / W_, flat % W_}; }
  // Image row and column of element i (raster order) of tile t.
  int64_t tile_row(int64_t t, int64_t i) const { return (t / tiles_w_) * kTileH + i / kTileW; }
  int64_t tile_col(int64_t t, int64_t i) const { return (t % tiles_w_) * kTileW + i % kTileW; }

  // open_responses_ holds kClosed where the location is not allowed or the element is on, which
  // are the candidate rule's first two terms.
  bool is_candidate_at(int64_t c, int64_t cell) const {
    return is_candidate(response(c, cell) != kClosed, /*on=*/false, channels_on_[cell], params_.tau);
  }

  // Channels on at the start: per location (channels_on_) and per channel at allowed locations.
  void count_initially_on(const bool* allowed, const bool* init_mask, int64_t elements_per_task) {
    // Threads own rows of tiles, so each updates the counts of its own locations.
    at::parallel_for(0, tiles_h_, std::max<int64_t>(1, elements_per_task / (C_ * kTileH * W_)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t c = 0; c < C_; ++c) {
                         for (int64_t h = begin * kTileH; h < std::min(end * kTileH, H_); ++h) {
                           for (int64_t w = 0; w < W_; ++w) {
                             channels_on_[cell_of(h, w)] += init_mask[c * HW_ + h * W_ + w];
                           }
                         }
                       }
                     });
    at::parallel_for(0, C_, std::max<int64_t>(1, elements_per_task / HW_), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        int64_t on_at_allowed = 0;
        for (int64_t at = 0; at < HW_; ++at) on_at_allowed += init_mask[c * HW_ + at] & allowed[at];
        channel_counts_[c] += on_at_allowed;
      }
    });
  }

  // Channel c of the working copy, row by row, and its tile tree (whose leaves need channels_on_
  // complete). Returns its largest response at allowed locations (init_mask elements included).
  float prepare_channel(const float* y, const bool* allowed, const bool* init_mask, int64_t c) {
    const bool padded = H_ % kTileH != 0 || W_ % kTileW != 0;
    if (padded) std::fill(&response(c, 0), &response(c, 0) + tiles_ * kTileElements, kClosed);
    FloatLanes lane_max = splat(kClosed);
    for (int64_t h = 0; h < H_; ++h) {
      const int64_t at = h * W_;
      const bool* init_row = init_mask != nullptr ? init_mask + c * HW_ + at : nullptr;
      for (int64_t w0 = 0; w0 < W_; w0 += kTileW) {
        copy_open(y + c * HW_ + at + w0, allowed + at + w0, init_row != nullptr ? init_row + w0 : nullptr,
                  std::min<int64_t>(kTileW, W_ - w0), &response(c, cell_of(h, w0)), lane_max);
      }
    }
    Key* leaves = channel_trees_[c].leaves();
    for (int64_t t = 0; t < tiles_; ++t) leaves[t] = scan_tile(c, t);
    channel_trees_[c].rebuild();
    return max_of_lanes(lane_max);
  }

  // One tile row: out[i] = y[i], or kClosed where the location is not allowed or the element is
  // on at the start (init_mask may be null); lane_max takes y at the allowed locations. A row cut
  // by the image border (count < kTileW) goes through padded copies.
  static void copy_open(const float* y, const bool* allowed, const bool* init_mask, int64_t count, float* out,
                        FloatLanes& lane_max) {
    if (count < kTileW) {
      float y_row[kTileW], out_row[kTileW];
      bool allowed_row[kTileW] = {}, init_row[kTileW] = {};
      std::copy(y, y + count, y_row);
      std::fill(y_row + count, y_row + kTileW, kClosed);
      std::copy(allowed, allowed + count, allowed_row);
      if (init_mask != nullptr) std::copy(init_mask, init_mask + count, init_row);
      copy_open(y_row, allowed_row, init_row, kTileW, out_row, lane_max);
      std::copy(out_row, out_row + count, out);
      return;
    }
    const FloatLanes closed = splat(kClosed);
    for (int64_t i = 0; i < kTileW; i += kLanes) {
      const FloatLanes open = select(true_lanes(allowed + i), load_lanes(y + i), closed);
      lane_max = max_lanes(lane_max, open);
      store_lanes(out + i, init_mask != nullptr ? select(true_lanes(init_mask + i), closed, open) : open);
    }
  }

  // Best candidate key of tile t on channel c under the score `score_of(y, h, w)`. Ordered keys
  // rank by score, then by smaller flat index, which within a tile is the smaller position: the
  // first element of the highest score wins.
  template <typename Score>
  Key scan_tile(int64_t c, int64_t t, Score score_of) const {
    int64_t best_cell = -1;
    float best_score = 0.0f;
    for (int64_t i = 0; i < kTileElements; ++i) {
      if (!is_candidate_at(c, t * kTileElements + i)) continue;
      const float score = score_of(response(c, t * kTileElements + i), tile_row(t, i), tile_col(t, i));
      if (best_cell < 0 || score > best_score) {
        best_cell = i;
        best_score = score;
      }
    }
    if (best_cell < 0) return kNoCandidate;
    return make_key(best_score, flat_index(c, tile_row(t, best_cell), tile_col(t, best_cell)));
  }

  // The same for the unpenalised score Y, in SIMD lanes: the largest candidate response of each
  // lane, then the first candidate with the largest of them (== also matches -0.0 with +0.0, as
  // the float comparison above does). Closed elements hold kClosed, so of the candidate rule only
  // the channel count needs a test.
  Key scan_tile(int64_t c, int64_t t) const {
    const float* responses = open_responses_.get() + c * channel_stride_ + t * kTileElements;
    const int32_t* on = &channels_on_[t * kTileElements];
    const int32_t tau = params_.tau;
    FloatLanes lane_best = splat(kClosed);
    for (int64_t i = 0; i < kTileElements; i += kLanes) {
      const MaskLanes candidate = less_than(on + i, tau);  // is_candidate, for elements not closed
      lane_best = max_lanes(lane_best, select(candidate, load_lanes(responses + i), splat(kClosed)));
    }
    const float best = max_of_lanes(lane_best);
    if (best == kClosed) return kNoCandidate;
    int64_t i = 0;
    while (!(responses[i] == best && is_candidate(true, false, on[i], tau))) ++i;
    return make_key(best, flat_index(c, tile_row(t, i), tile_col(t, i)));
  }

  float weight_at(int64_t d2) const {
    return distance_weight(params_.distance_weights, params_.distance_weights_size, d2);
  }

  // Tile maxima may be stale: a location that reached tau is not swept out of its C channels' tiles
  // (that would cost O(C) per saturation); a stale maximum is only an upper bound, so the searches
  // stay exact, and a stale best is refreshed here when it surfaces.
  Key best_candidate() {
    for (;;) {
      const Key best_other = cursor_c_ < 0 ? channel_best_.root()
                                           : std::max(channel_best_.range_max(0, cursor_c_),
                                                      channel_best_.range_max(cursor_c_ + 1, C_));
      if (best_other != kNoCandidate) {
        const auto [c, h, w] = element_of(key_flat_index(best_other));
        const int64_t cell = cell_of(h, w);
        if (!is_candidate_at(c, cell)) {
          refresh_tile(c, cell / kTileElements);
          continue;
        }
      }
      return cursor_c_ < 0 ? best_other : best_on_cursor_channel(best_other);
    }
  }

  void refresh_tile(int64_t c, int64_t t) {
    if (channel_trees_[c].set(t, scan_tile(c, t))) channel_best_.set(c, channel_trees_[c].root());
  }

  // Pixel rectangle covering the tiles [first, last] (raster order) of a tree node.
  TileRect tile_range_rect(int64_t first, int64_t last) const {
    const int64_t row0 = first / tiles_w_, row1 = last / tiles_w_;
    const int64_t col0 = row0 == row1 ? first % tiles_w_ : 0;
    const int64_t col1 = row0 == row1 ? last % tiles_w_ : tiles_w_ - 1;
    return {row0 * kTileH, col0 * kTileW, std::min((row1 + 1) * kTileH, H_) - 1,
            std::min((col1 + 1) * kTileW, W_) - 1};
  }

  // Branch and bound down the cursor channel's tile tree: a node is entered only if the ceiling of
  // its penalised scores (paint_rules.h) beats the best key found so far, nearer-looking child
  // first, so the work grows with the tiles that can still win, not with H*W.
  Key best_on_cursor_channel(Key best) {
    const KeyTree& tree = channel_trees_[cursor_c_];
    const float* table = params_.distance_weights;
    const int64_t table_size = params_.distance_weights_size;
    auto ceiling = [&](int64_t node, int64_t first, int64_t last) {
      const Key node_best = tree.node(node);
      if (node_best == kNoCandidate) return kNoCandidate;
      return tile_ceiling_key(key_score(node_best), table, table_size, tile_range_rect(first, last), cursor_h_,
                              cursor_w_);
    };
    search_stack_.clear();
    search_stack_.push_back({1, 0, tree.width(), ceiling(1, 0, std::min(tree.width(), tiles_) - 1)});
    while (!search_stack_.empty()) {
      const SearchNode pending = search_stack_.back();
      search_stack_.pop_back();
      // <=, not <: padding tiles (past tiles_) keep the ceiling kNoCandidate and must never be scanned.
      if (pending.ceiling <= best) continue;
      if (pending.count == 1) {
        best = std::max(best, scan_tile(cursor_c_, pending.first, [&](float y, int64_t h, int64_t w) {
                          return penalised_score(y, weight_at(squared_distance(h, w, cursor_h_, cursor_w_)));
                        }));
        continue;
      }
      const int64_t half = pending.count / 2;
      SearchNode left{2 * pending.node, pending.first, half, kNoCandidate};
      SearchNode right{2 * pending.node + 1, pending.first + half, half, kNoCandidate};
      if (left.first < tiles_) left.ceiling = ceiling(left.node, left.first, std::min(left.first + half, tiles_) - 1);
      if (right.first < tiles_) {
        right.ceiling = ceiling(right.node, right.first, std::min(right.first + half, tiles_) - 1);
      }
      if (left.ceiling < right.ceiling) std::swap(left, right);  // pop the higher ceiling first
      search_stack_.push_back(right);
      search_stack_.push_back(left);
    }
    return best;
  }

  // The channel set P of a stroke at (h, w) whose leading channel is c: c, then the best channels
  // still off there. The index is not told about elements switched on elsewhere (that would cost a
  // cache miss per switched element); a channel it offers that is on by now is dropped from it here.
  void penetration_channels(int64_t c, int64_t h, int64_t w, std::vector<int64_t>& channels) {
    channels.assign(1, c);
    const int64_t cell = cell_of(h, w);
    const int64_t extra = penetration_extra(params_.p, params_.tau, channels_on_[cell]);
    if (extra <= 0) return;
    off_channels_->remove(cell, c);  // the stroke switches it on in any case
    while (static_cast<int64_t>(channels.size()) <= extra) {
      const int64_t next = off_channels_->best(cell);
      if (next < 0) break;
      off_channels_->remove(cell, next);
      if (response(next, cell) != kClosed) channels.push_back(next);
    }
  }

  // Marks tile t of channel c for a rescan if the candidate that is about to leave it is its best.
  void candidate_removed(int64_t c, int64_t h, int64_t w, int64_t cell) {
    const int64_t t = cell / kTileElements;
    if (channel_trees_[c].leaf(t) != make_key(response(c, cell), flat_index(c, h, w))) return;
    uint8_t& dirty = tile_dirty_[c * tiles_ + t];
    if (!dirty) {
      dirty = 1;
      dirty_tiles_.push_back(c * tiles_ + t);
    }
  }

  void switch_on(int64_t q, int64_t h, int64_t w, int64_t cell, int32_t stroke_index) {
    candidate_removed(q, h, w, cell);
    response(q, cell) = kClosed;
    order_[q * HW_ + h * W_ + w] = stroke_index;
    ++channel_counts_[q];
    if (channels_on_[cell]++ == 0) ++covered_;
  }

  StrokeRecord paint_stroke(int64_t c, int64_t h, int64_t w, int32_t stroke_index) {
    penetration_channels(c, h, w, stroke_channels_);
    int32_t pixels_on = 0;
    for (const int64_t q : stroke_channels_) {
      const float y_centre = response(q, cell_of(h, w));
      for (const BrushOffset& offset : *params_.brush) {
        const int64_t hh = h + offset.dh, ww = w + offset.dw;
        if (hh < 0 || hh >= H_ || ww < 0 || ww >= W_) continue;
        const int64_t cell = cell_of(hh, ww);
        if (!is_candidate_at(q, cell)) continue;
        const bool is_centre = offset.dh == 0 && offset.dw == 0;
        if (!brush_cell_switches_on(is_centre, response(q, cell), y_centre, params_.m)) continue;
        switch_on(q, hh, ww, cell, stroke_index);
        ++pixels_on;
      }
    }
    for (const int64_t tile_id : dirty_tiles_) {
      tile_dirty_[tile_id] = 0;
      refresh_tile(tile_id / tiles_, tile_id % tiles_);
    }
    dirty_tiles_.clear();
    return {static_cast<int32_t>(c), static_cast<int32_t>(h), static_cast<int32_t>(w), pixels_on,
            static_cast<int32_t>(stroke_channels_.size())};
  }

  int32_t* order_;
  int64_t* channel_counts_;
  const int64_t C_, H_, W_, HW_;
  const StrokeParams params_;
  const int64_t tiles_h_, tiles_w_, tiles_;
  const int64_t channel_stride_;
  ScratchBuffer<float> open_responses_;  // (C, tiles, 64) with channel_stride_: Y, or kClosed
  std::vector<int32_t> channels_on_;     // (tiles, 64)
  std::vector<uint8_t> tile_dirty_;
  std::vector<int64_t> dirty_tiles_;
  std::vector<KeyTree> channel_trees_;
  KeyTree channel_best_;
  std::unique_ptr<OffChannelTree> off_channels_;  // made only when p > 1
  std::vector<int64_t> stroke_channels_;
  struct SearchNode {  // tiles [first, first + count) of a tree node
    int64_t node, first, count;
    Key ceiling;
  };
  std::vector<SearchNode> search_stack_;
  int64_t allowed_count_ = 0;
  int64_t covered_ = 0;
  float threshold_ = 0.0f;
  int64_t cursor_c_ = -1, cursor_h_ = -1, cursor_w_ = -1;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> channel_stroke_cpu(
    const at::Tensor& y, const at::Tensor& allowed, const c10::optional<at::Tensor>& init_mask, const at::Tensor& brush,
    const at::Tensor& distance_weights, int64_t tau, double m, int64_t p,
    c10::optional<double> min_response, c10::optional<int64_t> max_strokes, c10::optional<double> max_coverage) {
  check_channel_stroke_args(y, allowed, init_mask, brush, distance_weights, tau, m, p, min_response, max_strokes,
                            max_coverage);
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const at::Tensor init_c = init_mask.has_value() ? init_mask->contiguous() : at::Tensor();
  const at::Tensor weights_c = distance_weights.contiguous();
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  // The stroke loop writes order at scattered places: huge pages spare it a TLB miss per write.
  at::Tensor order = at::empty(y.sizes(), y.options().dtype(at::kInt));
  advise_huge_pages(order.data_ptr(), order.nbytes());
  order.fill_(-1);
  at::Tensor stroke_counts = at::zeros({N}, y.options().dtype(at::kLong));
  at::Tensor stop_reasons = at::full({N}, static_cast<int32_t>(kStopExhausted), y.options().dtype(at::kInt));
  at::Tensor channel_counts = at::zeros({N, C}, y.options().dtype(at::kLong));
  if (N == 0 || C * H * W == 0) {
    return {order, at::empty({0, kStrokeColumns}, y.options().dtype(at::kInt)), stroke_counts, stop_reasons,
            channel_counts};
  }

  const std::vector<BrushOffset> offsets = brush_offsets(brush, H, W);
  const StrokeParams params{static_cast<int32_t>(tau),
                            static_cast<float>(m),
                            static_cast<int32_t>(p),
                            min_response.has_value() ? static_cast<float>(*min_response) : kNoMinResponse,
                            max_strokes.value_or(-1),
                            max_coverage.value_or(-1.0),
                            weights_c.data_ptr<float>(),
                            weights_c.numel(),
                            &offsets};
  std::vector<std::vector<StrokeRecord>> strokes(N);
  int32_t* reasons = stop_reasons.data_ptr<int32_t>();
  const at::ThreadLocalState caller_state;  // carries the profiler's state to the worker threads
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    const DenormalsKept float_mode;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t plane = C * H * W;
      const bool* init = init_c.defined() ? init_c.data_ptr<bool>() + n * plane : nullptr;
      // Profiler scopes (torch.profiler) for the two parts of an image's time: the O(C*H*W) pass
      // that prepares the working copies, and the stroke loop.
      std::optional<StrokePainter> painter;
      {
        RECORD_USER_SCOPE("cpia::channel_stroke.prepare");
        painter.emplace(y_c.data_ptr<float>() + n * plane, allowed_c.data_ptr<bool>() + n * H * W, init,
                        order.data_ptr<int32_t>() + n * plane, channel_counts.data_ptr<int64_t>() + n * C, C, H, W,
                        params);
      }
      RECORD_USER_SCOPE("cpia::channel_stroke.strokes");
      reasons[n] = painter->run(strokes[n]);
    }
  });

  int64_t total = 0;
  int64_t* counts = stroke_counts.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {
    counts[n] = static_cast<int64_t>(strokes[n].size());
    total += counts[n];
  }
  at::Tensor records = at::empty({total, kStrokeColumns}, y.options().dtype(at::kInt));
  int32_t* out = records.data_ptr<int32_t>();
  for (const auto& image_strokes : strokes) {
    for (const StrokeRecord& record : image_strokes) out = std::copy(record.begin(), record.end(), out);
  }
  return {order, records, stroke_counts, stop_reasons, channel_counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(cpia, CPU, m) { m.impl("channel_stroke", &channel_stroke_cpu); }

}  // namespace cpia
