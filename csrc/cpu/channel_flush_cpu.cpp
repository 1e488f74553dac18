// Channel flush on the CPU: at every allowed location keep the tau channels of highest response
// (ties to the smaller channel). Per row of locations:
//   1. gather the order-preserving words (paint_rules.h) channel-last, so a location's C words are
//      contiguous, and find the tau-th largest word T by a byte-wise radix select, O(C) per location;
//   2. keep the words >= T, reading Y and writing the mask row by row (contiguous, vectorised);
//   3. where more words equal T than tau leaves room for (rare), keep only the first ones, i.e.
//      those of the smaller channels.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "../op_checks.h"
#include "../paint_rules.h"

namespace cpia {
namespace {

constexpr int64_t kGatherBlock = 16;  // locations gathered together, to keep the transposition cache-friendly

struct TauThWord {
  uint32_t word;      // the tau-th largest word T
  int64_t ties_kept;  // how many words equal to T are among the tau largest
  int64_t ties;       // how many words equal T
};

// The tau-th largest of `size` words; `words` is used as scratch. A radix select, most significant
// byte first, for many channels; a plain selection for few, where 256 counters would dominate.
TauThWord select_tau_th_word(uint32_t* words, int64_t size, int64_t tau) {
  if (size <= 128) {
    std::nth_element(words, words + (tau - 1), words + size, std::greater<uint32_t>());
    const uint32_t word = words[tau - 1];
    int64_t above = 0, ties = 0;
    for (int64_t i = 0; i < size; ++i) {
      above += words[i] > word;
      ties += words[i] == word;
    }
    return {word, tau - above, ties};
  }
  int64_t rank = tau - 1;  // 0-based rank from the top within the words still in play
  for (int shift = 24; shift >= 0 && size > 1; shift -= 8) {
    int32_t counts[256] = {0};
    for (int64_t i = 0; i < size; ++i) ++counts[(words[i] >> shift) & 0xFF];
    int digit = 255;
    while (counts[digit] <= rank) rank -= counts[digit--];
    int64_t kept = 0;
    for (int64_t i = 0; i < size; ++i) {
      if (static_cast<int>((words[i] >> shift) & 0xFF) == digit) words[kept++] = words[i];
    }
    size = kept;
  }
  // The words left all equal T, and the `rank` words of them before T's place are kept too.
  return {words[0], rank + 1, size};
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
    std::vector<uint32_t> words(kGatherBlock * C);
    std::vector<uint32_t> tau_th(W);  // T per location
    std::vector<TauThWord> selected(W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H;
      const float* plane = responses + n * C * HW + h * W;
      const bool* row_allowed = allowed_at + n * HW + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += kGatherBlock) {
        const int64_t span = std::min(kGatherBlock, W - w0);
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t i = 0; i < span; ++i) words[i * C + c] = ordered_bits(plane[c * HW + w0 + i]);
        }
        for (int64_t i = 0; i < span; ++i) {
          selected[w0 + i] = select_tau_th_word(words.data() + i * C, C, tau);
          tau_th[w0 + i] = selected[w0 + i].word;
        }
      }
      bool* out = kept_at + n * C * HW + h * W;
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t w = 0; w < W; ++w) out[c * HW + w] = (ordered_bits(plane[c * HW + w]) >= tau_th[w]) & row_allowed[w];
      }
      for (int64_t w = 0; w < W; ++w) {
        if (selected[w].ties == selected[w].ties_kept || !row_allowed[w]) continue;
        int64_t ties_left = selected[w].ties_kept;
        for (int64_t c = 0; c < C; ++c) {
          if (ordered_bits(plane[c * HW + w]) != tau_th[w]) continue;
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
