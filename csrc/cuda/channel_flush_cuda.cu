// Channel flush on CUDA, a memory-bound per-location top-tau selection. A block loads the C
// responses of up to 32 consecutive locations with coalesced reads into shared memory (as
// rank words, flush_rank_word in paint_rules.h); one warp per location finds the tau-th largest
// word by a most-significant-bit-first radix search that starts below the bits all the location's
// words share, keeps ties by ascending channel, and the block writes the kept flags back with
// coalesced writes. Up to 1024 channels a lane holds its words in registers for the search, which
// then reads shared memory once instead of once per bit.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <mutex>
#include <unordered_map>

#include "../op_checks.h"
#include "../paint_rules.h"

namespace cpia {
namespace {

constexpr int kFlushThreads = 256;
constexpr int kFlushWarps = kFlushThreads / 32;

// Warp-wide sum, min and max, every lane getting the result: one instruction each from sm_80 on,
// a butterfly of shuffles before.
template <typename T, typename Combine>
__device__ __forceinline__ T warp_butterfly(T value, Combine combine) {
  for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, __shfl_xor_sync(0xFFFFFFFFu, value, offset));
  return value;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ int warp_sum(int value) { return __reduce_add_sync(0xFFFFFFFFu, value); }
__device__ __forceinline__ uint32_t warp_min(uint32_t value) { return __reduce_min_sync(0xFFFFFFFFu, value); }
__device__ __forceinline__ uint32_t warp_max(uint32_t value) { return __reduce_max_sync(0xFFFFFFFFu, value); }
#else
__device__ __forceinline__ int warp_sum(int value) {
  return warp_butterfly(value, [](int a, int b) { return a + b; });
}
__device__ __forceinline__ uint32_t warp_min(uint32_t value) {
  return warp_butterfly(value, [](uint32_t a, uint32_t b) { return min(a, b); });
}
__device__ __forceinline__ uint32_t warp_max(uint32_t value) {
  return warp_butterfly(value, [](uint32_t a, uint32_t b) { return max(a, b); });
}
#endif

// A lane's words of one location: channels lane, lane + 32, ... . kWords > 0: the first kWords of
// them copied into registers (C <= 32 * kWords); kWords == 0: read from the shared row each time.
template <int kWords>
struct LaneWords {
  uint32_t word[kWords];
  __device__ LaneWords(const uint32_t* row, int64_t C, int lane) {
#pragma unroll
    for (int j = 0; j < kWords; ++j) word[j] = lane + 32 * j < C ? row[lane + 32 * j] : 0u;  // 0: no word
  }
  __device__ int count_at_least(uint32_t bound) const {  // bound > 0
    int count = 0;
#pragma unroll
    for (int j = 0; j < kWords; ++j) count += word[j] >= bound;
    return count;
  }
  __device__ void extend_range(uint32_t& low, uint32_t& high, int64_t C, int lane) const {
#pragma unroll
    for (int j = 0; j < kWords; ++j) {
      if (lane + 32 * j < C) {
        low = min(low, word[j]);
        high = max(high, word[j]);
      }
    }
  }
};

template <>
struct LaneWords<0> {
  const uint32_t* row;
  int64_t C;
  int lane;
  __device__ LaneWords(const uint32_t* row_, int64_t C_, int lane_) : row(row_), C(C_), lane(lane_) {}
  __device__ int count_at_least(uint32_t bound) const {
    int count = 0;
    for (int64_t c = lane; c < C; c += 32) count += row[c] >= bound;
    return count;
  }
  __device__ void extend_range(uint32_t& low, uint32_t& high, int64_t, int) const {
    for (int64_t c = lane; c < C; c += 32) {
      low = min(low, row[c]);
      high = max(high, row[c]);
    }
  }
};

// The tau-th largest word of a location (every lane of the warp gets it); `split_exactly` is set
// when exactly tau words are >= it, so those are the kept ones whatever the ties below.
template <int kWords>
__device__ uint32_t tau_th_word(const LaneWords<kWords>& words, int64_t C, int lane, int tau, bool& split_exactly) {
  // Every word shares the leading bits on which the smallest and the largest agree, and so does
  // the tau-th: the search starts below them.
  uint32_t low = 0xFFFFFFFFu, high = 0u;
  words.extend_range(low, high, C, lane);
  low = warp_min(low);
  high = warp_max(high);
  const int shared_bits = low == high ? 32 : __clz(low ^ high);
  // Largest word T such that at least tau words are >= T, decided bit by bit.
  uint32_t tau_th = shared_bits == 32 ? low : low & ~(0xFFFFFFFFu >> shared_bits);
  split_exactly = false;
  for (int bit = 31 - shared_bits; bit >= 0 && !split_exactly; --bit) {
    const uint32_t candidate = tau_th | (1u << bit);
    const int total = warp_sum(words.count_at_least(candidate));
    if (total >= tau) {
      tau_th = candidate;
      split_exactly = total == tau;
    }
  }
  return tau_th;
}

template <int kWords>
__global__ void __launch_bounds__(kFlushThreads)
    channel_flush_kernel(const float* __restrict__ y, const bool* __restrict__ allowed, bool* __restrict__ kept,
                         int64_t C, int64_t HW, int64_t groups_per_image, int locations_per_block, int pitch,
                         int tau) {
  extern __shared__ uint32_t words[];  // [location][pitch]
  uint8_t* flags = reinterpret_cast<uint8_t*>(words + static_cast<int64_t>(locations_per_block) * pitch);
  const int64_t n = blockIdx.x / groups_per_image;
  const int64_t first = (blockIdx.x % groups_per_image) * locations_per_block;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* plane = y + n * C * HW;
  const int64_t span = min(static_cast<int64_t>(locations_per_block), HW - first);

  if (lane < span) {  // lanes read consecutive locations of one channel; 8 loads in flight per lane
    const float* source = plane + first + lane;
    uint32_t* row = words + lane * pitch;
    int64_t c = warp;
    for (; c + 7 * kFlushWarps < C; c += 8 * kFlushWarps) {
      float values[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) values[u] = __ldg(source + (c + u * kFlushWarps) * HW);
#pragma unroll
      for (int u = 0; u < 8; ++u) row[c + u * kFlushWarps] = flush_rank_word(values[u]);
    }
    for (; c < C; c += kFlushWarps) row[c] = flush_rank_word(__ldg(source + c * HW));
  }
  __syncthreads();

  for (int loc = warp; loc < span; loc += kFlushWarps) {
    const uint32_t* row = words + loc * pitch;
    uint8_t* out = flags + loc * pitch;
    if (!allowed[n * HW + first + loc]) {
      for (int64_t c = lane; c < C; c += 32) out[c] = 0;
      continue;
    }
    bool split_exactly;
    const uint32_t tau_th = tau_th_word(LaneWords<kWords>(row, C, lane), C, lane, tau, split_exactly);
    if (split_exactly) {
      for (int64_t c = lane; c < C; c += 32) out[c] = row[c] >= tau_th;
      continue;
    }
    int above = 0;
    for (int64_t c = lane; c < C; c += 32) above += row[c] > tau_th;
    const int ties_kept = tau - warp_sum(above);
    // Ties at the tau-th response go to the smaller channels (channel precedence, paint_rules.h).
    int ties_before = 0;
    for (int64_t base = 0; base < C; base += 32) {
      const int64_t c = base + lane;
      const bool tie = c < C && row[c] == tau_th;
      const unsigned tie_lanes = __ballot_sync(0xFFFFFFFFu, tie);
      const int rank = ties_before + __popc(tie_lanes & ((1u << lane) - 1u));
      if (c < C) out[c] = row[c] > tau_th || (tie && rank < ties_kept);
      ties_before += __popc(tie_lanes);
    }
  }
  __syncthreads();

  bool* kept_plane = kept + n * C * HW;
  for (int64_t c = warp; c < C; c += kFlushWarps) {
    for (int loc = lane; loc < span; loc += 32) kept_plane[c * HW + first + loc] = flags[loc * pitch + c];
  }
}

using FlushKernel = void (*)(const float*, const bool*, bool*, int64_t, int64_t, int64_t, int, int, int);

// The instantiation for C channels: a lane's words in as few registers as hold them, up to 1024
// channels; past that, from shared memory.
constexpr FlushKernel kFlushKernels[] = {channel_flush_kernel<1>,  channel_flush_kernel<2>,  channel_flush_kernel<4>,
                                         channel_flush_kernel<8>,  channel_flush_kernel<16>, channel_flush_kernel<32>,
                                         channel_flush_kernel<0>};

FlushKernel flush_kernel_for(int64_t C) {
  constexpr int kLast = static_cast<int>(sizeof(kFlushKernels) / sizeof(kFlushKernels[0])) - 1;
  int k = 0;
  while (k < kLast && (int64_t{32} << k) < C) ++k;
  return kFlushKernels[k];
}

// The kernels may use all the shared memory a block can opt into on the current device; set once per
// device (a per-call attribute would race between host threads flushing different C).
int64_t opt_in_shared_memory() {
  static std::mutex mutex;
  static std::unordered_map<int, int> opt_in_bytes;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  auto found = opt_in_bytes.find(device);
  if (found == opt_in_bytes.end()) {
    int bytes = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    for (const FlushKernel kernel : kFlushKernels) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    }
    found = opt_in_bytes.emplace(device, bytes).first;
  }
  return found->second;
}

at::Tensor channel_flush_cuda(const at::Tensor& y, const at::Tensor& allowed, int64_t tau) {
  check_channel_flush_args(y, allowed, tau);
  const c10::cuda::CUDAGuard device_guard(y.device());
  at::Tensor kept = at::empty(y.sizes(), y.options().dtype(at::kBool));  // every element is written
  if (kept.numel() == 0) return kept;
  const at::Tensor y_c = y.contiguous();
  const at::Tensor allowed_c = allowed.contiguous();
  const int64_t N = y.size(0), C = y.size(1), HW = y.size(2) * y.size(3);

  // An odd pitch makes the per-location rows hit distinct shared-memory banks.
  const int64_t pitch = C | 1;
  const int64_t bytes_per_location = pitch * static_cast<int64_t>(sizeof(uint32_t) + sizeof(uint8_t));
  const int64_t shared_limit = opt_in_shared_memory();
  int locations = 32;
  while (locations > 1 && locations * bytes_per_location > shared_limit) locations /= 2;
  TORCH_CHECK(locations * bytes_per_location <= shared_limit, "channel_flush on CUDA supports C up to ",
              ((shared_limit / static_cast<int64_t>(sizeof(uint32_t) + sizeof(uint8_t))) - 1) | 1,
              " channels on this device, got C = ", C);
  const int64_t shared_bytes = locations * bytes_per_location;
  const int64_t groups = (HW + locations - 1) / locations;
  const FlushKernel kernel = flush_kernel_for(C);
  kernel<<<static_cast<unsigned>(N * groups), kFlushThreads, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(
      y_c.data_ptr<float>(), allowed_c.data_ptr<bool>(), kept.data_ptr<bool>(), C, HW, groups, locations,
      static_cast<int>(pitch), static_cast<int>(tau));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return kept;
}

}  // namespace

TORCH_LIBRARY_IMPL(cpia, CUDA, m) { m.impl("channel_flush", &channel_flush_cuda); }

}  // namespace cpia
