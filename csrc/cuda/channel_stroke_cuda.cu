// Channel stroke on CUDA: the whole greedy loop of one image runs in one thread block (a persistent
// kernel, no launch or host synchronisation per stroke); the images of a batch run in parallel
// blocks. Semantics: docs/algorithm.md; per-element rules: paint_rules.h (shared with the CPU).
//
// The data structure is the CPU kernel's: per-channel max trees over 8x8 tiles of candidate keys.
// Each step the block takes
//   (a) the max of the channel roots without the cursor channel c* (block reduction over C), and
//   (b) the penalised best of c*: a pass over c*'s tiles computes for each a floor (a key its best
//       element reaches for sure), a second one thread per tile its ceiling (no element beats it);
//       tiles whose ceiling does not beat max(a, best floor) are skipped, the others are scanned one
//       warp per tile.
// A stroke is applied one thread per brush cell (distinct locations, so independent), each thread
// taking the channels of P in order (they depend on each other through tau only at the cell).
// Tiles that lost their best element are rescanned and their tree paths rebuilt by one warp per
// channel.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../brush.h"
#include "../op_checks.h"
#include "../paint_rules.h"
#include "block_reduce.cuh"

namespace cpia {
namespace {

constexpr int kThreads = 512;
// Stroke records one launch keeps, over all images of the batch: the stroke buffer's size. A longer
// run goes on in further launches from the state it left, so the buffer stays small whatever the
// image and tau. (A build-time knob: the emulated tests set it small to make runs span launches.)
#ifndef CPIA_CUDA_STROKE_RECORDS_PER_LAUNCH
#define CPIA_CUDA_STROKE_RECORDS_PER_LAUNCH (int64_t{1} << 22)
#endif
// Most blocks of the set-up kernels' grids, which loop over their work past it. (A build-time knob:
// the emulated tests set it small so that the loops run.)
#ifndef CPIA_CUDA_SETUP_GRID_BLOCKS
#define CPIA_CUDA_SETUP_GRID_BLOCKS 65535
#endif
// Stop reason of an image whose stroke buffer filled up: the next launch resumes it.
constexpr int32_t kStopBufferFull = -2;
// Per image between launches: strokes made, the cursor (c, h, w; -1 unset), covered locations.
enum LoopStateField : int {
  kStateStrokes = 0,
  kStateCursorC,
  kStateCursorH,
  kStateCursorW,
  kStateCovered,
  kStateFields,
};
constexpr int kWarps = kThreads / 32;
static_assert(kTileElements == 64, "a tile is scanned by one warp, two elements a lane");

// One image's sizes. C*H*W < 2^32 (op_checks.h), so an index inside an image (element c*HW + at,
// location at = h*W + w, tile id c*tiles + t) fits in 32 bits: half the registers of a 64-bit one,
// and a 32-bit division is a few instructions where a 64-bit one is a call.
struct Geometry {
  uint32_t C, H, W, HW;
  uint32_t tiles_w, tiles;  // tiles per channel (< 2^30)
  uint32_t tree_width;      // leaves per channel tree (power of two >= tiles)
  int tree_height;          // log2(tree_width) < 31
};

struct StrokeArgs {
  Geometry g;
  const float* y;                // (N, C, H, W)
  const bool* allowed;           // (N, H, W)
  uint8_t* on;                   // (N, C, H, W), starts as init_mask
  int32_t* channels_on;          // (N, H, W)
  int32_t* order;                // (N, C, H, W)
  Key* trees;                    // (N, C, 2 * tree_width); node 1 is the root, leaves from tree_width
  uint32_t* tile_dirty;          // (N, C * tiles)
  uint32_t* dirty_tiles;         // (N, C * tiles): c * tiles + t (< C*H*W < 2^32)
  uint32_t* stroke_channels;     // (N, C): the channel set P of the current stroke, past its second
  uint32_t* saturated;           // (N, brush cells): locations h * W + w that reached tau in this stroke
  int32_t* strokes;              // (N, capacity, 5): this launch's records
  int64_t* loop_state;           // (N, kStateFields)
  int32_t* stop_reasons;         // (N,): kStopBufferFull while an image has strokes to make
  unsigned long long* channel_counts;  // (N, C): elements on at allowed locations
  const float* y_max;            // (N,): max response at allowed locations
  const int64_t* allowed_count;  // (N,)
  const int32_t* brush;          // (cells, 2): (dh, dw) in raster order
  int32_t brush_cells;
  const float* distance_weights;
  int64_t distance_weights_size;
  int64_t capacity;  // records per image and launch
  int32_t tau;
  float m;
  int32_t p;
  float min_response;
  int64_t max_strokes;  // < 0: none
  double max_coverage;  // < 0: none
};

__device__ __forceinline__ uint32_t tile_of(const Geometry& g, uint32_t at) {
  return ((at / g.W) / kTileH) * g.tiles_w + (at % g.W) / kTileW;
}

class ImagePainter {
 public:
  __device__ ImagePainter(const StrokeArgs& a, int64_t n)
      : a_(a),
        g_(a.g),
        y_(a.y + n * a.g.C * a.g.HW),
        allowed_(a.allowed + n * a.g.HW),
        on_(a.on + n * a.g.C * a.g.HW),
        channels_on_(a.channels_on + n * a.g.HW),
        order_(a.order + n * a.g.C * a.g.HW),
        trees_(a.trees + n * a.g.C * 2 * a.g.tree_width),
        tile_dirty_(a.tile_dirty + n * a.g.C * a.g.tiles),
        dirty_tiles_(a.dirty_tiles + n * a.g.C * a.g.tiles),
        stroke_channels_(a.stroke_channels + n * a.g.C),
        saturated_(a.saturated + n * a.brush_cells),
        strokes_(a.strokes + n * a.capacity * kStrokeColumns) {}

  __device__ bool is_candidate_at(uint32_t c, uint32_t at) const {
    return is_candidate(allowed_[at], on_[c * g_.HW + at] != 0, channels_on_[at], a_.tau);
  }

  // Channel c's tree: node 1 is the root, the leaves start at tree_width (C * 2 * tree_width may
  // pass 2^32, hence the 64-bit offset).
  __device__ Key* tree(uint32_t c) const { return trees_ + static_cast<uint64_t>(c) * 2 * g_.tree_width; }

  __device__ Key leaf(uint32_t c, uint32_t t) const { return tree(c)[g_.tree_width + t]; }

  __device__ float weight_at(int64_t d2) const {
    return distance_weight(a_.distance_weights, a_.distance_weights_size, d2);
  }

  // Max key of tile t on channel c, with the cursor penalty when `cursor_h >= 0`; one warp.
  __device__ Key warp_scan_tile(uint32_t c, uint32_t t, int32_t cursor_h, int32_t cursor_w) const {
    const int lane = threadIdx.x & 31;
    const TileRect r = tile_rect(t, g_.tiles_w, g_.H, g_.W);
    Key best = kNoCandidate;
    for (int e = lane; e < kTileElements; e += 32) {
      const int64_t h = r.h0 + e / kTileW, w = r.w0 + e % kTileW;
      if (h > r.h1 || w > r.w1) continue;
      const uint32_t at = static_cast<uint32_t>(h) * g_.W + static_cast<uint32_t>(w);
      if (!is_candidate_at(c, at)) continue;
      const uint32_t flat = c * g_.HW + at;
      float score = y_[flat];
      if (cursor_h >= 0) score = penalised_score(score, weight_at(squared_distance(h, w, cursor_h, cursor_w)));
      const Key key = make_key(score, flat);
      best = key > best ? key : best;
    }
    return warp_max(best);
  }

  // Block-uniform argmax of the score over the candidates (kNoCandidate if none).
  __device__ Key best_candidate(int32_t cursor_c, int32_t cursor_h, int32_t cursor_w, BlockMax& block_max) const {
    Key local = kNoCandidate;
    for (uint32_t c = threadIdx.x; c < g_.C; c += blockDim.x) {
      const Key root = tree(c)[1];
      if (static_cast<int32_t>(c) != cursor_c && root > local) local = root;
    }
    if (cursor_c < 0) return block_max(local);

    // The bar a tile of c* must beat: the best of the other channels or the best floor of c*.
    Key floor_local = local;
    for (uint32_t t = threadIdx.x; t < g_.tiles; t += blockDim.x) {
      const Key tile_best = leaf(cursor_c, t);
      if (tile_best == kNoCandidate) continue;
      const Key key = tile_floor_key(key_score(tile_best), a_.distance_weights, a_.distance_weights_size,
                                     tile_rect(t, g_.tiles_w, g_.H, g_.W), cursor_h, cursor_w);
      floor_local = key > floor_local ? key : floor_local;
    }
    const Key threshold = block_max(floor_local);

    // A warp takes 32 tiles, a lane's ceiling each, then scans the tiles that pass one after another.
    Key scanned = kNoCandidate;
    const int lane = threadIdx.x & 31;
    for (uint32_t first_tile = (threadIdx.x >> 5) * 32; first_tile < g_.tiles; first_tile += kThreads) {
      const uint32_t t = first_tile + lane;
      bool passes = false;
      if (t < g_.tiles) {
        const Key tile_best = leaf(cursor_c, t);
        passes = tile_best != kNoCandidate &&
                 tile_ceiling_key(key_score(tile_best), a_.distance_weights, a_.distance_weights_size,
                                  tile_rect(t, g_.tiles_w, g_.H, g_.W), cursor_h, cursor_w) > threshold;
      }
      for (uint32_t pending = __ballot_sync(0xFFFFFFFFu, passes); pending != 0; pending &= pending - 1) {
        const Key key = warp_scan_tile(cursor_c, first_tile + (__ffs(pending) - 1), cursor_h, cursor_w);
        scanned = key > scanned ? key : scanned;
      }
    }
    // A floor key is never a real key, so the answer is the best other channel or a scanned element.
    return block_max(local > scanned ? local : scanned);
  }

  // Records tile t of channel c for a rescan if the candidate leaving it was its best.
  __device__ void candidate_removed(uint32_t c, uint32_t at, int* dirty_count) {
    const uint32_t t = tile_of(g_, at);
    const uint32_t flat = c * g_.HW + at;
    if (leaf(c, t) != make_key(y_[flat], flat)) return;
    const uint32_t id = c * g_.tiles + t;
    if (atomicExch(&tile_dirty_[id], 1u) == 0u) dirty_tiles_[atomicAdd(dirty_count, 1)] = id;
  }

  // Rescans tile t of channel q and rebuilds its tree path; one warp. Lane l reads the sibling of
  // the path's node at height l; a max-scan over the lanes then gives every node of the path at
  // once (the node at height l + 1 is the max of the leaf and the siblings at heights 0..l).
  __device__ void refresh_tile(uint32_t q, uint32_t t) {
    const Key key = warp_scan_tile(q, t, -1, -1);
    Key* const path_tree = tree(q);
    const int lane = threadIdx.x & 31;
    const uint32_t leaf = g_.tree_width + t;
    Key path_max = lane < g_.tree_height ? path_tree[(leaf >> lane) ^ 1] : kNoCandidate;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const Key below = __shfl_up_sync(0xFFFFFFFFu, path_max, offset);
      if (lane >= offset && below > path_max) path_max = below;
    }
    if (key > path_max) path_max = key;
    if (lane == 0) path_tree[leaf] = key;
    if (lane < g_.tree_height) path_tree[leaf >> (lane + 1)] = path_max;
    __syncwarp();  // the warp's next tile may share this path
  }

  __device__ void run(int64_t n) {
    // Every thread reads these before the barrier below, and thread 0 writes them only at the end:
    // a launch may stop before its first stroke, with no other barrier between.
    if (a_.stop_reasons[n] != kStopBufferFull) return;  // stopped in an earlier launch
    int64_t* state = a_.loop_state + n * kStateFields;
    int64_t stroke = state[kStateStrokes], covered = state[kStateCovered];
    int32_t cursor_c = static_cast<int32_t>(state[kStateCursorC]), cursor_h = static_cast<int32_t>(state[kStateCursorH]),
            cursor_w = static_cast<int32_t>(state[kStateCursorW]);
    BlockMax block_max;
    __shared__ int dirty_count, saturated_count, pixels_on, newly_covered;
    if (threadIdx.x == 0) dirty_count = saturated_count = pixels_on = newly_covered = 0;
    __syncthreads();

    const float threshold = response_threshold(a_.min_response, a_.y_max[n]);
    const int64_t allowed_count = a_.allowed_count[n];
    const int64_t first = stroke;  // the first stroke of this launch, record 0
    int32_t reason = kStopExhausted;
    for (;; ++stroke) {
      if (a_.max_strokes >= 0 && stroke >= a_.max_strokes) {
        reason = kStopMaxStrokes;
        break;
      }
      if (a_.max_coverage >= 0 && coverage_reached(covered, allowed_count, a_.max_coverage)) {
        reason = kStopMaxCoverage;
        break;
      }
      const Key best = best_candidate(cursor_c, cursor_h, cursor_w, block_max);
      if (best == kNoCandidate) {
        reason = kStopExhausted;
        break;
      }
      const uint32_t flat = key_flat_index(best);
      const uint32_t c = flat / g_.HW, centre = flat % g_.HW;
      const uint32_t h = centre / g_.W, w = centre % g_.W;
      if (below_min_response(y_[flat], threshold)) {
        reason = kStopMinResponse;
        break;
      }
      // Checked once a stroke is certain to be made, so a run that ends exactly here ends in this launch.
      if (stroke - first == a_.capacity) {
        reason = kStopBufferFull;
        break;
      }

      // The channel set P: c, then the best channels that are off at the centre, while room is left.
      // Every thread knows P's first two channels; the rest go through shared memory.
      const int32_t extra = penetration_extra(a_.p, a_.tau, channels_on_[centre]);
      int32_t channels = 1;
      uint32_t second_channel = 0;  // set when channels > 1
      Key previous = ~Key{0};
      for (int32_t k = 0; k < extra; ++k) {
        Key local = kNoCandidate;
        for (uint32_t q = threadIdx.x; q < g_.C; q += blockDim.x) {
          if (q == c || on_[q * g_.HW + centre]) continue;
          // Keys rank channels by the channel precedence of paint_rules.h.
          const Key key = make_key(y_[q * g_.HW + centre], q);
          if (key < previous && key > local) local = key;
        }
        const Key chosen = block_max(local);
        if (chosen == kNoCandidate) break;
        previous = chosen;
        if (channels == 1) {
          second_channel = key_flat_index(chosen);
        } else if (threadIdx.x == 0) {
          stroke_channels_[channels] = key_flat_index(chosen);
        }
        ++channels;
      }
      // The brush writes the centre's count and state that the lines above read, which a reduction's
      // barrier already put behind it unless there was none, and reads the channels past the second.
      if (extra == 0 || channels > 2) __syncthreads();  // block-uniform

      // The stroke, one thread per brush cell: a cell is one location, so its channels of P can be
      // decided there in P's order by that thread (the count under tau is all they share), and the
      // cells run in parallel with no block barrier between the channels.
      for (int32_t j = threadIdx.x; j < a_.brush_cells; j += blockDim.x) {
        const int32_t dh = a_.brush[2 * int64_t{j}], dw = a_.brush[2 * int64_t{j} + 1];  // j may pass 2^30
        // Signed 64-bit: a brush offset may reach past either edge by up to 2^31.
        const int64_t hh = int64_t{h} + dh, ww = int64_t{w} + dw;
        if (hh < 0 || hh >= g_.H || ww < 0 || ww >= g_.W) continue;
        const uint32_t at = static_cast<uint32_t>(hh) * g_.W + static_cast<uint32_t>(ww);
        const bool allowed = allowed_[at], is_centre = dh == 0 && dw == 0;
        const int32_t before = channels_on_[at];
        int32_t count = before;
        for (int32_t i = 0; i < channels; ++i) {
          const uint32_t q = i == 0 ? c : i == 1 ? second_channel : stroke_channels_[i];
          if (!is_candidate(allowed, on_[q * g_.HW + at] != 0, count, a_.tau)) continue;
          if (!brush_cell_switches_on(is_centre, y_[q * g_.HW + at], y_[q * g_.HW + centre], a_.m)) continue;
          candidate_removed(q, at, &dirty_count);
          on_[q * g_.HW + at] = 1;
          order_[q * g_.HW + at] = static_cast<int32_t>(stroke);
          atomicAdd(&a_.channel_counts[n * g_.C + q], 1ull);
          ++count;
        }
        if (count == before) continue;
        channels_on_[at] = count;
        atomicAdd(&pixels_on, count - before);
        if (before == 0) atomicAdd(&newly_covered, 1);
        if (count == a_.tau) saturated_[atomicAdd(&saturated_count, 1)] = at;
      }
      __syncthreads();

      // Locations that reached tau: none of their channels is a candidate any more. A warp takes
      // a location, its lanes the channels.
      const int saturated = saturated_count;  // block-uniform
      if (saturated > 0) {
        for (int s = threadIdx.x >> 5; s < saturated; s += kWarps) {
          const uint32_t at = saturated_[s];
          for (uint32_t q = threadIdx.x & 31; q < g_.C; q += 32) {
            if (!on_[q * g_.HW + at]) candidate_removed(q, at, &dirty_count);
          }
        }
        __syncthreads();
      }

      // Each warp takes the dirty tiles of its channels (channel % kWarps) one after another, so no
      // two warps touch one tree and no block barrier is needed between the levels of a path.
      const int dirty = dirty_count;
      for (int d = 0; d < dirty; ++d) {
        const uint32_t id = dirty_tiles_[d];
        if ((id / g_.tiles) % kWarps != threadIdx.x >> 5) continue;  // warp-uniform
        refresh_tile(id / g_.tiles, id % g_.tiles);
        if ((threadIdx.x & 31) == 0) tile_dirty_[id] = 0u;
      }

      covered += newly_covered;
      if (threadIdx.x == 0) {
        int32_t* record = strokes_ + (stroke - first) * kStrokeColumns;
        record[kStrokeChannel] = static_cast<int32_t>(c);
        record[kStrokeRow] = static_cast<int32_t>(h);
        record[kStrokeCol] = static_cast<int32_t>(w);
        record[kStrokePixelsOn] = pixels_on;
        record[kStrokeChannels] = channels;
      }
      // The rebuilt tree paths before the next argmax reads them, every thread's reads of the
      // counters before they are cleared.
      __syncthreads();
      if (threadIdx.x == 0) dirty_count = saturated_count = pixels_on = newly_covered = 0;
      cursor_c = static_cast<int32_t>(c);
      cursor_h = static_cast<int32_t>(h);
      cursor_w = static_cast<int32_t>(w);
    }
    if (threadIdx.x == 0) {
      state[kStateStrokes] = stroke;
      state[kStateCursorC] = cursor_c;
      state[kStateCursorH] = cursor_h;
      state[kStateCursorW] = cursor_w;
      state[kStateCovered] = covered;
      a_.stop_reasons[n] = reason;
    }
  }

 private:
  const StrokeArgs& a_;
  const Geometry& g_;
  const float* y_;
  const bool* allowed_;
  uint8_t* on_;
  int32_t* channels_on_;
  int32_t* order_;
  Key* trees_;
  uint32_t* tile_dirty_;
  uint32_t* dirty_tiles_;
  uint32_t* stroke_channels_;
  uint32_t* saturated_;
  int32_t* strokes_;
};

__global__ void __launch_bounds__(kThreads, 2) stroke_loop_kernel(const StrokeArgs args) {
  ImagePainter painter(args, blockIdx.x);
  painter.run(blockIdx.x);
}

// Leaves: the best unpenalised candidate key of every (image, channel, tile); one warp per tile.
__global__ void __launch_bounds__(kThreads) tile_init_kernel(const StrokeArgs args, int64_t images) {
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kWarps;
  const int64_t per_image = args.g.C * args.g.tiles;
  for (int64_t id = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); id < images * per_image;
       id += warps_total) {
    const int64_t n = id / per_image, c = (id % per_image) / args.g.tiles, t = id % args.g.tiles;
    const ImagePainter painter(args, n);
    const Key key = painter.warp_scan_tile(c, t, -1, -1);
    if ((threadIdx.x & 31) == 0) args.trees[(n * args.g.C + c) * 2 * args.g.tree_width + args.g.tree_width + t] = key;
  }
}

// Inner nodes of every channel tree from its leaves; a block per (image, channel) tree at a time.
__global__ void __launch_bounds__(kThreads) tree_build_kernel(Key* trees, int64_t tree_count, int64_t tree_width) {
  for (int64_t id = blockIdx.x; id < tree_count; id += gridDim.x) {  // block-uniform
    Key* tree = trees + id * 2 * tree_width;
    for (int64_t level_start = tree_width >> 1; level_start >= 1; level_start >>= 1) {
      for (int64_t node = level_start + threadIdx.x; node < 2 * level_start; node += blockDim.x) {
        const Key left = tree[2 * node], right = tree[2 * node + 1];
        tree[node] = left > right ? left : right;
      }
      __syncthreads();
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> channel_stroke_cuda(
    const at::Tensor& y, const at::Tensor& allowed, const c10::optional<at::Tensor>& init_mask, const at::Tensor& brush,
    const at::Tensor& distance_weights, int64_t tau, double m, int64_t p,
    c10::optional<double> min_response, c10::optional<int64_t> max_strokes, c10::optional<double> max_coverage) {
  check_channel_stroke_args(y, allowed, init_mask, brush, distance_weights, tau, m, p, min_response, max_strokes,
                            max_coverage);
  const c10::cuda::CUDAGuard device_guard(y.device());
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  const auto int_options = y.options().dtype(at::kInt);
  at::Tensor order = at::full(y.sizes(), -1, int_options);
  if (N == 0 || C * H * W == 0) {
    return {order, at::empty({0, kStrokeColumns}, int_options), at::zeros({N}, y.options().dtype(at::kLong)),
            at::full({N}, static_cast<int32_t>(kStopExhausted), int_options),
            at::zeros({N, C}, y.options().dtype(at::kLong))};
  }
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const at::Tensor weights_c = distance_weights.contiguous();

  Geometry g{static_cast<uint32_t>(C), static_cast<uint32_t>(H), static_cast<uint32_t>(W),
             static_cast<uint32_t>(H * W), static_cast<uint32_t>(ceil_div(W, kTileW)), 0, 1, 0};
  g.tiles = static_cast<uint32_t>(ceil_div(H, kTileH)) * g.tiles_w;
  for (; g.tree_width < g.tiles; g.tree_width <<= 1) ++g.tree_height;

  const std::vector<BrushOffset> offsets = brush_offsets(brush, H, W);
  std::vector<int32_t> offset_pairs;
  for (const BrushOffset& o : offsets) offset_pairs.insert(offset_pairs.end(), {o.dh, o.dw});
  const at::Tensor brush_d =
      at::from_blob(offset_pairs.data(), {static_cast<int64_t>(offsets.size()), 2}, at::kInt).to(y.device());

  // Every stroke switches on at least one element of an allowed location with room under tau.
  const int64_t most_strokes = std::min(C, tau) * H * W;
  int64_t capacity = std::min(most_strokes, std::max<int64_t>(CPIA_CUDA_STROKE_RECORDS_PER_LAUNCH / N, 1));
  if (max_strokes.has_value()) capacity = std::min(capacity, *max_strokes);
  capacity = std::max<int64_t>(capacity, 1);

  at::Tensor on, channels_on, channel_counts;
  if (init_mask.has_value()) {
    on = init_mask->to(at::kByte).contiguous();
    channels_on = init_mask->sum(1, /*keepdim=*/false, at::kInt).contiguous();
    channel_counts = init_mask->logical_and(allowed_c.unsqueeze(1)).sum({2, 3}, false, at::kLong).contiguous();
  } else {
    on = at::zeros(y.sizes(), y.options().dtype(at::kByte));
    channels_on = at::zeros({N, H, W}, int_options);
    channel_counts = at::zeros({N, C}, y.options().dtype(at::kLong));
  }
  // Ymax sets the min_response threshold only: without one, no pass over Y for it.
  at::Tensor y_max =
      min_response.has_value()
          ? y_c.masked_fill(allowed_c.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity())
                .amax({1, 2, 3})
                .contiguous()
          : at::zeros({N}, y.options());
  at::Tensor allowed_count = allowed_c.sum({1, 2}, false, at::kLong).contiguous();
  at::Tensor loop_state = at::full({N, kStateFields}, -1, y.options().dtype(at::kLong));
  loop_state.select(1, kStateStrokes).zero_();
  loop_state.select(1, kStateCovered).copy_(allowed_c.logical_and(channels_on > 0).sum({1, 2}, false, at::kLong));
  at::Tensor trees = at::zeros({N, C, 2 * g.tree_width}, y.options().dtype(at::kLong));
  at::Tensor tile_dirty = at::zeros({N, C * g.tiles}, int_options);
  at::Tensor dirty_tiles = at::empty({N, C * g.tiles}, int_options);
  at::Tensor stroke_channels = at::empty({N, C}, int_options);
  at::Tensor saturated = at::empty({N, static_cast<int64_t>(offsets.size())}, int_options);
  at::Tensor stroke_buffer = at::empty({N, capacity, kStrokeColumns}, int_options);
  at::Tensor stop_reasons = at::full({N}, kStopBufferFull, int_options);

  StrokeArgs args;
  args.g = g;
  args.y = y_c.data_ptr<float>();
  args.allowed = allowed_c.data_ptr<bool>();
  args.on = on.data_ptr<uint8_t>();
  args.channels_on = channels_on.data_ptr<int32_t>();
  args.order = order.data_ptr<int32_t>();
  args.trees = reinterpret_cast<Key*>(trees.data_ptr<int64_t>());
  args.tile_dirty = reinterpret_cast<uint32_t*>(tile_dirty.data_ptr<int32_t>());
  args.dirty_tiles = reinterpret_cast<uint32_t*>(dirty_tiles.data_ptr<int32_t>());
  args.stroke_channels = reinterpret_cast<uint32_t*>(stroke_channels.data_ptr<int32_t>());
  args.saturated = reinterpret_cast<uint32_t*>(saturated.data_ptr<int32_t>());
  args.strokes = stroke_buffer.data_ptr<int32_t>();
  args.loop_state = loop_state.data_ptr<int64_t>();
  args.stop_reasons = stop_reasons.data_ptr<int32_t>();
  args.channel_counts = reinterpret_cast<unsigned long long*>(channel_counts.data_ptr<int64_t>());
  args.y_max = y_max.data_ptr<float>();
  args.allowed_count = allowed_count.data_ptr<int64_t>();
  args.brush = brush_d.data_ptr<int32_t>();
  args.brush_cells = static_cast<int32_t>(offsets.size());
  args.distance_weights = weights_c.data_ptr<float>();
  args.distance_weights_size = weights_c.numel();
  args.capacity = capacity;
  args.tau = static_cast<int32_t>(tau);
  args.m = static_cast<float>(m);
  args.p = static_cast<int32_t>(p);
  args.min_response = min_response.has_value() ? static_cast<float>(*min_response) : kNoMinResponse;
  args.max_strokes = max_strokes.value_or(-1);
  args.max_coverage = max_coverage.value_or(-1.0);

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t tile_warps = N * C * g.tiles;
  const int tile_blocks = static_cast<int>(std::min<int64_t>(ceil_div(tile_warps, kWarps), CPIA_CUDA_SETUP_GRID_BLOCKS));
  tile_init_kernel<<<tile_blocks, kThreads, 0, stream>>>(args, N);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int tree_blocks = static_cast<int>(std::min<int64_t>(N * C, CPIA_CUDA_SETUP_GRID_BLOCKS));
  tree_build_kernel<<<tree_blocks, kThreads, 0, stream>>>(args.trees, N * C, g.tree_width);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Launch after launch until every image has stopped; launch k records image n's strokes in the
  // first made[k][n] rows of n's slot of the buffer, and the images that stopped return at once.
  std::vector<at::Tensor> launch_records;
  std::vector<at::Tensor> launch_counts;  // on the host
  const at::Tensor strokes_made = loop_state.select(1, kStateStrokes);
  for (;;) {
    const at::Tensor made_before = strokes_made.clone();
    stroke_loop_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor made = strokes_made - made_before;
    const at::Tensor made_and_reasons = at::stack({made, stop_reasons.to(at::kLong)}).cpu();
    const at::Tensor filled = at::arange(capacity, made.options()).unsqueeze(0) < made.unsqueeze(1);
    launch_records.push_back(stroke_buffer.index({filled}));
    launch_counts.push_back(made_and_reasons[0]);
    if (!made_and_reasons[1].eq(kStopBufferFull).any().item<bool>()) break;
    // Each stroke switches an element on, so a run that goes on past most_strokes is a kernel bug.
    TORCH_CHECK(strokes_made.max().item<int64_t>() <= most_strokes,
                "channel_stroke (CUDA): internal error, more strokes than elements, please report");
  }
  TORCH_CHECK(stop_reasons.ge(0).all().item<bool>(), "channel_stroke (CUDA): internal error, please report");

  at::Tensor strokes;
  if (launch_records.size() == 1) {
    strokes = launch_records[0];
  } else {  // image by image, its launches in order
    std::vector<at::Tensor> parts;
    std::vector<int64_t> offsets(launch_records.size(), 0);
    for (int64_t n = 0; n < N; ++n) {
      for (size_t k = 0; k < launch_records.size(); ++k) {
        const int64_t count = launch_counts[k][n].item<int64_t>();
        parts.push_back(launch_records[k].narrow(0, offsets[k], count));
        offsets[k] += count;
      }
    }
    strokes = at::cat(parts);
  }
  return {order, strokes, strokes_made.clone(), stop_reasons, channel_counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(cpia, CUDA, m) { m.impl("channel_stroke", &channel_stroke_cuda); }

}  // namespace cpia
