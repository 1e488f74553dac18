// Per-element rules of channel flush and channel stroke, shared by the CPU and CUDA kernels so the
// two cannot drift. Every rule that decides which element wins or is switched on lives here; the
// pure-PyTorch reference (cpia_cuda/reference.py) follows the same float32 operations.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CPIA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CPIA_HOST_DEVICE inline
#endif

namespace cpia {

// Candidates are compared by a 64-bit key: the order-preserving bit pattern of the float score in
// the high word, the complement of the flat index (c*H + h)*W + w in the low word. The larger key
// wins, so equal scores go to the smaller flat index. Key 0 means "no candidate": every finite
// float maps to a high word > 0.
using Key = uint64_t;
constexpr Key kNoCandidate = 0;

// Spatial tiles over which incremental maxima are kept (both backends use the same tiling).
constexpr int kTileH = 8;
constexpr int kTileW = 8;
constexpr int kTileElements = kTileH * kTileW;

CPIA_HOST_DEVICE uint32_t float_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  uint32_t bits;
  __builtin_memcpy(&bits, &value, sizeof(bits));
  return bits;
#endif
}

CPIA_HOST_DEVICE float bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  __builtin_memcpy(&value, &bits, sizeof(value));
  return value;
#endif
}

// Monotone map float -> uint32 (a < b  <=>  ordered(a) < ordered(b)). -0.0 is folded onto +0.0
// because the float comparison treats them as equal, and so must the tie-break.
CPIA_HOST_DEVICE uint32_t ordered_bits(float value) {
  uint32_t bits = float_bits(value);
  bits = (bits & 0x7FFFFFFFu) == 0u ? 0u : bits;  // integer ops only, so loops over it vectorise
  return bits ^ ((0u - (bits >> 31)) | 0x80000000u);
}

// The word by which channel flush ranks a response: ordered_bits, with every NaN (either sign, any
// payload) folded onto one word above +Inf. The flush op leaves finiteness to its callers (a check
// would cost a second pass and, on CUDA, a host synchronisation), so a NaN gets the rank torch.sort
// gives it, which is what the reference uses: above everything, ties to the smaller channel.
CPIA_HOST_DEVICE uint32_t flush_rank_word(float value) {
  constexpr uint32_t kInfinityBits = 0x7F800000u, kNaNWord = 0xFF800001u;  // the word after +Inf's
  const bool is_nan = (float_bits(value) & 0x7FFFFFFFu) > kInfinityBits;
  return is_nan ? kNaNWord : ordered_bits(value);
}

CPIA_HOST_DEVICE float ordered_to_float(uint32_t ordered) {
  uint32_t bits = (ordered & 0x80000000u) ? (ordered & 0x7FFFFFFFu) : ~ordered;
  return bits_float(bits);
}

CPIA_HOST_DEVICE Key make_key(float score, uint32_t flat_index) {
  return (static_cast<Key>(ordered_bits(score)) << 32) | static_cast<Key>(~flat_index);
}

CPIA_HOST_DEVICE float key_score(Key key) { return ordered_to_float(static_cast<uint32_t>(key >> 32)); }

CPIA_HOST_DEVICE uint32_t key_flat_index(Key key) { return ~static_cast<uint32_t>(key & 0xFFFFFFFFu); }

// Largest key any element of score <= `score` can have: used as a branch-and-bound ceiling.
CPIA_HOST_DEVICE Key ceiling_key(float score) {
  return (static_cast<Key>(ordered_bits(score)) << 32) | 0xFFFFFFFFull;
}

// One float32 multiply, never contracted: the product is rounded exactly once on every backend.
CPIA_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Weight of the cost G = J*K on the cursor channel at squared distance d2 from the cursor: the
// table holds float32(1 - g*(1 - exp(-k / (2 sigma^2)))) for k < table_size, and its last entry
// for every larger k (the table is cut where it reaches its floor).
CPIA_HOST_DEVICE float distance_weight(const float* table, int64_t table_size, int64_t d2) {
  return table[d2 < table_size ? d2 : table_size - 1];
}

// s(c,h,w) on the cursor channel: Y * Wt[d2]; every other channel scores Y itself.
CPIA_HOST_DEVICE float penalised_score(float y, float weight) { return mul_rn(y, weight); }

CPIA_HOST_DEVICE int64_t squared_distance(int64_t h, int64_t w, int64_t h0, int64_t w0) {
  return (h - h0) * (h - h0) + (w - w0) * (w - w0);
}

// Branch and bound over a tile of the cursor channel. Wt never increases with distance and float
// rounding is monotone, so over a tile whose best response is y_best:
//   ceiling: no element scores above y_best * Wt[nearest] (y_best >= 0) or y_best * Wt[farthest] (< 0);
//   floor:   the y_best element itself scores at least y_best * Wt[farthest] (>= 0) or * Wt[nearest] (< 0).
struct TileRect {
  int64_t h0, w0, h1, w1;  // inclusive bounds
};

// 32-bit (the CUDA kernel's index width: H, W < 2^31 and tiles < 2^30).
CPIA_HOST_DEVICE TileRect tile_rect(uint32_t tile, uint32_t tiles_w, uint32_t height, uint32_t width) {
  const uint32_t h0 = (tile / tiles_w) * kTileH, w0 = (tile % tiles_w) * kTileW;
  const uint32_t h1 = h0 + kTileH < height ? h0 + kTileH : height;
  const uint32_t w1 = w0 + kTileW < width ? w0 + kTileW : width;
  return {h0, w0, int64_t{h1} - 1, int64_t{w1} - 1};
}

CPIA_HOST_DEVICE int64_t max3(int64_t a, int64_t b, int64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

CPIA_HOST_DEVICE int64_t nearest_squared_distance(const TileRect& r, int64_t h, int64_t w) {
  const int64_t dh = max3(r.h0 - h, h - r.h1, 0), dw = max3(r.w0 - w, w - r.w1, 0);
  return dh * dh + dw * dw;
}

CPIA_HOST_DEVICE int64_t farthest_squared_distance(const TileRect& r, int64_t h, int64_t w) {
  const int64_t dh = max3(h - r.h0, r.h1 - h, 0), dw = max3(w - r.w0, r.w1 - w, 0);
  return dh * dh + dw * dw;
}

CPIA_HOST_DEVICE Key tile_ceiling_key(float y_best, const float* table, int64_t table_size, const TileRect& r,
                                      int64_t h, int64_t w) {
  const int64_t d2 = y_best >= 0.0f ? nearest_squared_distance(r, h, w) : farthest_squared_distance(r, h, w);
  return ceiling_key(penalised_score(y_best, distance_weight(table, table_size, d2)));
}

CPIA_HOST_DEVICE Key tile_floor_key(float y_best, const float* table, int64_t table_size, const TileRect& r,
                                    int64_t h, int64_t w) {
  const int64_t d2 = y_best >= 0.0f ? farthest_squared_distance(r, h, w) : nearest_squared_distance(r, h, w);
  return static_cast<Key>(ordered_bits(penalised_score(y_best, distance_weight(table, table_size, d2)))) << 32;
}

// Candidate rule: location allowed, element off, fewer than tau channels on at the location.
CPIA_HOST_DEVICE bool is_candidate(bool allowed, bool on, int32_t channels_on, int32_t tau) {
  return allowed && !on && channels_on < tau;
}

// Stop rule "min_response": the picked element's own response below float32(min_response) * Ymax.
// The op's min_response None reaches the kernels as kNoMinResponse: a threshold of -inf, which no
// finite response is below.
constexpr float kNoMinResponse = -1.0f;
CPIA_HOST_DEVICE float response_threshold(float min_response, float y_max) {
  constexpr uint32_t kMinusInfinityBits = 0xFF800000u;
  return min_response < 0.0f ? bits_float(kMinusInfinityBits) : mul_rn(min_response, y_max);
}

CPIA_HOST_DEVICE bool below_min_response(float y, float threshold) { return y < threshold; }

// Neighbourhood rule: a brush offset other than the centre is switched on only if its response on
// channel q reaches float32(m) times the response of q at the stroke's centre.
CPIA_HOST_DEVICE bool passes_sensitivity(float y_neighbour, float y_centre, float m) {
  return y_neighbour >= mul_rn(m, y_centre);
}

// A brush cell of a stroke's channel q that is a candidate is switched on if it is the centre or
// passes the sensitivity rule.
CPIA_HOST_DEVICE bool brush_cell_switches_on(bool is_centre, float y_neighbour, float y_centre, float m) {
  return is_centre || passes_sensitivity(y_neighbour, y_centre, m);
}

// Penetration: how many channels a stroke adds to its own at its centre, where channels_on are on
// already: up to p - 1, within the room tau leaves once the stroke's channel is on (may be <= 0).
CPIA_HOST_DEVICE int32_t penetration_extra(int32_t p, int32_t tau, int32_t channels_on) {
  const int32_t room = tau - channels_on - 1;
  return p - 1 < room ? p - 1 : room;
}

// Precedence among channels at one location (flush ranking, penetration order): higher response
// first (float comparison, so -0.0 ties with +0.0), ties to the smaller channel index. No function
// here: each kernel's data structure realises it, as the first maximum of a channel-ordered scan
// (OffChannelTree::best, the CUDA penetration keys) or the smallest tied channels (the flushes).

// Stop reasons, in the order the loop checks them.
enum StopReason : int32_t {
  kStopMaxStrokes = 0,
  kStopMaxCoverage = 1,
  kStopExhausted = 2,
  kStopMinResponse = 3,
};

// Stop rule "max_coverage": covered locations reach max_coverage of the allowed locations.
CPIA_HOST_DEVICE bool coverage_reached(int64_t covered, int64_t allowed_count, double max_coverage) {
  return static_cast<double>(covered) >= max_coverage * static_cast<double>(allowed_count);
}

// Columns of the per-stroke record.
enum StrokeColumn : int {
  kStrokeChannel = 0,
  kStrokeRow = 1,
  kStrokeCol = 2,
  kStrokePixelsOn = 3,
  kStrokeChannels = 4,
  kStrokeColumns = 5,
};

}  // namespace cpia
