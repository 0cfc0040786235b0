// cuptycho kernels: portability header shared by every kernels/*.cu file. It holds only the
// portability macros and the complex type cplx<T>; domain helpers live in their own headers
// (bilinear.cuh: the bilinear taps, weights and sampling of sampling.cu and exitwave.cu).
//
// One source, three compilers: nvcc and NVRTC (both define __CUDACC__; NVRTC also
// __CUDACC_RTC__) build the GPU kernels, the host C++ compiler with -fopenmp builds the same
// bodies for the CPU. Nothing else may be included on the GPU path: NVRTC has no standard
// library headers, and the math functions below are CUDA built-ins there.
//
// Function kinds: CPT_HD = callable from host and device code (helpers); CPT_DEV = a kernel
// body with its loop driver inside (device function on the GPU, plain function on the CPU);
// CPT_KERNEL = an extern "C" entry, one per dtype, that calls a CPT_DEV body.
//
// Loop shapes (the same body, two drivers):
//   CPT_FOR(i, n)          flat loop. GPU: grid-stride loop. CPU: `omp parallel for` (serial
//                          below CPT_MIN_PARALLEL elements).
//   CPT_FOR_ROWS(row, nrows, ncols) ... CPT_FOR_COLS(col, ncols) { ... } CPT_END_ROWS
//                          "rows in parallel, columns inner". CPU: one row per iteration of an
//                          `omp parallel for`, so per-row set-up (taps, pointers) is done once
//                          per row and the column loop can vectorise. GPU: one thread per
//                          (row, col) element; the per-row set-up is recomputed per element.
//   CPT_FOR_ROW_SUMS(row, nrows, ncols) ... CPT_ROW_COLS(col, ncols) { ... } ...
//   CPT_ROW_SUMS_ADD(p, a, q, b) CPT_END_ROWS
//                          rows whose columns add up to sums: *p += a and *q += b once per row (a
//                          null p or q is skipped; the caller zeroes them first). CPU: as
//                          CPT_FOR_ROWS, a plain add. GPU: one block per row (grid-stride over
//                          rows), its threads over the columns, the sums by a fixed-order block
//                          reduction added by thread 0: no atomics, the same sums on every run.
//                          Every thread of a block reaches CPT_ROW_SUMS_ADD (it has barriers): a
//                          row may be skipped (`continue`) only as a whole.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#  define CPT_GPU 1
#  define CPT_HD __host__ __device__ __forceinline__
#  define CPT_DEV __device__ __forceinline__
#  define CPT_KERNEL extern "C" __global__
#  define CPT_RESTRICT __restrict__
#  define CPT_COMPLEX_ALIGN(n) __align__(n)
#  define CPT_THREAD_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#  define CPT_THREAD_STRIDE ((long long)blockDim.x * gridDim.x)
#  define CPT_FOR(i, n) \
     for (long long i = CPT_THREAD_INDEX; i < (long long)(n); i += CPT_THREAD_STRIDE)
#  define CPT_FOR_ROWS(row, nrows, ncols)                                                  \
     for (long long cpt_i_ = CPT_THREAD_INDEX; cpt_i_ < (long long)(nrows) * (ncols);      \
          cpt_i_ += CPT_THREAD_STRIDE) {                                                   \
       const long long row = cpt_i_ / (ncols);                                             \
       const long long cpt_col_ = cpt_i_ % (ncols);
#  define CPT_FOR_COLS(col, ncols) \
       for (long long col = cpt_col_, cpt_once_ = 0; cpt_once_ < 1; ++cpt_once_)
#  define CPT_END_ROWS }
#  define CPT_FOR_ROW_SUMS(row, nrows, ncols) \
     for (long long row = blockIdx.x; row < (long long)(nrows); row += gridDim.x) {
#  define CPT_ROW_COLS(col, ncols) \
       for (long long col = threadIdx.x; col < (long long)(ncols); col += blockDim.x)
#  define CPT_ROW_SUMS_ADD(p, a, q, b)                                                     \
       do {                                                                                \
         double cpt_a_ = (a), cpt_b_ = (b);                                                \
         cpt_block_sum2(cpt_a_, cpt_b_);                                                   \
         if (threadIdx.x == 0) {                                                           \
           if (p) *(p) += cpt_a_;                                                          \
           if (q) *(q) += cpt_b_;                                                          \
         }                                                                                 \
       } while (0)
// a and b summed over the threads of the block (256, BLOCK in launchers/_core.py), in a fixed tree
// order, the totals in every thread; every thread of the block must call it (barriers)
__device__ __forceinline__ void cpt_block_sum2(double& a, double& b) {
  __shared__ double sa[256], sb[256];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sa[threadIdx.x] += sa[threadIdx.x + s];
      sb[threadIdx.x] += sb[threadIdx.x + s];
    }
    __syncthreads();
  }
  a = sa[0];
  b = sb[0];
  __syncthreads();                       // every thread has read the totals before the next call writes
}
#else
#  include <cmath>
#  include <omp.h>
using std::floor;
using std::log;
using std::sqrt;
#  define CPT_GPU 0
#  define CPT_HD inline
#  define CPT_DEV static inline
#  define CPT_KERNEL extern "C"
#  define CPT_RESTRICT __restrict__
#  define CPT_COMPLEX_ALIGN(n)
// Loops over fewer than CPT_MIN_PARALLEL elements run on the calling thread: waking the pool
// (passive waiting, see cuptycho/_build.py) costs tens of microseconds, more than the work of a
// single patch (the sequential PIE engines launch per position). The one-pass outer `for` only
// binds the element count to a name the pragma can see.
#  define CPT_MIN_PARALLEL 32768LL
#  define CPT_FOR(i, n)                                                                    \
     for (long long cpt_n_ = (long long)(n), cpt_once_ = 0; cpt_once_ < 1; ++cpt_once_)    \
     _Pragma("omp parallel for schedule(static) if(cpt_n_ >= CPT_MIN_PARALLEL)")           \
     for (long long i = 0; i < cpt_n_; ++i)
#  define CPT_FOR_ROWS(row, nrows, ncols)                                                  \
     for (long long cpt_rows_ = (long long)(nrows), cpt_n_ = cpt_rows_ * (long long)(ncols), cpt_once_ = 0; \
          cpt_once_ < 1; ++cpt_once_)                                                       \
     _Pragma("omp parallel for schedule(static) if(cpt_n_ >= CPT_MIN_PARALLEL)")           \
     for (long long row = 0; row < cpt_rows_; ++row) {
#  define CPT_FOR_COLS(col, ncols) for (long long col = 0; col < (long long)(ncols); ++col)
#  define CPT_END_ROWS }
#  define CPT_FOR_ROW_SUMS(row, nrows, ncols) CPT_FOR_ROWS(row, nrows, ncols)
#  define CPT_ROW_COLS(col, ncols) CPT_FOR_COLS(col, ncols)
#  define CPT_ROW_SUMS_ADD(p, a, q, b) \
       do {                            \
         if (p) *(p) += (a);           \
         if (q) *(q) += (b);           \
       } while (0)
#endif

// Complex numbers with the memory layout of numpy's complex64 / complex128 (re, im). Our own
// struct behaves identically under nvcc, NVRTC and g++ (std::complex was 5x slower on the CPU
// build, and CuPy's complex header needs CuPy's include flags). On the GPU it is aligned to its
// size, so a complex is one 8- or 16-byte load or store rather than two (CuPy's allocations are
// 256-byte aligned and every array the kernels take is a C-contiguous run of whole complexes). Not
// on the CPU: NumPy aligns complex128 to 8 bytes only, and the compiler vectorises there anyway.
template <typename T>
struct CPT_COMPLEX_ALIGN(2 * sizeof(T)) cplx {
  T re, im;
};

template <typename T> CPT_HD cplx<T> make_cplx(T re, T im) { cplx<T> z; z.re = re; z.im = im; return z; }
template <typename T> CPT_HD cplx<T> operator+(cplx<T> a, cplx<T> b) { return make_cplx(a.re + b.re, a.im + b.im); }
template <typename T> CPT_HD cplx<T> operator-(cplx<T> a, cplx<T> b) { return make_cplx(a.re - b.re, a.im - b.im); }
template <typename T> CPT_HD cplx<T> operator*(cplx<T> a, cplx<T> b) {
  return make_cplx(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re);
}
template <typename T> CPT_HD cplx<T> operator*(T s, cplx<T> a) { return make_cplx(s * a.re, s * a.im); }
template <typename T> CPT_HD cplx<T>& operator+=(cplx<T>& a, cplx<T> b) { a.re += b.re; a.im += b.im; return a; }
template <typename T> CPT_HD cplx<T> conj(cplx<T> a) { return make_cplx(a.re, -a.im); }
// conj(a) * b, the product every adjoint and gradient needs
template <typename T> CPT_HD cplx<T> conj_mul(cplx<T> a, cplx<T> b) {
  return make_cplx(a.re * b.re + a.im * b.im, a.re * b.im - a.im * b.re);
}
template <typename T> CPT_HD T abs2(cplx<T> a) { return a.re * a.re + a.im * a.im; }
