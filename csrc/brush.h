// Brush offsets in the order a stroke visits them: dh ascending, then dw ascending.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace cpia {

struct BrushOffset {
  int32_t dh;
  int32_t dw;
};

inline std::vector<BrushOffset> brush_offsets(const at::Tensor& brush) {
  const at::Tensor cpu_brush = brush.contiguous();
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
