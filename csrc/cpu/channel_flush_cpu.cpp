// Channel flush on the CPU: at every allowed location keep the tau channels of highest response
// (ties to the smaller channel). Per row of locations, in blocks of kBlock adjacent locations:
//   1. read the rank words (flush_rank_word, paint_rules.h) of the block channel by channel, as Y
//      is laid out, one lane per location, and find each lane's tau-th largest word T bit by bit;
//   2. keep the words >= T, reading Y and writing the mask row by row (contiguous, vectorised);
//   3. where more words equal T than tau leaves room for (rare), keep only the first ones, i.e.
//      those of the smaller channels.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../op_checks.h"
#include "../paint_rules.h"

namespace cpia {
namespace {

constexpr int64_t kBlock = 16;  // adjacent locations selected together, one lane each

struct TauThWord {
  uint32_t word;      // the tau-th largest word T
  int64_t ties_kept;  // how many words equal to T are among the tau largest
  int64_t ties;       // how many words equal T
};

// The tau-th largest word of each lane, words[c * kBlock + lane]. T is built from the top bit
// down: a bit is set if at least tau words reach the prefix with it, which gives the largest T
// with tau words >= T. Every step is the same compare-and-count over all lanes, which the compiler
// vectorises; a per-location selection would be dominated by its branches. The bits above the
// highest one in which some lane's words differ are common to all its words, T included, so the
// search starts below them.
void select_tau_th_words(const uint32_t* words, int64_t channels, int64_t tau, TauThWord* selected) {
  uint32_t low[kBlock], high[kBlock];
  std::copy(words, words + kBlock, low);
  std::copy(words, words + kBlock, high);
  for (int64_t c = 1; c < channels; ++c) {
    for (int64_t lane = 0; lane < kBlock; ++lane) {
      low[lane] = std::min(low[lane], words[c * kBlock + lane]);
      high[lane] = std::max(high[lane], words[c * kBlock + lane]);
    }
  }
  uint32_t differing = 0;
  for (int64_t lane = 0; lane < kBlock; ++lane) differing |= low[lane] ^ high[lane];
  const int top_bit = differing == 0 ? -1 : 31 - __builtin_clz(differing);
  const uint32_t below_top = top_bit < 0 ? 0u : static_cast<uint32_t>((uint64_t{2} << top_bit) - 1);
  uint32_t prefix[kBlock];
  for (int64_t lane = 0; lane < kBlock; ++lane) prefix[lane] = low[lane] & ~below_top;
  for (int bit = top_bit; bit >= 0; --bit) {
    uint32_t candidate[kBlock];
    int32_t reaching[kBlock] = {0};
    for (int64_t lane = 0; lane < kBlock; ++lane) candidate[lane] = prefix[lane] | (1u << bit);
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t lane = 0; lane < kBlock; ++lane) reaching[lane] += words[c * kBlock + lane] >= candidate[lane];
    }
    for (int64_t lane = 0; lane < kBlock; ++lane) prefix[lane] = reaching[lane] >= tau ? candidate[lane] : prefix[lane];
  }
  int32_t above[kBlock] = {0}, ties[kBlock] = {0};
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t lane = 0; lane < kBlock; ++lane) {
      above[lane] += words[c * kBlock + lane] > prefix[lane];
      ties[lane] += words[c * kBlock + lane] == prefix[lane];
    }
  }
  for (int64_t lane = 0; lane < kBlock; ++lane) selected[lane] = {prefix[lane], tau - above[lane], ties[lane]};
}

at::Tensor channel_flush_cpu(const at::Tensor& y, const at::Tensor& allowed, int64_t tau) {
  check_channel_flush_args(y, allowed, tau);
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3), HW = H * W;
  at::Tensor kept = at::empty(y.sizes(), y.options().dtype(at::kBool));  // every element is written
  if (kept.numel() == 0) return kept;
  const float* responses = y_c.data_ptr<float>();
  const bool* allowed_at = allowed_c.data_ptr<bool>();
  bool* kept_at = kept.data_ptr<bool>();

  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> words(kBlock * C);
    std::vector<TauThWord> selected(W + kBlock);  // T per location (the last block's spare lanes too)
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H;
      const float* plane = responses + n * C * HW + h * W;
      const bool* row_allowed = allowed_at + n * HW + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += kBlock) {
        const int64_t span = std::min(kBlock, W - w0);
        for (int64_t c = 0; c < C; ++c) {
          // Spare lanes past the row's end repeat its last location: harmless, and never read.
          for (int64_t i = 0; i < kBlock; ++i) {
            words[c * kBlock + i] = flush_rank_word(plane[c * HW + w0 + std::min(i, span - 1)]);
          }
        }
        select_tau_th_words(words.data(), C, tau, selected.data() + w0);
      }
      bool* out = kept_at + n * C * HW + h * W;
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t w = 0; w < W; ++w) {
          out[c * HW + w] = (flush_rank_word(plane[c * HW + w]) >= selected[w].word) & row_allowed[w];
        }
      }
      for (int64_t w = 0; w < W; ++w) {
        if (selected[w].ties == selected[w].ties_kept || !row_allowed[w]) continue;
        int64_t ties_left = selected[w].ties_kept;
        for (int64_t c = 0; c < C; ++c) {
          if (flush_rank_word(plane[c * HW + w]) != selected[w].word) continue;
          out[c * HW + w] = ties_left-- > 0;
        }
      }
    }
  });
  return kept;
}

}  // namespace

TORCH_LIBRARY_IMPL(cpia, CPU, m) { m.impl("channel_flush", &channel_flush_cpu); }

}  // namespace cpia
