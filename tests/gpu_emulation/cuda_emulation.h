// CUDA semantics for the host compiler: the GPU branches of kernels/*.cu compiled by g++ and run
// on the grid and block sizes the launchers ask for. Test-only; it never enters the package.
//
// Forced in front of a kernel file (-include), it defines __CUDACC__ so that common.cuh takes its
// GPU branch unchanged, and supplies what NVRTC would: the function qualifiers, blockIdx /
// threadIdx / blockDim / gridDim, __shared__, __syncthreads, atomicAdd and the math built-ins.
//
// Execution model (cuda_emulation_runtime.h runs a launch):
//  - blocks run concurrently on the host's OpenMP threads, so writes that two blocks race on
//    without an atomic can really collide, and atomicAdd is a real compare-and-swap;
//  - the threads of one block are fibers (ucontext) of one host thread, switched at
//    __syncthreads: a block's threads all reach a barrier before any passes it, as on a GPU;
//  - between barriers the threads of a block run one after another in a scrambled order (not
//    0, 1, 2, ...), so a read of another thread's shared-memory write that lacks its barrier
//    sees the stale value, as it may on a GPU;
//  - __shared__ variables are per host thread, i.e. per block being run there;
//  - a barrier reached by some threads of a block while others have returned is reported
//    (undefined behaviour on a GPU).
#pragma once
#define __CUDACC__ 1
#include <cmath>
#include <cstdint>
#include <cstring>

using std::floor;
using std::log;
using std::sqrt;
using std::exp;
using std::fabs;
using std::sin;
using std::cos;
using std::atan2;

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __align__(n) alignas(n)
#define __shared__ static thread_local

struct cpt_emu_dim3 {
  unsigned x, y, z;
};

namespace cpt_emu {
// One thread of a block: a fiber with its own stack. The stacks are STACK_BYTES long and aligned to
// STACK_BYTES, with a pointer to their fiber near the top, so a fiber finds itself from the address
// of any local variable: threadIdx and co. cost no thread-local lookup in the kernels' loops.
constexpr unsigned long STACK_BYTES = 256 * 1024;
enum State { RUNNABLE, AT_BARRIER, DONE };
struct Fiber {
  void* sp;                           // saved stack pointer (x86-64 switch)
  void** scheduler_sp;                // where the scheduler's is saved
  cpt_emu_dim3 tid, bid, bdim, gdim;
  State state;
  void (*body)(void*);
  void* arg;
  char* stack;
  void* context;                      // ucontext_t* (the portable switch)
};
// where a stack keeps its fiber's address: at its top, just above the fiber's first frame (one page
// for both), at an offset that varies from stack to stack (at one offset, every stack's slot would
// fall in the same cache set)
inline Fiber** fiber_slot(unsigned long stack) {
  return reinterpret_cast<Fiber**>(stack + STACK_BYTES - 64 * (1 + (stack / STACK_BYTES) % 32));
}
inline Fiber* self() {
  char here;
  unsigned long at = reinterpret_cast<unsigned long>(&here);
  // launder the address: otherwise the compiler takes the pointer below for one into `here` and drops
  // the stores made through it (a one-byte local cannot hold a fiber)
  __asm__("" : "+r"(at));
  return *fiber_slot(at & ~(STACK_BYTES - 1));
}
void syncthreads();
}  // namespace cpt_emu

#define threadIdx (cpt_emu::self()->tid)
#define blockIdx (cpt_emu::self()->bid)
#define blockDim (cpt_emu::self()->bdim)
#define gridDim (cpt_emu::self()->gdim)
#define __syncthreads() cpt_emu::syncthreads()

// atomicAdd: compare-and-swap on the value's bits, as sm_60+ does in hardware; returns the old value
template <typename T, typename U>
inline T cpt_emu_atomic_add(T* address, T value) {
  U* bits = reinterpret_cast<U*>(address);
  U old = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    T old_value, new_value;
    std::memcpy(&old_value, &old, sizeof(T));
    new_value = old_value + value;
    U desired;
    std::memcpy(&desired, &new_value, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &old, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return old_value;
  }
}
inline double atomicAdd(double* a, double v) { return cpt_emu_atomic_add<double, std::uint64_t>(a, v); }
inline float atomicAdd(float* a, float v) { return cpt_emu_atomic_add<float, std::uint32_t>(a, v); }
inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
}
