// Channel flush on the CPU: at every allowed location keep the tau channels of highest response
// (ties to the smaller channel). One row of locations is gathered channel-last, so the C responses of
// a location are contiguous, and the tau-th best key is found by selection, O(C) per location.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../op_checks.h"
#include "../paint_rules.h"

namespace cpia {
namespace {

at::Tensor channel_flush_cpu(const at::Tensor& y, const at::Tensor& allowed, int64_t tau) {
  check_channel_flush_args(y, allowed, tau);
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  at::Tensor kept = at::zeros(y.sizes(), y.options().dtype(at::kBool));
  if (kept.numel() == 0) return kept;
  const float* responses = y_c.data_ptr<float>();
  const bool* allowed_at = allowed_c.data_ptr<bool>();
  bool* kept_at = kept.data_ptr<bool>();

  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<Key> row_keys(W * C);  // [w][c]: precedence key of channel c at column w
    std::vector<Key> selection(C);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H;
      const float* plane = responses + n * C * H * W + h * W;
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t w = 0; w < W; ++w) row_keys[w * C + c] = make_key(plane[c * H * W + w], static_cast<uint32_t>(c));
      }
      bool* out = kept_at + n * C * H * W + h * W;
      for (int64_t w = 0; w < W; ++w) {
        if (!allowed_at[(n * H + h) * W + w]) continue;
        const Key* keys = row_keys.data() + w * C;
        Key tau_th_best = kNoCandidate;  // tau == C keeps every channel
        if (tau < C) {
          std::copy(keys, keys + C, selection.begin());
          std::nth_element(selection.begin(), selection.begin() + (tau - 1), selection.end(), std::greater<Key>());
          tau_th_best = selection[tau - 1];
        }
        for (int64_t c = 0; c < C; ++c) out[c * H * W + w] = keys[c] >= tau_th_best;
      }
    }
  });
  return kept;
}

}  // namespace

TORCH_LIBRARY_IMPL(cpia, CPU, m) { m.impl("channel_flush", &channel_flush_cpu); }

}  // namespace cpia
