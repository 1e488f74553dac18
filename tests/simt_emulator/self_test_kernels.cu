// Kernels that test the SIMT emulator itself (tests/test_cuda_emulated.py): what its warp
// operations return, that a race changes the result with the schedule seed, and that misused
// barriers are errors. Compiled only under the emulator (tests/simt_emulator/build.py).

namespace simt_self_test {

__global__ void warp_operations_kernel(int64_t* out) {
  const int64_t value = 1000 + threadIdx.x;
  int64_t* row = out + threadIdx.x * 4;
  row[0] = __shfl_down_sync(0xFFFFFFFFu, value, 3);
  row[1] = __shfl_xor_sync(0xFFFFFFFFu, value, 5);
  row[2] = __shfl_sync(0xFFFFFFFFu, value, 7);
  row[3] = __ballot_sync(0xFFFFFFFFu, threadIdx.x % 3 == 0);
}

__global__ void last_writer_kernel(int64_t* out) {
  __shared__ int64_t last;
  last = threadIdx.x;  // a race: which write survives depends on the order of the threads
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = last;
}

__global__ void divergent_barrier_kernel(int64_t* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void different_barriers_kernel(int64_t* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void partial_mask_kernel(int64_t* out) { out[threadIdx.x] = __shfl_sync(0xFFFFu, 1, 0); }

at::Tensor launch_on(void (*kernel)(int64_t*), int64_t blocks, int64_t threads, int64_t outputs) {
  at::Tensor out = at::zeros({outputs}, at::kLong);
  kernel<<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0, nullptr>>>(out.data_ptr<int64_t>());
  return out;
}

}  // namespace simt_self_test

TORCH_LIBRARY_FRAGMENT(cpia_emulated, m) {
  using namespace simt_self_test;
  m.def("warp_operations", [](int64_t threads) {
    return launch_on(warp_operations_kernel, 1, threads, threads * 4).view({threads, 4});
  });
  m.def("last_writer", [](int64_t blocks) { return launch_on(last_writer_kernel, blocks, 256, blocks); });
  m.def("divergent_barrier", []() { return launch_on(divergent_barrier_kernel, 1, 64, 64); });
  m.def("different_barriers", []() { return launch_on(different_barriers_kernel, 1, 64, 64); });
  m.def("partial_mask", []() { return launch_on(partial_mask_kernel, 1, 32, 32); });
}
