// Fused mixed-state exit waves (MATH.md step 2) and their fused adjoint.
// Reference twins: cuptycho/reference.py exitwave_fwd, exitwave_adj.
//
// Shapes (C order): obj (Mo, H, W); pos (J, 2) float64; probe (K, Ny, Nx);
// waves (J, Mo, K, BNy, BNx): the FFT work buffer, whose window rows off_y .. off_y + Ny - 1 and
// columns off_x .. off_x + Nx - 1 hold the exit wave; the rest is the zero padding of the
// transfer-function propagators (BN = N and off = 0 without padding). The object patch is
// sampled on the fly from the object (bilinear.cuh's sample, patch_fwd's arithmetic): no patch
// array is materialised on the forward path.
#include "bilinear.cuh"

// exitwave_fwd: waves[j, m, k] = probe[k] * sample(obj[m], pos[j]) inside the window, 0 outside.
// Launch: rows (j, m, buffer row) in parallel (CPU); one thread per (j, m, buffer row, column)
// (GPU). The mode loop is outside the column loop so that on the CPU every column loop runs over
// contiguous memory and vectorises (the sample is recomputed per mode: four cached loads).
template <typename T, typename P>
CPT_DEV void exitwave_fwd(const cplx<T>* CPT_RESTRICT obj, long long n_obj, long long h, long long w,
                          const P* CPT_RESTRICT pos, long long n_pos, const cplx<T>* CPT_RESTRICT probe,
                          long long n_probe, long long ny, long long nx, long long bny, long long bnx,
                          long long off_y, long long off_x, cplx<T>* CPT_RESTRICT waves) {
  CPT_FOR_ROWS(row, n_pos * n_obj * bny, bnx)
    const long long br = row % bny, m = (row / bny) % n_obj, j = row / (bny * n_obj);
    const long long r = br - off_y;
    const bool row_inside = r >= 0 && r < ny;
    const bool unpadded = off_x == 0 && bnx == nx;
    const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
    const BilinearWeights<T> wt = bilinear_weights<T>(t);
    const cplx<T>* a = obj + tap_row(t, m, row_inside ? r : 0, h, w);
    for (long long k = 0; k < n_probe; ++k) {
      cplx<T>* CPT_RESTRICT out = waves + (((j * n_obj + m) * n_probe + k) * bny + br) * bnx;
      const cplx<T>* CPT_RESTRICT p = probe + (k * ny + (row_inside ? r : 0)) * nx;
      if (!row_inside) {
        CPT_FOR_COLS(bc, bnx) { out[bc] = make_cplx<T>(0, 0); }
      } else if (unpadded) {                       // the common case, branch-free
        CPT_FOR_COLS(c, nx) { out[c] = p[c] * sample(a, w, wt, c); }
      } else {
        CPT_FOR_COLS(bc, bnx) {
          const long long c = bc - off_x;
          out[bc] = (c >= 0 && c < nx) ? p[c] * sample(a, w, wt, c) : make_cplx<T>(0, 0);
        }
      }
    }
  CPT_END_ROWS
}

// exitwave_adj: from the exit-wave gradient G_psi (the window of grad_waves),
//   grad_patches[j, m] = sum_k conj(probe[k]) G_psi[j, m, k]          (overwritten)
//   grad_probe[k]     += sum_{j, m} conj(o[j, m]) G_psi[j, m, k]       (accumulated; caller zeroes)
// No atomics: the reduction over positions is deterministic, whatever the thread count.
// CPU: each thread owns a block of probe rows and walks (j, m, k, its rows) over all positions, so
// that it streams through contiguous runs of the gradient buffer (a row-at-a-time walk jumped a
// whole plane per row: 5x slower); `partial` is null. GPU: one thread per (position chunk, probe
// pixel), the positions cut into n_chunks consecutive chunks (one thread per pixel looping over
// every position left most of a large GPU idle and waited on each position in turn); each writes
// its chunk's probe gradient to partial (n_chunks, K, Ny, Nx), zeroed by the caller, and
// exitwave_adj_probe_sum then adds the chunks to grad_probe in chunk order.

// one row (j, m, k, r) of the adjoint, columns c0, c0 + cstep, ... < c1; a = the row's top-left
// object tap (tap_row), wt = the position's weights
template <typename T>
CPT_HD void exitwave_adj_row(const cplx<T>* a, long long w, const BilinearWeights<T>& wt,
                             const cplx<T>* CPT_RESTRICT gk, const cplx<T>* CPT_RESTRICT pk,
                             cplx<T>* CPT_RESTRICT gpk, cplx<T>* CPT_RESTRICT gp, bool first,
                             long long c0, long long c1, long long cstep) {
  // two loops rather than a select inside one: a branch in the loop body stops vectorisation
  if (first) {
    for (long long c = c0; c < c1; c += cstep) {
      gpk[c] += conj_mul(sample(a, w, wt, c), gk[c]);
      gp[c] = conj_mul(pk[c], gk[c]);
    }
  } else {
    for (long long c = c0; c < c1; c += cstep) {
      gpk[c] += conj_mul(sample(a, w, wt, c), gk[c]);
      gp[c] += conj_mul(pk[c], gk[c]);
    }
  }
}

template <typename T, typename P>
CPT_DEV void exitwave_adj(const cplx<T>* CPT_RESTRICT obj, long long n_obj, long long h, long long w,
                          const P* CPT_RESTRICT pos, long long n_pos, const cplx<T>* CPT_RESTRICT probe,
                          long long n_probe, long long ny, long long nx, long long bny, long long bnx,
                          long long off_y, long long off_x, const cplx<T>* CPT_RESTRICT grad_waves,
                          cplx<T>* CPT_RESTRICT grad_patches, cplx<T>* CPT_RESTRICT grad_probe,
                          long long n_chunks, cplx<T>* CPT_RESTRICT partial) {
#if CPT_GPU
  const long long per_chunk = (n_pos + n_chunks - 1) / n_chunks;
  CPT_FOR(i, n_chunks * ny * nx) {
    const long long chunk = i / (ny * nx), r = (i / nx) % ny, c = i % nx;
    const long long r0 = r, r1 = r + 1, c0 = c, c1 = c + 1;
    const long long j_begin = chunk * per_chunk, j_end = j_begin + per_chunk < n_pos ? j_begin + per_chunk : n_pos;
    cplx<T>* CPT_RESTRICT probe_sums = partial + chunk * n_probe * ny * nx;
#else
#pragma omp parallel if(n_pos * n_obj * n_probe * ny * nx >= CPT_MIN_PARALLEL)
  {
    const long long nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const long long r0 = ny * tid / nt, r1 = ny * (tid + 1) / nt, c0 = 0, c1 = nx;
    const long long j_begin = 0, j_end = n_pos;
    cplx<T>* CPT_RESTRICT probe_sums = grad_probe;
#endif
    for (long long j = j_begin; j < j_end; ++j) {
      const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
      const BilinearWeights<T> wt = bilinear_weights<T>(t);
      for (long long m = 0; m < n_obj; ++m) {
        for (long long k = 0; k < n_probe; ++k) {
          for (long long r = r0; r < r1; ++r) {
            const cplx<T>* gk = grad_waves + (((j * n_obj + m) * n_probe + k) * bny + off_y + r) * bnx + off_x;
            exitwave_adj_row<T>(obj + tap_row(t, m, r, h, w), w, wt, gk, probe + (k * ny + r) * nx,
                                probe_sums + (k * ny + r) * nx, grad_patches + ((j * n_obj + m) * ny + r) * nx,
                                k == 0, c0, c1, 1);
          }
        }
      }
    }
  }
}

// exitwave_adj_probe_sum: grad_probe[e] += partial[0, e] + partial[1, e] + ... (n_chunks chunks of
// `size` elements), in chunk order: the GPU adjoint's chunk sums, one thread per element.
template <typename T>
CPT_DEV void exitwave_adj_probe_sum(const cplx<T>* CPT_RESTRICT partial, long long n_chunks, long long size,
                                    cplx<T>* CPT_RESTRICT grad_probe) {
  CPT_FOR(e, size) {
    cplx<T> acc = grad_probe[e];
    for (long long c = 0; c < n_chunks; ++c) acc += partial[c * size + e];
    grad_probe[e] = acc;
  }
}

#define CPT_EXITWAVE_ENTRIES(SFX, T)                                                                        \
  CPT_KERNEL void exitwave_fwd_##SFX(const cplx<T>* obj, long long n_obj, long long h, long long w,        \
                                     const double* pos, long long n_pos, const cplx<T>* probe,             \
                                     long long n_probe, long long ny, long long nx, long long bny,         \
                                     long long bnx, long long off_y, long long off_x, cplx<T>* waves) {    \
    exitwave_fwd<T, double>(obj, n_obj, h, w, pos, n_pos, probe, n_probe, ny, nx, bny, bnx, off_y, off_x, \
                            waves);                                                                        \
  }                                                                                                        \
  CPT_KERNEL void exitwave_adj_##SFX(const cplx<T>* obj, long long n_obj, long long h, long long w,        \
                                     const double* pos, long long n_pos, const cplx<T>* probe,             \
                                     long long n_probe, long long ny, long long nx, long long bny,         \
                                     long long bnx, long long off_y, long long off_x,                      \
                                     const cplx<T>* grad_waves, cplx<T>* grad_patches,                     \
                                     cplx<T>* grad_probe, long long n_chunks, cplx<T>* partial) {          \
    exitwave_adj<T, double>(obj, n_obj, h, w, pos, n_pos, probe, n_probe, ny, nx, bny, bnx, off_y, off_x, \
                            grad_waves, grad_patches, grad_probe, n_chunks, partial);                      \
  }                                                                                                        \
  CPT_KERNEL void exitwave_adj_probe_sum_##SFX(const cplx<T>* partial, long long n_chunks, long long size,  \
                                               cplx<T>* grad_probe) {                                      \
    exitwave_adj_probe_sum<T>(partial, n_chunks, size, grad_probe);                                        \
  }

CPT_EXITWAVE_ENTRIES(f32, float)
CPT_EXITWAVE_ENTRIES(f64, double)
