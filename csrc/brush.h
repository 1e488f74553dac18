// Brush offsets in the order a stroke visits them: dh ascending, then dw ascending.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace cpia {

struct BrushOffset {
  int32_t dh;
  int32_t dw;
};

// The part of a (kh, kw) brush with odd sides that can land in an H x W image: offsets with
// |dh| >= H or |dw| >= W are outside it from every centre, so cropping them changes no stroke and
// keeps a huge brush (an expanded view, say) cheap. A view; the centre cell is always kept.
inline at::Tensor reachable_brush(const at::Tensor& brush, int64_t height, int64_t width) {
  const int64_t centre_h = brush.size(0) / 2, centre_w = brush.size(1) / 2;
  const int64_t keep_h = std::min(centre_h, std::max<int64_t>(height - 1, 0));
  const int64_t keep_w = std::min(centre_w, std::max<int64_t>(width - 1, 0));
  return brush.narrow(0, centre_h - keep_h, 2 * keep_h + 1).narrow(1, centre_w - keep_w, 2 * keep_w + 1);
}

// The offsets of the True cells of the brush's part that reaches an H x W image.
inline std::vector<BrushOffset> brush_offsets(const at::Tensor& brush, int64_t height, int64_t width) {
  const at::Tensor cpu_brush = reachable_brush(brush, height, width).contiguous();
  const bool* cells = cpu_brush.data_ptr<bool>();
  const int64_t kh = cpu_brush.size(0);
  const int64_t kw = cpu_brush.size(1);
  std::vector<BrushOffset> offsets;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      if (cells[i * kw + j]) {
        offsets.push_back({static_cast<int32_t>(i - kh / 2), static_cast<int32_t>(j - kw / 2)});
      }
    }
  }
  return offsets;
}

}  // namespace cpia
