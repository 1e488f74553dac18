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
// and no step touches C*H*W elements.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <vector>

#include "../brush.h"
#include "../op_checks.h"
#include "../paint_rules.h"

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
  int64_t p;
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
      : y_(y),
        allowed_(allowed),
        order_(order),
        channel_counts_(channel_counts),
        C_(channels),
        H_(height),
        W_(width),
        HW_(height * width),
        params_(params),
        tiles_h_((height + kTileH - 1) / kTileH),
        tiles_w_((width + kTileW - 1) / kTileW),
        tiles_(tiles_h_ * tiles_w_),
        on_(channels * height * width, 0),
        channels_on_(height * width, 0),
        tile_dirty_(channels * tiles_, 0),
        channel_trees_(channels),
        channel_best_(channels) {
    if (init_mask != nullptr) {
      has_init_ = true;
      std::copy(init_mask, init_mask + C_ * HW_, on_.begin());
      for (int64_t c = 0; c < C_; ++c) {
        for (int64_t i = 0; i < HW_; ++i) {
          channels_on_[i] += on_[c * HW_ + i];
          channel_counts_[c] += on_[c * HW_ + i] & allowed_[i];
        }
      }
    }
    for (int64_t i = 0; i < HW_; ++i) {
      allowed_count_ += allowed_[i];
      covered_ += allowed_[i] && channels_on_[i] > 0;
    }
    // One pass over Y: the tile leaves of every channel and the largest response at allowed locations.
    std::vector<float> channel_max(C_, -std::numeric_limits<float>::infinity());
    // Threads only pay off with enough elements each (small images stay on one thread).
    const int64_t channels_per_task = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(HW_, 1));
    at::parallel_for(0, C_, channels_per_task, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        channel_trees_[c] = KeyTree(tiles_);
        Key* leaves = channel_trees_[c].leaves();
        float y_max = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < tiles_; ++t) leaves[t] = initial_scan(c, t, y_max);
        channel_trees_[c].rebuild();
        channel_max[c] = y_max;
      }
    });
    threshold_ = response_threshold(params_.min_response, *std::max_element(channel_max.begin(), channel_max.end()));
    if (params_.p > 1) transpose_for_penetration();
    for (int64_t c = 0; c < C_; ++c) channel_best_.leaves()[c] = channel_trees_[c].root();
    channel_best_.rebuild();
  }

  // Penetration reads every channel of one location; in Y those lie H*W apart, a page or more, so
  // a (H*W, C) copy is made once, in which an element that is on holds -inf (Y itself is finite).
  // 8x8 blocks keep the power-of-two strides off shared cache sets.
  void transpose_for_penetration() {
    y_by_location_.resize(C_ * HW_);
    const float* y = y_;
    const uint8_t* on = on_.data();
    float* y_t = y_by_location_.data();
    const int64_t C = C_, HW = HW_;
    const bool has_init = has_init_;
    constexpr int64_t kBlock = 8;
    constexpr float kOn = -std::numeric_limits<float>::infinity();
    at::parallel_for(0, (HW + kBlock - 1) / kBlock, 64, [=](int64_t begin, int64_t end) {
      for (int64_t at0 = begin * kBlock; at0 < std::min(end * kBlock, HW); at0 += kBlock) {
        const int64_t at1 = std::min(at0 + kBlock, HW);
        for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
          for (int64_t c = c0; c < std::min(c0 + kBlock, C); ++c) {
            if (has_init) {
              for (int64_t at = at0; at < at1; ++at) y_t[at * C + c] = on[c * HW + at] ? kOn : y[c * HW + at];
            } else {
              for (int64_t at = at0; at < at1; ++at) y_t[at * C + c] = y[c * HW + at];
            }
          }
        }
      }
    });
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
      const int64_t c = flat / HW_;
      const int64_t at = flat % HW_;
      TORCH_INTERNAL_ASSERT(is_candidate_at(c, at), "channel_stroke: stale candidate index ", flat);
      if (below_min_response(y_[flat], threshold_)) return kStopMinResponse;
      strokes.push_back(paint_stroke(c, at / W_, at % W_, static_cast<int32_t>(stroke)));
      cursor_c_ = c;
      cursor_h_ = at / W_;
      cursor_w_ = at % W_;
    }
  }

 private:
  bool is_candidate_at(int64_t c, int64_t at) const {
    return is_candidate(allowed_[at], on_[c * HW_ + at], channels_on_[at], params_.tau);
  }

  // Best candidate key of tile t on channel c under the score `score_of(y, h, w)`.
  template <typename Score>
  Key scan_tile(int64_t c, int64_t t, Score score_of) const {
    const TileRect rect = tile_rect(t, tiles_w_, H_, W_);
    Key best = kNoCandidate;
    for (int64_t h = rect.h0; h <= rect.h1; ++h) {
      for (int64_t w = rect.w0; w <= rect.w1; ++w) {
        const int64_t at = h * W_ + w;
        if (!is_candidate_at(c, at)) continue;
        const int64_t flat = c * HW_ + at;
        best = std::max(best, make_key(score_of(y_[flat], h, w), static_cast<uint32_t>(flat)));
      }
    }
    return best;
  }

  Key scan_tile(int64_t c, int64_t t) const {
    return scan_tile(c, t, [](float y, int64_t, int64_t) { return y; });
  }

  // The first scan of a tile: its best candidate key, and (into y_max) the largest response at its
  // allowed locations, init_mask elements included.
  Key initial_scan(int64_t c, int64_t t, float& y_max) const {
    const TileRect rect = tile_rect(t, tiles_w_, H_, W_);
    Key best = kNoCandidate;
    for (int64_t h = rect.h0; h <= rect.h1; ++h) {
      for (int64_t w = rect.w0; w <= rect.w1; ++w) {
        const int64_t at = h * W_ + w, flat = c * HW_ + at;
        if (!allowed_[at]) continue;
        const float y = y_[flat];
        y_max = y > y_max ? y : y_max;
        if (is_candidate_at(c, at)) best = std::max(best, make_key(y, static_cast<uint32_t>(flat)));
      }
    }
    return best;
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
        const uint32_t flat = key_flat_index(best_other);
        if (!is_candidate_at(flat / HW_, flat % HW_)) {
          refresh_tile(flat / HW_, tile_of(flat % HW_));
          continue;
        }
      }
      return cursor_c_ < 0 ? best_other : best_on_cursor_channel(best_other);
    }
  }

  int64_t tile_of(int64_t at) const { return ((at / W_) / kTileH) * tiles_w_ + (at % W_) / kTileW; }

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
  Key best_on_cursor_channel(Key best) const {
    const KeyTree& tree = channel_trees_[cursor_c_];
    const float* table = params_.distance_weights;
    const int64_t table_size = params_.distance_weights_size;
    auto ceiling = [&](int64_t node, int64_t first, int64_t last) {
      const Key node_best = tree.node(node);
      if (node_best == kNoCandidate) return kNoCandidate;
      return tile_ceiling_key(key_score(node_best), table, table_size, tile_range_rect(first, last), cursor_h_,
                              cursor_w_);
    };
    using Pending = SearchNode;  // tiles [first, first + count) of a tree node
    search_stack_.clear();
    search_stack_.push_back({1, 0, tree.width(), ceiling(1, 0, std::min(tree.width(), tiles_) - 1)});
    while (!search_stack_.empty()) {
      const Pending pending = search_stack_.back();
      search_stack_.pop_back();
      if (pending.ceiling <= best) continue;
      if (pending.count == 1) {
        best = std::max(best, scan_tile(cursor_c_, pending.first, [&](float y, int64_t h, int64_t w) {
                          return penalised_score(y, weight_at(squared_distance(h, w, cursor_h_, cursor_w_)));
                        }));
        continue;
      }
      const int64_t half = pending.count / 2;
      Pending left{2 * pending.node, pending.first, half, kNoCandidate};
      Pending right{2 * pending.node + 1, pending.first + half, half, kNoCandidate};
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

  // The channel set P of a stroke at (h, w) whose leading channel is c: one strided pass gathers the
  // precedence keys of the other channels that are off there, then a selection picks the best.
  void penetration_channels(int64_t c, int64_t at, std::vector<int64_t>& channels) {
    channels.assign(1, c);
    const int64_t extra = std::min<int64_t>(params_.p - 1, params_.tau - channels_on_[at] - 1);
    if (extra <= 0) return;
    // One pass keeping the `extra` best keys in descending order (extra < p is small).
    followers_.clear();
    const float* responses = y_by_location_.data() + at * C_;  // -inf where on
    for (int64_t other = 0; other < C_; ++other) {
      if (other == c || responses[other] == -std::numeric_limits<float>::infinity()) continue;
      const Key key = make_key(responses[other], static_cast<uint32_t>(other));
      if (static_cast<int64_t>(followers_.size()) == extra) {
        if (key <= followers_.back()) continue;
        followers_.pop_back();
      }
      followers_.insert(std::upper_bound(followers_.begin(), followers_.end(), key, std::greater<Key>()), key);
    }
    for (const Key key : followers_) channels.push_back(key_flat_index(key));  // keys carry c'
  }

  // Marks tile t of channel c for a rescan if the candidate `flat` that just left it was its best.
  void candidate_removed(int64_t c, int64_t at, int64_t t) {
    const int64_t flat = c * HW_ + at;
    if (channel_trees_[c].leaf(t) != make_key(y_[flat], static_cast<uint32_t>(flat))) return;
    uint8_t& dirty = tile_dirty_[c * tiles_ + t];
    if (!dirty) {
      dirty = 1;
      dirty_tiles_.push_back(c * tiles_ + t);
    }
  }

  void switch_on(int64_t q, int64_t at, int32_t stroke_index) {
    candidate_removed(q, at, tile_of(at));
    on_[q * HW_ + at] = 1;
    if (!y_by_location_.empty()) y_by_location_[at * C_ + q] = -std::numeric_limits<float>::infinity();
    order_[q * HW_ + at] = stroke_index;
    ++channel_counts_[q];
    if (channels_on_[at]++ == 0) ++covered_;
  }

  StrokeRecord paint_stroke(int64_t c, int64_t h, int64_t w, int32_t stroke_index) {
    const int64_t centre = h * W_ + w;
    penetration_channels(c, centre, stroke_channels_);
    int32_t pixels_on = 0;
    for (const int64_t q : stroke_channels_) {
      const float y_centre = y_[q * HW_ + centre];
      for (const BrushOffset& offset : *params_.brush) {
        const int64_t hh = h + offset.dh, ww = w + offset.dw;
        if (hh < 0 || hh >= H_ || ww < 0 || ww >= W_) continue;
        const int64_t at = hh * W_ + ww;
        if (!is_candidate_at(q, at)) continue;
        const bool is_centre = offset.dh == 0 && offset.dw == 0;
        if (!is_centre && !passes_sensitivity(y_[q * HW_ + at], y_centre, params_.m)) continue;
        switch_on(q, at, stroke_index);
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

  const float* y_;
  const bool* allowed_;
  int32_t* order_;
  int64_t* channel_counts_;
  const int64_t C_, H_, W_, HW_;
  const StrokeParams params_;
  const int64_t tiles_h_, tiles_w_, tiles_;
  std::vector<uint8_t> on_;
  std::vector<float> y_by_location_;  // (H*W, C) copy for penetration, made only when p > 1
  std::vector<int32_t> channels_on_;
  std::vector<uint8_t> tile_dirty_;
  std::vector<int64_t> dirty_tiles_;
  std::vector<KeyTree> channel_trees_;
  KeyTree channel_best_;
  std::vector<int64_t> stroke_channels_;
  struct SearchNode {
    int64_t node, first, count;
    Key ceiling;
  };
  mutable std::vector<SearchNode> search_stack_;
  std::vector<Key> followers_;
  bool has_init_ = false;
  int64_t allowed_count_ = 0;
  int64_t covered_ = 0;
  float threshold_ = 0.0f;
  int64_t cursor_c_ = -1, cursor_h_ = -1, cursor_w_ = -1;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> channel_stroke_cpu(
    const at::Tensor& y, const at::Tensor& allowed, const c10::optional<at::Tensor>& init_mask, const at::Tensor& brush,
    const at::Tensor& distance_weights, int64_t tau, double m, int64_t p, double min_response,
    c10::optional<int64_t> max_strokes, c10::optional<double> max_coverage) {
  check_channel_stroke_args(y, allowed, init_mask, brush, distance_weights, tau, m, p, min_response, max_strokes,
                            max_coverage);
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const at::Tensor init_c = init_mask.has_value() ? init_mask->contiguous() : at::Tensor();
  const at::Tensor weights_c = distance_weights.contiguous();
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  at::Tensor order = at::full(y.sizes(), -1, y.options().dtype(at::kInt));
  at::Tensor stroke_counts = at::zeros({N}, y.options().dtype(at::kLong));
  at::Tensor stop_reasons = at::full({N}, static_cast<int32_t>(kStopExhausted), y.options().dtype(at::kInt));
  at::Tensor channel_counts = at::zeros({N, C}, y.options().dtype(at::kLong));
  if (N == 0 || C * H * W == 0) {
    return {order, at::empty({0, kStrokeColumns}, y.options().dtype(at::kInt)), stroke_counts, stop_reasons,
            channel_counts};
  }

  const std::vector<BrushOffset> offsets = brush_offsets(brush);
  const StrokeParams params{static_cast<int32_t>(tau),
                            static_cast<float>(m),
                            p,
                            static_cast<float>(min_response),
                            max_strokes.value_or(-1),
                            max_coverage.value_or(-1.0),
                            weights_c.data_ptr<float>(),
                            weights_c.numel(),
                            &offsets};
  std::vector<std::vector<StrokeRecord>> strokes(N);
  int32_t* reasons = stop_reasons.data_ptr<int32_t>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t plane = C * H * W;
      const bool* init = init_c.defined() ? init_c.data_ptr<bool>() + n * plane : nullptr;
      StrokePainter painter(y_c.data_ptr<float>() + n * plane, allowed_c.data_ptr<bool>() + n * H * W, init,
                            order.data_ptr<int32_t>() + n * plane, channel_counts.data_ptr<int64_t>() + n * C, C, H,
                            W, params);
      reasons[n] = painter.run(strokes[n]);
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
