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

constexpr size_t kHugePageBytes = size_t{2} << 20;

// Advises the 2 MiB pages inside [memory, memory + bytes) as transparent huge pages, before their
// first touch. Advice only: where the OS does not take it nothing changes.
inline void advise_huge_pages(void* memory, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(memory) + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(memory) + bytes) & ~(kHugePageBytes - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

template <typename T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(int64_t count) {
    const size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(T);
    void* memory = nullptr;
    if (bytes >= 2 * kHugePageBytes) {
      const size_t rounded = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
      memory = std::aligned_alloc(kHugePageBytes, rounded);
      if (memory != nullptr) advise_huge_pages(memory, rounded);
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
