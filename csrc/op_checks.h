// Argument checks shared by every backend of the cpia ops, so a bad call fails with the same
// message on CPU and CUDA: a RuntimeError (Y's finiteness: a ValueError), as the ops' fakes raise
// for what they check. The public Python functions check the same things first and raise
// ValueError/TypeError, with the same range texts and Python's names for dtypes and shapes.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "brush.h"

namespace cpia {

// Brush cells are counted in int32 by the kernels, with room for a block's stride past the last.
constexpr int64_t kMaxBrushCells = (int64_t{1} << 31) - 1024;

// A real with the fewest digits (6 at least) that read back as the same value, as Python's repr
// writes it, so that a value just outside a range is not printed as the bound it missed.
template <typename Real>
std::string real_text(Real value) {
  char text[32];
  for (int digits = 6;; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, static_cast<double>(value));
    if (digits >= std::numeric_limits<Real>::max_digits10 || static_cast<Real>(std::strtod(text, nullptr)) == value) {
      return text;
    }
  }
}

inline void check_same_device(const at::Tensor& y, const at::Tensor& other, const char* name) {
  TORCH_CHECK(other.device() == y.device(), name, " must be on the same device as Y (", y.device(), "), got ",
              other.device());
}

inline void check_channel_flush_args(const at::Tensor& y, const at::Tensor& allowed, int64_t tau) {
  TORCH_CHECK(y.dim() == 4, "Y must be a 4-D tensor (N, C, H, W), got ", y.dim(), "-D");
  TORCH_CHECK(y.scalar_type() == at::kFloat, "Y must be float32, got ", y.scalar_type());
  TORCH_CHECK(allowed.scalar_type() == at::kBool, "allowed must be bool, got ", allowed.scalar_type());
  TORCH_CHECK(allowed.dim() == 3 && allowed.size(0) == y.size(0) && allowed.size(1) == y.size(2) &&
                  allowed.size(2) == y.size(3),
              "allowed must have shape (N, H, W) = (", y.size(0), ", ", y.size(2), ", ", y.size(3), "), got ",
              allowed.sizes());
  check_same_device(y, allowed, "allowed");
  const int64_t channels = y.size(1);
  // With no channels no tau is in range; its sign is still checked.
  TORCH_CHECK(channels > 0 || tau >= 1, "tau must be >= 1, got ", tau);
  TORCH_CHECK(channels == 0 || (tau >= 1 && tau <= channels), "tau must be in [1, C] = [1, ", channels, "], got ",
              tau);
}

// NaN or Inf would break the kernels' argmax (no element equals a NaN maximum). A sum is finite
// unless an element is NaN/Inf (or the sum overflows): one cheap pass, the exact check only when it
// is not conclusive. The stroke op waits for its stroke counts on the host anyway. A ValueError in
// Python, as the wrapper's own check (which leaves float32 inputs to this one).
inline void check_finite(const at::Tensor& y) {
  if (y.numel() == 0) return;
  const bool finite = std::isfinite(y.sum().item<double>()) || at::isfinite(y).all().item<bool>();
  TORCH_CHECK_VALUE(finite, "Y must be finite, got NaN or Inf values");
}

inline void check_channel_stroke_args(const at::Tensor& y, const at::Tensor& allowed,
                                      const c10::optional<at::Tensor>& init_mask,
                                      const at::Tensor& brush, const at::Tensor& distance_weights, int64_t tau,
                                      double m, int64_t p, const c10::optional<double>& min_response,
                                      const c10::optional<int64_t>& max_strokes,
                                      const c10::optional<double>& max_coverage) {
  check_channel_flush_args(y, allowed, tau);
  if (init_mask.has_value()) {
    TORCH_CHECK(init_mask->scalar_type() == at::kBool, "init_mask must be bool, got ", init_mask->scalar_type());
    TORCH_CHECK(init_mask->sizes() == y.sizes(), "init_mask must have the shape of Y ", y.sizes(), ", got ",
                init_mask->sizes());
    check_same_device(y, *init_mask, "init_mask");
  }
  TORCH_CHECK(brush.scalar_type() == at::kBool, "brush must be bool, got ", brush.scalar_type());
  TORCH_CHECK(brush.dim() == 2 && brush.size(0) % 2 == 1 && brush.size(1) % 2 == 1,
              "brush must be a 2-D tensor with odd sides, got shape ", brush.sizes());
  TORCH_CHECK(brush.device().is_cpu(), "brush must be a CPU tensor, got ", brush.device());
  TORCH_CHECK(brush[brush.size(0) / 2][brush.size(1) / 2].item<bool>(), "brush centre must be True");
  // As the Python wrapper does, the cells are counted after the crop to what can reach the image.
  const at::Tensor reachable = reachable_brush(brush, y.size(2), y.size(3));
  TORCH_CHECK(reachable.numel() <= kMaxBrushCells, "brush must have at most 2^31 - 1024 cells, got ",
              reachable.numel());
  TORCH_CHECK(distance_weights.scalar_type() == at::kFloat, "distance_weights must be float32, got ",
              distance_weights.scalar_type());
  TORCH_CHECK(distance_weights.dim() == 1 && distance_weights.numel() >= 1,
              "distance_weights must be a non-empty 1-D tensor, got shape ", distance_weights.sizes());
  check_same_device(y, distance_weights, "distance_weights");
  TORCH_CHECK(m > 0.0 && m <= 1.0, "m must be in (0, 1], got ", real_text(m));
  TORCH_CHECK(static_cast<float>(m) > 0.0f, "m must not round to 0 in float32, got ", real_text(m));
  TORCH_CHECK(p >= 1 && p <= tau, "p must be in [1, tau] = [1, ", tau, "], got ", p);
  TORCH_CHECK(!min_response.has_value() || (*min_response >= 0.0 && *min_response <= 1.0),
              "min_response must be in [0, 1], got ", real_text(min_response.value_or(0.0)));
  TORCH_CHECK(!max_strokes.has_value() || *max_strokes >= 0, "max_strokes must be >= 0, got ",
              max_strokes.value_or(0));
  TORCH_CHECK(!max_coverage.has_value() || (*max_coverage > 0.0 && *max_coverage <= 1.0),
              "max_coverage must be in (0, 1], got ", real_text(max_coverage.value_or(0.0)));
  const int64_t elements = y.size(1) * y.size(2) * y.size(3);
  TORCH_CHECK(elements < static_cast<int64_t>(std::numeric_limits<uint32_t>::max()),
              "C*H*W must be below 2^32 - 1 per image, got ", elements);
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(elements <= kInt32Max || max_strokes.value_or(kInt32Max + 1) <= kInt32Max,
              "max_strokes must be at most 2^31 - 1 when C*H*W exceeds it (stroke indices in order are int32), got "
              "C*H*W = ", elements, " and max_strokes = ",
              max_strokes.has_value() ? std::to_string(*max_strokes) : "None");
  TORCH_CHECK(y.size(1) <= kInt32Max && y.size(2) <= kInt32Max && y.size(3) <= kInt32Max,
              "C, H and W must each be below 2^31 (stroke records are int32), got ", y.sizes());
  // A stroke switches on at most p channels at each location its brush reaches (with C > 0, p <= C < 2^31,
  // so the product fits in int64; with C = 0 there are no strokes).
  const int64_t reach = std::min(reachable.count_nonzero().item<int64_t>(), y.size(2) * y.size(3));
  TORCH_CHECK(y.size(1) == 0 || reach * p <= kInt32Max, "p times the locations a stroke reaches (True brush cells, at "
              "most H*W) must be at most 2^31 - 1 (a stroke's pixel count is int32), got p = ", p, " and ", reach,
              " locations");
  // The kernels' branch and bound relies on weights that never grow with distance, and a weight
  // above 1 could take a penalised score past the largest float.
  const at::Tensor weights = distance_weights.to(at::kCPU).contiguous();
  const float* weight = weights.data_ptr<float>();
  for (int64_t k = 0; k < weights.numel(); ++k) {
    TORCH_CHECK(weight[k] >= 0.0f && weight[k] <= 1.0f && (k == 0 || weight[k] <= weight[k - 1]),
                "distance_weights must be in [0, 1] and non-increasing, got entry ", k, " = ", real_text(weight[k]));
  }
  check_finite(y);
}

}  // namespace cpia
