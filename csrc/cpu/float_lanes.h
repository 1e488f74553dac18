// Four adjacent floats as one value that lives in a 16-byte SIMD register (SSE2, NEON), written
// with GCC/Clang vector extensions so it builds for any target. The stroke setup's copy and the
// tile scans are selects and maxima over such lanes, which the auto-vectoriser leaves scalar.
#pragma once

#include <cstdint>
#include <cstring>

namespace cpia {

constexpr int kLanes = 4;
using FloatLanes = float __attribute__((vector_size(kLanes * sizeof(float))));
using MaskLanes = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));  // -1 (true) or 0

inline FloatLanes load_lanes(const float* values) {
  FloatLanes lanes;
  std::memcpy(&lanes, values, sizeof(lanes));
  return lanes;
}

inline void store_lanes(float* values, FloatLanes lanes) { std::memcpy(values, &lanes, sizeof(lanes)); }

inline FloatLanes splat(float value) { return FloatLanes{} + value; }

// Lanes where values[i] < limit.
inline MaskLanes less_than(const int32_t* values, int32_t limit) {
  MaskLanes lanes;
  std::memcpy(&lanes, values, sizeof(lanes));
  return lanes < (MaskLanes{} + limit);
}

// Lanes where flags[i] is true (a bool is one byte, 0 or 1): the four bytes are read as one word,
// copied to every lane, and lane i keeps its own byte (little-endian byte order).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "true_lanes assumes little-endian bytes");
inline MaskLanes true_lanes(const bool* flags) {
  int32_t word;
  std::memcpy(&word, flags, sizeof(word));
  const MaskLanes own_byte = {0xFF, 0xFF << 8, 0xFF << 16, static_cast<int32_t>(0xFFu << 24)};
  return ((MaskLanes{} + word) & own_byte) != 0;
}

inline FloatLanes select(MaskLanes mask, FloatLanes if_true, FloatLanes if_false) { return mask ? if_true : if_false; }

inline FloatLanes max_lanes(FloatLanes a, FloatLanes b) { return a > b ? a : b; }

// Transposes the 4x4 block rows[0..3] in place: rows[i][j] <- rows[j][i]. Built from lane reads,
// which the compilers turn into register shuffles (GCC before 12 has no __builtin_shufflevector).
inline void transpose_lanes(FloatLanes rows[kLanes]) {
  const FloatLanes in[kLanes] = {rows[0], rows[1], rows[2], rows[3]};
  for (int k = 0; k < kLanes; ++k) rows[k] = FloatLanes{in[0][k], in[1][k], in[2][k], in[3][k]};
}

inline float max_of_lanes(FloatLanes lanes) {
  float best = lanes[0];
  for (int lane = 1; lane < kLanes; ++lane) best = lanes[lane] > best ? lanes[lane] : best;
  return best;
}

}  // namespace cpia
