// The floating-point mode of the CPU kernels' work. torch.set_flush_denormal(True) turns on
// flush-to-zero and denormals-are-zero for the calling thread only, so without this guard a denormal
// response would compare as zero in the tasks that run on that thread and as itself in those on
// ATen's worker threads (and on the GPU). Each task runs with both off and gives the thread its mode
// back at the end.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <xmmintrin.h>
#endif

namespace cpia {

class DenormalsKept {
 public:
  DenormalsKept() {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
    constexpr unsigned kFlushToZero = 1u << 15, kDenormalsAreZero = 1u << 6;  // MXCSR bits
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ & ~(kFlushToZero | kDenormalsAreZero));
#elif defined(__aarch64__)
    constexpr uint64_t kFlushToZero = uint64_t{1} << 24;  // FPCR.FZ
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_ & ~kFlushToZero));
#endif
  }
  ~DenormalsKept() {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
    _mm_setcsr(saved_);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
  }
  DenormalsKept(const DenormalsKept&) = delete;
  DenormalsKept& operator=(const DenormalsKept&) = delete;

 private:
#if defined(__aarch64__)
  uint64_t saved_ = 0;
#else
  unsigned saved_ = 0;
#endif
};

}  // namespace cpia
