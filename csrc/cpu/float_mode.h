// The floating-point mode of the CPU kernels' work. torch.set_flush_denormal(True) turns on
// flush-to-zero and denormals-are-zero for the calling thread only, so without this guard a denormal
// response would compare as zero in the tasks that run on that thread and as itself in those on
// ATen's worker threads (and on the GPU). Each task runs with both off and gives the thread its mode
// back at the end.
#pragma once

#include <cstdint>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define CPIA_FLOAT_MODE_MXCSR 1
#elif defined(__aarch64__)
#define CPIA_FLOAT_MODE_FPCR 1
#endif

namespace cpia {

class DenormalsKept {
 public:
#if defined(CPIA_FLOAT_MODE_MXCSR)
  DenormalsKept() : saved_(_mm_getcsr()) {
    constexpr unsigned kFlushToZero = 1u << 15, kDenormalsAreZero = 1u << 6;
    _mm_setcsr(saved_ & ~(kFlushToZero | kDenormalsAreZero));
  }
  ~DenormalsKept() { _mm_setcsr(saved_); }
#elif defined(CPIA_FLOAT_MODE_FPCR)
  DenormalsKept() {
    constexpr uint64_t kFlushToZero = uint64_t{1} << 24;  // FPCR.FZ
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_ & ~kFlushToZero));
  }
  ~DenormalsKept() { __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_)); }
#else
  DenormalsKept() = default;  // no mode to set known here: the thread's own applies
#endif
  DenormalsKept(const DenormalsKept&) = delete;
  DenormalsKept& operator=(const DenormalsKept&) = delete;

 private:
#if defined(CPIA_FLOAT_MODE_MXCSR)
  unsigned saved_;
#elif defined(CPIA_FLOAT_MODE_FPCR)
  uint64_t saved_ = 0;
#endif
};

}  // namespace cpia
