// Uninitialised scratch memory for the CPU kernels' per-element working copies. Large buffers are
// 2 MiB aligned and advised as transparent huge pages where the OS offers them, so the first touch
// of a 16 MB copy takes a handful of page faults instead of thousands, and the stroke loop's random
// accesses miss the TLB less.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <memory>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace cpia {

template <typename T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(int64_t count) {
    constexpr size_t kHugePage = size_t{2} << 20;
    const size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(T);
    void* memory = nullptr;
    if (bytes >= 2 * kHugePage) {
      const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
      memory = std::aligned_alloc(kHugePage, rounded);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (memory != nullptr) madvise(memory, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
    } else {
      memory = std::malloc(bytes);
    }
    TORCH_CHECK(memory != nullptr, "cpia: out of memory allocating ", bytes, " bytes of working memory");
    memory_.reset(static_cast<T*>(memory));
  }

  T* get() const { return memory_.get(); }
  T& operator[](int64_t i) const { return memory_.get()[i]; }

 private:
  struct Free {
    void operator()(T* memory) const { std::free(memory); }
  };
  std::unique_ptr<T, Free> memory_;
};

}  // namespace cpia
