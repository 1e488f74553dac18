// A SIMT emulator that runs the project's CUDA kernels on the CPU, for tests on machines without a
// GPU (in the spirit of numba's CUDA simulator). Every CUDA thread of a block is a fiber on the
// calling OS thread; a fiber runs until it reaches a barrier (__syncthreads, a warp shuffle or
// vote, __syncwarp). The scheduler resumes runnable fibers in a seeded random order and releases a
// warp as soon as its lanes meet, so warps drift apart between block barriers as on a GPU, and a
// result that depends on the order of threads (a race) changes with the seed. Blocks run one
// after another, so only races inside a block are exercised.
//
// Checked at run time, as errors: a __syncthreads reached by only part of the block, threads of a
// block or lanes of a warp waiting at different barriers, warp operations with a partial mask.
// Not emulated: interleavings inside a barrier interval (a thread's code between two barriers runs
// without interruption, so a race that every serial order of the intervals happens to resolve
// right leaves the results alone), the memory model (every store is seen at once), shared-memory
// bank timing, and device intrinsics the kernels choose under __CUDA_ARCH__ (the host paths of
// paint_rules.h run).
//
// Races inside a barrier interval are what the race check finds: built with -fsanitize=thread
// (tests/simt_emulator/race_check.py), every CUDA thread is a ThreadSanitizer fiber and each barrier
// orders only the threads it waits for (__syncthreads the block, __syncwarp the warp; shuffles and
// votes order no memory), so two accesses to one address, one a write, that no barrier orders are
// reported whatever the schedule. Blocks of a launch are ordered one after the other there, so
// races between blocks go unseen.
//
// tests/simt_emulator/build.py compiles the kernels' .cu files against this header.
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

// CUDA's built-in variables: set by the scheduler before it resumes a thread.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

#if !defined(__x86_64__)
#error "the SIMT emulator switches fibers with x86-64 code"
#endif

// switch_stack(&from, to): saves the callee-saved registers, the SSE and x87 control words and the
// stack pointer of the running fiber in `from`, and resumes the fiber whose stack pointer is `to`.
// (ucontext's swapcontext would do, but makes a system call per switch: 9x slower here.)
extern "C" void simt_switch_stack(void** from, void* to);
asm(R"(
  .text
  .globl simt_switch_stack
  .type simt_switch_stack, @function
simt_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_switch_stack, .-simt_switch_stack
)");

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
// Exported by ThreadSanitizer's runtime, not declared by its header.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace simt {

// The race check's hooks into ThreadSanitizer; without -fsanitize=thread they compile to nothing.
namespace race {
#if defined(__SANITIZE_THREAD__)
inline void* current_fiber() { return __tsan_get_current_fiber(); }
inline void* create_fiber() { return __tsan_create_fiber(0); }
inline void destroy_fiber(void* fiber) { __tsan_destroy_fiber(fiber); }
// Switching fibers orders nothing: only the barriers below do.
inline void switch_to(void* fiber) { __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync); }
inline void release(void* sync) { __tsan_release(sync); }
inline void acquire(void* sync) { __tsan_acquire(sync); }
inline void ignore_accesses_begin() { __tsan_ignore_thread_begin(); }
inline void ignore_accesses_end() { __tsan_ignore_thread_end(); }
#else
inline void* current_fiber() { return nullptr; }
inline void* create_fiber() { return nullptr; }
inline void destroy_fiber(void*) {}
inline void switch_to(void*) {}
inline void release(void*) {}
inline void acquire(void*) {}
inline void ignore_accesses_begin() {}
inline void ignore_accesses_end() {}
#endif
}  // namespace race

constexpr unsigned kWarpSize = 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

// Block barriers passed by all blocks so far: on a GPU each costs every thread of the block a wait
// for the slowest, so their number per stroke is a measure of a kernel's latency.
inline uint64_t& block_barriers_released() {
  static uint64_t count = 0;
  return count;
}

// Warp barriers (shuffles, votes, __syncwarp) passed by all warps so far.
inline uint64_t& warp_barriers_released() {
  static uint64_t count = 0;
  return count;
}

class Block {
 public:
  enum class State { kRunnable, kAtSyncthreads, kAtWarpBarrier, kExited };

  static Block& current() {
    if (running_ == nullptr) throw std::logic_error("simt: a device function was called outside a kernel launch");
    return *running_;
  }

  // Runs `body` as every thread of one block; returns when all threads have exited.
  void run(const std::function<void()>& body, unsigned threads, uint64_t seed) {
    if (threads == 0 || threads % kWarpSize != 0 || threads > 1024) {
      throw std::invalid_argument("simt: blocks of 1..1024 threads in whole warps are emulated, got " +
                                  std::to_string(threads));
    }
    body_ = &body;
    threads_.resize(threads);
    warp_slots_.assign(threads / kWarpSize * 2 * kWarpSize, 0);
    warp_barrier_syncs_.assign(threads / kWarpSize * 2, 0);
    for (unsigned i = 0; i < threads; ++i) {
      Thread& t = threads_[i];
      t.state = State::kRunnable;
      t.site = 0;
      t.exchange_parity = t.warp_barrier_parity = t.block_barrier_parity = 0;
      t.stack.resize(kStackBytes);
      t.stack_pointer = initial_stack_pointer(t.stack);
      // A fresh fiber per block: its threads share nothing with the last block's but what the
      // launch's own ordering gives (below).
      if (t.race_fiber != nullptr) race::destroy_fiber(t.race_fiber);
      t.race_fiber = race::create_fiber();
    }
    random_.seed(seed);
    warp_first_ = seed % 2 == 0;
    current_warp_ = 0;
    runnable_.assign(threads / kWarpSize, {});
    runnable_count_ = 0;
    release(0, threads);
    warp_arrivals_.assign(threads / kWarpSize, 0);
    at_syncthreads_ = exited_ = 0;
    Block* const outer = running_;
    running_ = this;
    scheduler_fiber_ = race::current_fiber();
    // What the caller did before the block (inputs, poisoned shared memory) happens before each of
    // its threads; the scheduler's own bookkeeping is no access of the kernel's.
    race::release(&block_start_sync_);
    race::ignore_accesses_begin();
    try {
      while (exited_ < threads) {
        if (runnable_count_ == 0) diagnose_deadlock();
        const unsigned i = pick_runnable();
        resume(i);
        if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
        arrived(i);
      }
    } catch (...) {
      // The block's unfinished threads never reach the end that orders them before the caller, so
      // the race check stops looking at the caller's accesses instead of reporting them all.
      running_ = outer;
      throw;
    }
    race::ignore_accesses_end();
    race::acquire(&block_end_sync_);  // and every thread of the block happens before what follows
    running_ = outer;
  }

  // Suspends the calling thread at a barrier of `line` until the scheduler releases it. Warp
  // shuffles and votes wait too, but order no memory accesses (CUDA promises that of __syncwarp
  // and __syncthreads only), which the race check models with `orders_memory`.
  void wait(State state, int line, bool orders_memory = true) {
    Thread& t = threads_[current_];
    // A barrier orders what its threads did before it before what they do after it. Two sync
    // objects per barrier, used in turn: a thread that passed this barrier and reached the next one
    // before a slower thread resumed must not be ordered before that thread's next interval.
    const bool block_barrier = state == State::kAtSyncthreads;
    unsigned& parity = block_barrier ? t.block_barrier_parity : t.warp_barrier_parity;
    char* sync = block_barrier ? &block_barrier_syncs_[parity]
                               : &warp_barrier_syncs_[(current_ / kWarpSize) * 2 + parity];
    if (orders_memory) race::release(sync);
    t.state = state;
    t.site = line;
    race::switch_to(scheduler_fiber_);
    simt_switch_stack(&t.stack_pointer, scheduler_);
    if (orders_memory) {
      race::acquire(sync);
      parity ^= 1u;
    }
  }

  // One round of a warp exchange: every lane publishes `bits`, waits for its warp, and reads lane
  // `source` (its own value if `source` is outside the warp).
  uint64_t exchange(uint64_t bits, int source, int line) {
    const unsigned thread = current_;
    const unsigned lane = thread % kWarpSize, warp = thread / kWarpSize;
    unsigned& parity = threads_[thread].exchange_parity;
    // Two slot sets used in turn: a lane can only write the set again after every lane of its warp
    // passed the barrier in between, so after each had read it.
    // The slots stand for the warp's shuffle network, not for memory the race check would see.
    uint64_t* slots = &warp_slots_[(warp * 2 + parity) * kWarpSize];
    race::ignore_accesses_begin();
    slots[lane] = bits;
    race::ignore_accesses_end();
    wait(State::kAtWarpBarrier, line, /*orders_memory=*/false);
    parity ^= 1u;
    race::ignore_accesses_begin();
    const uint64_t received = source >= 0 && source < static_cast<int>(kWarpSize) ? slots[source] : bits;
    race::ignore_accesses_end();
    return received;
  }

  // Every lane's published value of the last exchange, as a bit per lane (value != 0).
  unsigned last_exchange_ballot() const {
    const unsigned thread = current_;
    const uint64_t* published =
        &warp_slots_[((thread / kWarpSize) * 2 + (threads_[thread].exchange_parity ^ 1u)) * kWarpSize];
    unsigned bits = 0;
    race::ignore_accesses_begin();
    for (unsigned lane = 0; lane < kWarpSize; ++lane) bits |= (published[lane] != 0 ? 1u : 0u) << lane;
    race::ignore_accesses_end();
    return bits;
  }

 private:
  static constexpr size_t kStackBytes = 64 * 1024;

  struct Thread {
    void* stack_pointer;
    std::vector<char> stack;
    State state = State::kRunnable;
    int site = 0;
    unsigned exchange_parity = 0;
    unsigned warp_barrier_parity = 0, block_barrier_parity = 0;  // which of a barrier's two sync objects
    void* race_fiber = nullptr;
  };

  // A new fiber's stack as simt_switch_stack leaves it: control words, six registers, and the
  // address it returns to, thread_entry, entered as if called (stack pointer 8 off 16-alignment).
  static void* initial_stack_pointer(std::vector<char>& stack) {
    auto top = reinterpret_cast<uintptr_t>(stack.data() + stack.size()) & ~uintptr_t{15};
    auto* slots = reinterpret_cast<uint64_t*>(top) - 9;
    slots[0] = 0x037Full << 32 | 0x1F80u;  // x87 control word (high half), MXCSR: the defaults
    for (int i = 1; i <= 6; ++i) slots[i] = 0;
    slots[7] = reinterpret_cast<uint64_t>(&Block::thread_entry);
    slots[8] = 0;  // thread_entry never returns
    return slots;
  }

  // An exception (a misused warp operation) ends the thread; the scheduler rethrows it.
  [[noreturn]] static void thread_entry() {
    race::acquire(&block_start_sync_);
    Block& block = *running_;
    try {
      (*block.body_)();
    } catch (...) {
      block.error_ = std::current_exception();
    }
    Thread& t = block.threads_[block.current_];
    t.state = State::kExited;
    void* const scheduler_fiber = block.scheduler_fiber_;  // read before the release: the next block writes it
    race::release(&block_end_sync_);
    race::switch_to(scheduler_fiber);
    simt_switch_stack(&t.stack_pointer, block.scheduler_);
    __builtin_unreachable();
  }

  void resume(unsigned i) {
    current_ = i;
    threadIdx = dim3(i);
    race::switch_to(threads_[i].race_fiber);
    simt_switch_stack(&scheduler_, threads_[i].stack_pointer);
  }

  [[noreturn]] void fail(const std::string& what) const {
    std::ostringstream message;
    message << "simt: block " << blockIdx.x << ": " << what << " [first thread: state@line:";
    int runs = 0;
    for (unsigned i = 0; i < threads_.size() && runs < 8; ++i) {
      const Thread& t = threads_[i];
      if (i == 0 || t.state != threads_[i - 1].state || t.site != threads_[i - 1].site) {
        static const char* names[] = {"runnable", "__syncthreads", "warp barrier", "exited"};
        message << " " << i << ":" << names[static_cast<int>(t.state)] << "@" << t.site;
        ++runs;
      }
    }
    message << (runs == 8 ? " ...]" : "]");
    throw std::runtime_error(message.str());
  }

  // Books thread i's stop: a warp barrier is released when all lanes of the warp are at it, the
  // block barrier when every thread of the block is.
  void arrived(unsigned i) {
    const unsigned threads = static_cast<unsigned>(threads_.size());
    const Thread& t = threads_[i];
    if (t.state == State::kExited) {
      ++exited_;
    } else if (t.state == State::kAtWarpBarrier) {
      const unsigned first = i / kWarpSize * kWarpSize;
      if (++warp_arrivals_[i / kWarpSize] < kWarpSize) return;
      warp_arrivals_[i / kWarpSize] = 0;
      for (unsigned lane = first; lane < first + kWarpSize; ++lane) {
        if (threads_[lane].site != t.site) fail("lanes of one warp wait at different warp operations");
      }
      ++warp_barriers_released();
      release(first, first + kWarpSize);
    } else if (t.state == State::kAtSyncthreads) {
      if (++at_syncthreads_ < threads) return;
      at_syncthreads_ = 0;
      for (const Thread& other : threads_) {
        if (other.site != t.site) fail("threads wait at different __syncthreads");
      }
      ++block_barriers_released();
      release(0, threads);
    }
  }

  void release(unsigned first, unsigned end) {
    for (unsigned i = first; i < end; ++i) {
      threads_[i].state = State::kRunnable;
      runnable_[i / kWarpSize].push_back(i);
    }
    runnable_count_ += end - first;
  }

  // Takes the thread to resume next out of the runnable ones. Two orders, by the seed's parity,
  // both letting warps drift apart between block barriers as on a GPU: any runnable thread at
  // random (odd seeds), or warp by warp, a warp running on as long as any of its lanes can
  // (even seeds: a warp gets as far ahead of the others as it can, e.g. into the next reduction).
  unsigned pick_runnable() {
    auto draw = [&](size_t count) { return std::uniform_int_distribution<size_t>(0, count - 1)(random_); };
    if (!warp_first_ || runnable_[current_warp_].empty()) {
      size_t k = draw(runnable_count_);
      current_warp_ = 0;
      while (k >= runnable_[current_warp_].size()) k -= runnable_[current_warp_++].size();
    }
    std::vector<unsigned>& lanes = runnable_[current_warp_];
    const size_t k = draw(lanes.size());
    const unsigned i = lanes[k];
    lanes[k] = lanes.back();
    lanes.pop_back();
    --runnable_count_;
    return i;
  }

  [[noreturn]] void diagnose_deadlock() const {
    if (at_syncthreads_ > 0 && at_syncthreads_ + exited_ == threads_.size()) {
      fail("__syncthreads reached by part of the block, the rest exited");
    }
    fail("deadlock: no barrier can be released");
  }

  static inline Block* running_ = nullptr;
  const std::function<void()>* body_ = nullptr;
  std::exception_ptr error_;
  std::vector<Thread> threads_;
  std::mt19937_64 random_;
  bool warp_first_ = false;
  std::vector<std::vector<unsigned>> runnable_;  // per warp
  unsigned runnable_count_ = 0, current_warp_ = 0;
  std::vector<unsigned> warp_arrivals_;  // per warp: lanes at its barrier
  unsigned at_syncthreads_ = 0, exited_ = 0;
  std::vector<uint64_t> warp_slots_;  // per warp: two sets of 32 slots
  unsigned current_ = 0;
  void* scheduler_ = nullptr;  // the scheduler's stack pointer while a fiber runs
  // The race check's sync objects (only their addresses matter) and the scheduler's fiber.
  static inline char block_start_sync_ = 0, block_end_sync_ = 0;
  char block_barrier_syncs_[2] = {};
  std::vector<char> warp_barrier_syncs_;  // per warp: two
  void* scheduler_fiber_ = nullptr;
};

inline uint64_t& schedule_seed() {
  static uint64_t seed = 0;
  return seed;
}

inline std::vector<unsigned char>& dynamic_shared_memory() {
  static std::vector<unsigned char> memory;
  return memory;
}

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(dynamic_shared_memory().data());
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...) becomes launch(kernel, grid, block,
// shared_bytes, stream)(args...). Blocks run in order; each starts with poisoned dynamic shared memory.
template <typename Kernel>
auto launch(Kernel kernel, dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t = nullptr) {
  return [=](auto... args) {
    if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1) {
      throw std::invalid_argument("simt: only 1-D grids and blocks are emulated");
    }
    const std::function<void()> body = [&] { kernel(args...); };
    gridDim = grid;
    blockDim = block;
    static Block executor;  // keeps its fiber stacks from launch to launch (launches never nest)
    for (unsigned b = 0; b < grid.x; ++b) {
      blockIdx = dim3(b);
      dynamic_shared_memory().assign(shared_bytes, 0xA5);
      executor.run(body, block.x, schedule_seed() * 0x9E3779B97F4A7C15ull + 2 * b);  // keeps the parity
    }
  };
}

template <typename T>
uint64_t to_bits(T value) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp exchanges carry up to 64 bits");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

inline void require_full_mask(unsigned mask) {
  if (mask != kFullMask) throw std::logic_error("simt: warp operations with a partial mask are not emulated");
}

template <typename T>
T shfl(unsigned mask, T value, int source, int line) {
  require_full_mask(mask);
  return from_bits<T>(Block::current().exchange(to_bits(value), source, line));
}

inline int lane_id() { return static_cast<int>(threadIdx.x % kWarpSize); }

}  // namespace simt

// Device built-ins used by the kernels.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

#define __syncthreads() ::simt::Block::current().wait(::simt::Block::State::kAtSyncthreads, __LINE__)
#define __syncwarp(...) ::simt::sync_warp(__LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(mask, value, source) ::simt::shfl(mask, value, (source) % 32, __LINE__)
#define __shfl_down_sync(mask, value, delta) ::simt::shfl(mask, value, ::simt::lane_id() + (delta), __LINE__)
#define __shfl_up_sync(mask, value, delta) ::simt::shfl(mask, value, ::simt::lane_id() - (delta), __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask) ::simt::shfl(mask, value, ::simt::lane_id() ^ (lane_mask), __LINE__)
#define __ballot_sync(mask, predicate) ::simt::ballot(mask, predicate, __LINE__)

namespace simt {
inline void sync_warp(int line, unsigned mask = kFullMask) {
  require_full_mask(mask);
  Block::current().wait(Block::State::kAtWarpBarrier, line);
}

inline unsigned ballot(unsigned mask, bool predicate, int line) {
  require_full_mask(mask);
  Block& block = Block::current();
  block.exchange(predicate ? 1u : 0u, -1, line);
  return block.last_exchange_ballot();
}
}  // namespace simt

template <typename T>
T __ldg(const T* address) {
  return *address;
}
inline int __popc(unsigned bits) { return __builtin_popcount(bits); }
inline int __clz(int bits) { return bits == 0 ? 32 : __builtin_clz(static_cast<unsigned>(bits)); }
inline int __ffs(int bits) { return __builtin_ffs(bits); }

// Fibers switch only at barriers, so any read-modify-write would be atomic here; the atomic
// builtins (relaxed, as CUDA's atomics are) tell the race check that these accesses may overlap.
template <typename T>
T atomicAdd(T* address, T value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
template <typename T>
T atomicExch(T* address, T value) {
  return __atomic_exchange_n(address, value, __ATOMIC_RELAXED);
}

template <typename T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
T max(T a, T b) {
  return a < b ? b : a;
}

// The runtime calls of the kernels' host code, answered as an H100/H200 would.
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int) {
  if (attribute != cudaDevAttrMaxSharedMemoryPerBlockOptin) throw std::logic_error("simt: device attribute");
  *value = 227 * 1024;
  return cudaSuccess;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel, cudaFuncAttribute, int) {
  return cudaSuccess;
}
