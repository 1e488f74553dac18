// Channel stroke on the CPU: the whole greedy loop of one image in one call, images of a batch in
// parallel. Semantics: docs/algorithm.md; per-element rules: paint_rules.h.
//
// Data structure. The argmax runs over 64-bit keys (score, flat index). Y is static, so for every
// channel the best unpenalised candidate of each 8x8 tile is kept in the leaves of a per-channel
// max segment tree, whose roots feed a segment tree over channels. A stroke removes candidates only
// (switched-on elements, saturated locations), and a tile is rescanned only when it loses its best
// element. The penalised score differs from Y on the cursor channel alone, so each step takes
//   max( best over channels != c*           -- channel tree, O(log C)
//        best penalised over channel c*     -- branch and bound over c*'s tiles )
// and no step touches C*H*W elements.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
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
  StrokePainter(const float* y, const bool* allowed, const bool* init_mask, int32_t* order, int64_t channels,
                int64_t height, int64_t width, const StrokeParams& params)
      : y_(y),
        allowed_(allowed),
        order_(order),
        C_(channels),
        H_(height),
        W_(width),
        HW_(height * width),
        params_(params),
        tiles_h_((height + kTileH - 1) / kTileH),
        tiles_w_((width + kTileW - 1) / kTileW),
        tiles_(tiles_h_ * tiles_w_),
        on_(init_mask, init_mask + channels * height * width),
        channels_on_(height * width, 0),
        tile_dirty_(channels * tiles_, 0),
        channel_trees_(channels),
        channel_best_(channels) {
    for (int64_t c = 0; c < C_; ++c) {
      for (int64_t i = 0; i < HW_; ++i) channels_on_[i] += on_[c * HW_ + i];
    }
    for (int64_t i = 0; i < HW_; ++i) {
      allowed_count_ += allowed_[i];
      covered_ += allowed_[i] && channels_on_[i] > 0;
    }
    float y_max = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < C_; ++c) {
      for (int64_t i = 0; i < HW_; ++i) {
        if (allowed_[i]) y_max = std::max(y_max, y_[c * HW_ + i]);
      }
    }
    threshold_ = response_threshold(params_.min_response, y_max);
    // Threads only pay off with enough elements each (small images stay on one thread).
    const int64_t channels_per_task = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(HW_, 1));
    at::parallel_for(0, C_, channels_per_task, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        channel_trees_[c] = KeyTree(tiles_);
        Key* leaves = channel_trees_[c].leaves();
        for (int64_t t = 0; t < tiles_; ++t) leaves[t] = scan_tile(c, t);
        channel_trees_[c].rebuild();
      }
    });
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

  float weight_at(int64_t d2) const {
    return distance_weight(params_.distance_weights, params_.distance_weights_size, d2);
  }

  Key best_candidate() const {
    if (cursor_c_ < 0) return channel_best_.root();
    Key best = std::max(channel_best_.range_max(0, cursor_c_), channel_best_.range_max(cursor_c_ + 1, C_));
    const KeyTree& tree = channel_trees_[cursor_c_];
    const float* table = params_.distance_weights;
    const int64_t table_size = params_.distance_weights_size;
    // Same two passes as the CUDA kernel: the best floor raises the bar before any tile is scanned.
    for (int64_t t = 0; t < tiles_; ++t) {
      const Key tile_best = tree.leaf(t);
      if (tile_best == kNoCandidate) continue;
      const TileRect rect = tile_rect(t, tiles_w_, H_, W_);
      best = std::max(best, tile_floor_key(key_score(tile_best), table, table_size, rect, cursor_h_, cursor_w_));
    }
    for (int64_t t = 0; t < tiles_; ++t) {
      const Key tile_best = tree.leaf(t);
      if (tile_best == kNoCandidate) continue;
      const TileRect rect = tile_rect(t, tiles_w_, H_, W_);
      if (tile_ceiling_key(key_score(tile_best), table, table_size, rect, cursor_h_, cursor_w_) <= best) continue;
      best = std::max(best, scan_tile(cursor_c_, t, [&](float y, int64_t h, int64_t w) {
                        return penalised_score(y, weight_at(squared_distance(h, w, cursor_h_, cursor_w_)));
                      }));
    }
    // A floor key is never a real key (its index word is 0), so `best` is a real candidate here
    // unless channel c* had no candidate at all.
    return best;
  }

  // The channel set P of a stroke at (h, w) whose leading channel is c.
  void penetration_channels(int64_t c, int64_t at, std::vector<int64_t>& channels) {
    channels.assign(1, c);
    const int64_t extra = std::min<int64_t>(params_.p - 1, params_.tau - channels_on_[at] - 1);
    if (extra <= 0) return;
    followers_.clear();
    for (int64_t other = 0; other < C_; ++other) {
      if (other != c && !on_[other * HW_ + at]) followers_.push_back(other);
    }
    const int64_t take = std::min<int64_t>(extra, static_cast<int64_t>(followers_.size()));
    auto precedes = [&](int64_t a, int64_t b) { return channel_precedes(y_[a * HW_ + at], a, y_[b * HW_ + at], b); };
    std::partial_sort(followers_.begin(), followers_.begin() + take, followers_.end(), precedes);
    channels.insert(channels.end(), followers_.begin(), followers_.begin() + take);
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
    const int64_t t = ((at / W_) / kTileH) * tiles_w_ + (at % W_) / kTileW;
    candidate_removed(q, at, t);
    on_[q * HW_ + at] = 1;
    order_[q * HW_ + at] = stroke_index;
    if (channels_on_[at]++ == 0) ++covered_;
    if (channels_on_[at] == params_.tau) {  // the location saturates: no channel there is a candidate
      for (int64_t c = 0; c < C_; ++c) {
        if (!on_[c * HW_ + at]) candidate_removed(c, at, t);
      }
    }
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
      const int64_t q = tile_id / tiles_, t = tile_id % tiles_;
      if (channel_trees_[q].set(t, scan_tile(q, t))) channel_best_.set(q, channel_trees_[q].root());
    }
    dirty_tiles_.clear();
    return {static_cast<int32_t>(c), static_cast<int32_t>(h), static_cast<int32_t>(w), pixels_on,
            static_cast<int32_t>(stroke_channels_.size())};
  }

  const float* y_;
  const bool* allowed_;
  int32_t* order_;
  const int64_t C_, H_, W_, HW_;
  const StrokeParams params_;
  const int64_t tiles_h_, tiles_w_, tiles_;
  std::vector<uint8_t> on_;
  std::vector<int32_t> channels_on_;
  std::vector<uint8_t> tile_dirty_;
  std::vector<int64_t> dirty_tiles_;
  std::vector<KeyTree> channel_trees_;
  KeyTree channel_best_;
  std::vector<int64_t> stroke_channels_;
  std::vector<int64_t> followers_;
  int64_t allowed_count_ = 0;
  int64_t covered_ = 0;
  float threshold_ = 0.0f;
  int64_t cursor_c_ = -1, cursor_h_ = -1, cursor_w_ = -1;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> channel_stroke_cpu(
    const at::Tensor& y, const at::Tensor& allowed, const at::Tensor& init_mask, const at::Tensor& brush,
    const at::Tensor& distance_weights, int64_t tau, double m, int64_t p, double min_response,
    c10::optional<int64_t> max_strokes, c10::optional<double> max_coverage) {
  check_channel_stroke_args(y, allowed, init_mask, brush, distance_weights, tau, m, p, min_response, max_strokes,
                            max_coverage);
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const at::Tensor init_c = init_mask.contiguous();
  const at::Tensor weights_c = distance_weights.contiguous();
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  at::Tensor order = at::full(y.sizes(), -1, y.options().dtype(at::kInt));
  at::Tensor stroke_counts = at::zeros({N}, y.options().dtype(at::kLong));
  at::Tensor stop_reasons = at::full({N}, static_cast<int32_t>(kStopExhausted), y.options().dtype(at::kInt));
  if (N == 0 || C * H * W == 0) {
    return {order, at::empty({0, kStrokeColumns}, y.options().dtype(at::kInt)), stroke_counts, stop_reasons};
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
      StrokePainter painter(y_c.data_ptr<float>() + n * plane, allowed_c.data_ptr<bool>() + n * H * W,
                            init_c.data_ptr<bool>() + n * plane, order.data_ptr<int32_t>() + n * plane, C, H, W,
                            params);
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
  return {order, records, stroke_counts, stop_reasons};
}

}  // namespace

TORCH_LIBRARY_IMPL(cpia, CPU, m) { m.impl("channel_stroke", &channel_stroke_cpu); }

}  // namespace cpia
