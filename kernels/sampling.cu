// Bilinear sampling of object patches at fractional positions (MATH.md step 1) and its
// adjoint and position derivative. Reference twins: cuptycho/reference.py patch_fwd,
// patch_adj, patch_posgrad.
//
// Shapes (C order): obj (Mo, H, W) complex; pos (J, 2) float64 (y, x); patches (J, Mo, Ny, Nx).
// T = field real type (float | double), P = position real type (double). The taps, weights, row
// address and sample are bilinear.cuh's, shared with exitwave.cu.
#include "bilinear.cuh"

// patch_fwd: patches[j, m] = bilinear sample of obj[m] at pos[j].
// Launch: grid-stride over J*Mo*Ny*Nx elements (GPU); rows J*Mo*Ny in parallel (CPU).
template <typename T, typename P>
CPT_DEV void patch_fwd(const cplx<T>* CPT_RESTRICT obj, long long n_modes, long long h, long long w,
                       const P* CPT_RESTRICT pos, long long n_pos, long long ny, long long nx,
                       cplx<T>* CPT_RESTRICT patches) {
  CPT_FOR_ROWS(row, n_pos * n_modes * ny, nx)
    const long long r = row % ny, m = (row / ny) % n_modes, j = row / (ny * n_modes);
    const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
    const BilinearWeights<T> wt = bilinear_weights<T>(t);
    const cplx<T>* a = obj + tap_row(t, m, r, h, w);
    cplx<T>* out = patches + row * nx;
    CPT_FOR_COLS(c, nx) { out[c] = sample(a, w, wt, c); }
  CPT_END_ROWS
}

// patch_tile_keys (GPU): the object tiles (tile x tile pixels, row-major, tiles_x per row) that each
// patch's scatter reaches, as sort keys for patch_adj's gather. Patch j's footprint is object rows
// y0 .. y0 + ny and columns x0 .. x0 + nx (its taps); it spans at most slots_y = ny / tile + 2 tile
// rows and slots_x columns. Slot (j, sy, sx) gets key (tile id) * n_pos + j where that tile is in the
// footprint, else n_tiles * n_pos + j (sorted past every real key). Sorted, the keys list every
// tile's patches j ascending: the launcher cuts them into tile_start / tile_pos.
template <typename P>
CPT_DEV void patch_tile_keys(const P* CPT_RESTRICT pos, long long n_pos, long long ny, long long nx, long long h,
                             long long w, long long tile, long long* CPT_RESTRICT keys) {
  const long long slots_y = ny / tile + 2, slots_x = nx / tile + 2;
  const long long tiles_x = (w + tile - 1) / tile, n_tiles = ((h + tile - 1) / tile) * tiles_x;
  CPT_FOR(i, n_pos * slots_y * slots_x) {
    const long long sx = i % slots_x, sy = (i / slots_x) % slots_y, j = i / (slots_x * slots_y);
    const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
    const long long ty = t.y0 / tile + sy, tx = t.x0 / tile + sx;
    const bool inside = ty <= (t.y0 + ny) / tile && tx <= (t.x0 + nx) / tile;
    keys[i] = (inside ? ty * tiles_x + tx : n_tiles) * n_pos + j;
  }
}

// The contributions of patch j (taps t, mode m) to object pixel (y, x), added to acc in the CPU
// branch's order: the top tap of patch row r = y - y0 (weights w00 | w01 of columns c, c - 1), then
// the bottom tap of row r - 1 (w10 | w11); c = x - x0.
template <typename T, typename P>
CPT_HD void gather_taps(const cplx<T>* patch, long long ny, long long nx, const Taps<P>& t, long long y,
                        long long x, cplx<T>& acc) {
  const long long r = y - t.y0, c = x - t.x0;
  if (r < 0 || r > ny || c < 0 || c > nx) return;
  const BilinearWeights<T> wt = bilinear_weights<T>(t);
  const T wl[2] = {wt.w00, wt.w10};
  const T wr[2] = {wt.w01, wt.w11};
  const long long rr[2] = {r, r - 1};
  for (int k = 0; k < 2; ++k) {
    if (rr[k] < 0 || rr[k] >= ny) continue;
    const cplx<T>* g = patch + rr[k] * nx;
    if (c == 0) acc += wl[k] * g[0];
    else if (c == nx) acc += wr[k] * g[nx - 1];
    else acc += wl[k] * g[c] + wr[k] * g[c - 1];
  }
}

// patch_adj: obj_grad[m] += scatter of patches[j, m] with the weights of patch_fwd (its exact
// adjoint); obj_grad accumulates, the caller zeroes it. Both branches gather: every object pixel
// has one writer, which adds the patches that cover it j ascending, so the result is the same on
// every run, whatever the thread count or the launch geometry, with no atomics.
// GPU: one block per object tile (grid-stride over tiles), its threads over the tile's pixels and
//      modes, each looping over the tile's patches: tile_pos[tile_start[t] .. tile_start[t + 1]),
//      j ascending (patch_tile_keys, sorted). tile_start == NULL means one patch (n_pos == 1), whose
//      own footprint tiles the blocks stride (no sort for a sequential PIE step).
// CPU: object rows in parallel; each row adds every patch that covers it, j ascending (no private
//      buffers; tile arguments unused).
template <typename T, typename P>
CPT_DEV void patch_adj(const cplx<T>* CPT_RESTRICT patches, long long n_modes, long long h, long long w,
                       const P* CPT_RESTRICT pos, long long n_pos, long long ny, long long nx,
                       const long long* CPT_RESTRICT tile_start, const long long* CPT_RESTRICT tile_pos,
                       long long tile, cplx<T>* CPT_RESTRICT obj_grad) {
#if CPT_GPU
  const long long tiles_x = (w + tile - 1) / tile;
  const long long slots_x = nx / tile + 2;
  const Taps<P> first = bilinear_taps(pos, 0, ny, nx, h, w);
  const long long n_blocks = tile_start ? ((h + tile - 1) / tile) * tiles_x : (ny / tile + 2) * slots_x;
  for (long long b = blockIdx.x; b < n_blocks; b += gridDim.x) {
    long long ty, tx, k0 = 0, k1 = 1;
    if (tile_start) {
      ty = b / tiles_x, tx = b % tiles_x, k0 = tile_start[b], k1 = tile_start[b + 1];
      if (k0 == k1) continue;
    } else {
      ty = first.y0 / tile + b / slots_x, tx = first.x0 / tile + b % slots_x;
    }
    for (long long p = threadIdx.x; p < n_modes * tile * tile; p += blockDim.x) {
      const long long m = p / (tile * tile), y = ty * tile + (p / tile) % tile, x = tx * tile + p % tile;
      if (y >= h || x >= w) continue;
      cplx<T>& dst = obj_grad[(m * h + y) * w + x];
      cplx<T> acc = dst;
      for (long long k = k0; k < k1; ++k) {
        const long long j = tile_start ? tile_pos[k] : 0;
        gather_taps<T, P>(patches + (j * n_modes + m) * ny * nx, ny, nx, bilinear_taps(pos, j, ny, nx, h, w), y,
                          x, acc);
      }
      dst = acc;
    }
  }
#else
#pragma omp parallel for schedule(dynamic, 4) if(n_pos * n_modes * ny * nx >= CPT_MIN_PARALLEL)
  for (long long row = 0; row < n_modes * h; ++row) {
    const long long m = row / h, y = row % h;
    cplx<T>* CPT_RESTRICT dst = obj_grad + row * w;
    for (long long j = 0; j < n_pos; ++j) {
      const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
      const long long r = y - t.y0;            // patch row r reads this object row as its top tap
      if (r < 0 || r > ny) continue;           // row r - 1 reads it as its bottom tap
      const cplx<T>* patch = patches + (j * n_modes + m) * ny * nx;
      cplx<T>* CPT_RESTRICT d = dst + t.x0;
      // top tap of patch row r (weights w00 | w01), bottom tap of patch row r - 1 (w10 | w11)
      const BilinearWeights<T> wt = bilinear_weights<T>(t);
      const T wl[2] = {wt.w00, wt.w10};
      const T wr[2] = {wt.w01, wt.w11};
      const long long rr[2] = {r, r - 1};
      for (int k = 0; k < 2; ++k) {
        if (rr[k] < 0 || rr[k] >= ny) continue;
        const cplx<T>* CPT_RESTRICT g = patch + rr[k] * nx;
        // column x0 + c receives wl * g[c] (left tap) + wr * g[c - 1] (right tap of c - 1)
        d[0] += wl[k] * g[0];
        for (long long c = 1; c < nx; ++c) d[c] += wl[k] * g[c] + wr[k] * g[c - 1];
        d[nx] += wr[k] * g[nx - 1];
      }
    }
  }
  (void)tile_start;
  (void)tile_pos;
  (void)tile;
#endif
}

// patch_posgrad: dL/d(y, x) of each position from the patch gradient G_o (MATH.md backward chain),
//   dL/dy_j = Re sum_{m,r,c} conj(G_o) do/dty,  do/dty = (1-tx)(O10 - O00) + tx (O11 - O01),
//   dL/dx_j = Re sum_{m,r,c} conj(G_o) do/dtx,  do/dtx = (1-ty)(O01 - O00) + ty (O11 - O10).
// Output (J, 2) float64, overwritten. Sums in double.
// GPU: one block per position (blockDim 256, a power of two), shared-memory tree reduction.
// CPU: positions in parallel.
template <typename T, typename P>
CPT_HD void posgrad_rows(const cplx<T>* obj, long long h, long long w, const cplx<T>* grad, const Taps<P>& t,
                         long long m, long long r, long long c0, long long c1, long long cstep,
                         double& gy, double& gx) {
  const T ty = (T)t.ty, tx = (T)t.tx;
  const cplx<T>* a = obj + tap_row(t, m, r, h, w);
  const cplx<T>* b = a + w;
  double sy = 0, sx = 0;
#if !CPT_GPU
#pragma omp simd reduction(+ : sy, sx)   // lets the double sums vectorise (fixed order)
#endif
  for (long long c = c0; c < c1; c += cstep) {
    const cplx<T> g = grad[c];
    const cplx<T> dy = (1 - tx) * (b[c] - a[c]) + tx * (b[c + 1] - a[c + 1]);
    const cplx<T> dx = (1 - ty) * (a[c + 1] - a[c]) + ty * (b[c + 1] - b[c]);
    sy += (double)(g.re * dy.re + g.im * dy.im);
    sx += (double)(g.re * dx.re + g.im * dx.im);
  }
  gy += sy;
  gx += sx;
}

template <typename T, typename P>
CPT_DEV void patch_posgrad(const cplx<T>* CPT_RESTRICT obj, long long n_modes, long long h, long long w,
                           const P* CPT_RESTRICT pos, long long n_pos, long long ny, long long nx,
                           const cplx<T>* CPT_RESTRICT grad_patches, double* CPT_RESTRICT out) {
#if CPT_GPU
  for (long long j = blockIdx.x; j < n_pos; j += gridDim.x) {
    const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
    double gy = 0, gx = 0;
    for (long long mr = 0; mr < n_modes * ny; ++mr) {
      const long long m = mr / ny, r = mr % ny;
      posgrad_rows<T, P>(obj, h, w, grad_patches + ((j * n_modes + m) * ny + r) * nx, t, m, r,
                         threadIdx.x, nx, blockDim.x, gy, gx);
    }
    cpt_block_sum2(gy, gx);
    if (threadIdx.x == 0) {
      out[2 * j] = gy;
      out[2 * j + 1] = gx;
    }
  }
#else
#pragma omp parallel for schedule(static) if(n_pos * n_modes * ny * nx >= CPT_MIN_PARALLEL)
  for (long long j = 0; j < n_pos; ++j) {
    const Taps<P> t = bilinear_taps(pos, j, ny, nx, h, w);
    double gy = 0, gx = 0;
    for (long long m = 0; m < n_modes; ++m)
      for (long long r = 0; r < ny; ++r)
        posgrad_rows<T, P>(obj, h, w, grad_patches + ((j * n_modes + m) * ny + r) * nx, t, m, r, 0, nx, 1, gy, gx);
    out[2 * j] = gy;
    out[2 * j + 1] = gx;
  }
#endif
}

#define CPT_SAMPLING_ENTRIES(SFX, T)                                                                         \
  CPT_KERNEL void patch_fwd_##SFX(const cplx<T>* obj, long long n_modes, long long h, long long w,          \
                                  const double* pos, long long n_pos, long long ny, long long nx,           \
                                  cplx<T>* patches) {                                                       \
    patch_fwd<T, double>(obj, n_modes, h, w, pos, n_pos, ny, nx, patches);                                  \
  }                                                                                                         \
  CPT_KERNEL void patch_adj_##SFX(const cplx<T>* patches, long long n_modes, long long h, long long w,      \
                                  const double* pos, long long n_pos, long long ny, long long nx,           \
                                  const long long* tile_start, const long long* tile_pos, long long tile,   \
                                  cplx<T>* obj_grad) {                                                      \
    patch_adj<T, double>(patches, n_modes, h, w, pos, n_pos, ny, nx, tile_start, tile_pos, tile, obj_grad); \
  }                                                                                                         \
  CPT_KERNEL void patch_posgrad_##SFX(const cplx<T>* obj, long long n_modes, long long h, long long w,      \
                                      const double* pos, long long n_pos, long long ny, long long nx,       \
                                      const cplx<T>* grad_patches, double* out) {                           \
    patch_posgrad<T, double>(obj, n_modes, h, w, pos, n_pos, ny, nx, grad_patches, out);                    \
  }

CPT_KERNEL void patch_tile_keys_f64(const double* pos, long long n_pos, long long ny, long long nx, long long h,
                                    long long w, long long tile, long long* keys) {
  patch_tile_keys<double>(pos, n_pos, ny, nx, h, w, tile, keys);
}

CPT_SAMPLING_ENTRIES(f32, float)
CPT_SAMPLING_ENTRIES(f64, double)
