/* cuptycho_kernels.h: C API of the cuptycho kernels (libcuptycho_kernels, built by
 * kernels/CMakeLists.txt from the same kernels/<concern>.cu sources the Python package compiles).
 *
 * Plain C99, usable from C++. Conventions (MATH.md in the design notes has the maths):
 *
 *  - Arrays are dense, C order (last index fastest), batch first, and must not overlap unless
 *    an entry says so. Shapes below are written (outer, ..., inner).
 *  - Suffix _f32: complex fields are cpt_complex64 and real data float; _f64: cpt_complex128
 *    and double. Scan positions are always double (float32 cannot resolve sub-pixel shifts in
 *    large objects), as are loss and gradient sums marked "double".
 *  - A complex number is (re, im), the layout of C's float _Complex / double _Complex,
 *    std::complex and numpy's complex64 / complex128: pointers to those may be cast.
 *  - Gradient convention: for a complex x, grad x = dL/dRe(x) + i dL/dIm(x), so a step dx
 *    changes L by Re(sum conj(grad x) dx). Real parameters use the ordinary derivative.
 *  - "Adjoint" is with respect to <a, b> = sum conj(a) b: an adjoint entry A^H satisfies
 *    <A x, y> = <x, A^H y> to rounding (examples/c/gather_scatter.c checks one).
 *  - Outputs marked "accumulated" are added into: the caller zeroes them first (this lets a
 *    batch be processed in chunks). Outputs marked "overwritten" need no initialisation.
 *  - The entries do not validate their arguments; the Python launchers
 *    (cuptycho/launchers/<concern>.py) do, and each precondition below is the caller's job here.
 *  - Threads: every entry parallelises internally with OpenMP (OMP_NUM_THREADS applies).
 *    Results are deterministic for a given thread count; the reductions marked
 *    "thread-independent" do not depend on it at all.
 *
 * CUDA build (libcuptycho_kernels_cuda, CMake option CUPTYCHO_CUDA=ON): the same names are
 * exported as __global__ kernels taking device pointers. Do not call them as functions; launch
 * them with cudaLaunchKernel((const void*)name, grid, block, args, 0, stream) with 256 threads
 * per block (patch_posgrad, likelihood, detector_likelihood and spectrum_adj require exactly 256:
 * they sum in the block). Every kernel is a grid-stride loop, so any grid size is correct;
 * patch_posgrad runs one block per position, the likelihoods and spectrum_adj one per buffer row
 * (their row sums are block reductions in a fixed order: the same on every run). patch_adj
 * runs one block per object tile and needs the tile lists described at its declaration; its
 * object gradient has one writer per pixel (no atomics), so it too is the same on every run.
 * Both libraries export the same names: link one of them into a program (or dlopen each with
 * RTLD_LOCAL).
 *
 * Custom complex types: define CPT_CUSTOM_COMPLEX and typedef cpt_complex64 / cpt_complex128
 * yourself before including this header (e.g. to std::complex<float> in C++; the type must be
 * two floats / two doubles, real part first). tests/test_c_abi.py uses this to have the C++
 * compiler check every declaration below against its definition in kernels/<concern>.cu.
 */
#ifndef CUPTYCHO_KERNELS_H
#define CUPTYCHO_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CPT_CUSTOM_COMPLEX
typedef struct cpt_complex64 { float re, im; } cpt_complex64;      /* numpy complex64 */
typedef struct cpt_complex128 { double re, im; } cpt_complex128;   /* numpy complex128 */
#endif

/* ===================================================================================== *
 * sampling.cu: bilinear object patches at fractional positions (MATH.md step 1)          *
 * ===================================================================================== *
 * obj (n_modes, h, w) complex: object modes. pos (n_pos, 2) double: (y, x) of each patch's
 * top-left corner in object pixels. patches (n_pos, n_modes, ny, nx) complex.
 * Preconditions: h > ny, w > nx, and 0 <= y <= h - ny, 0 <= x <= w - nx for every position
 * (a position outside that range reads outside the object: undefined behaviour).
 * With y0 = floor(y), ty = y - y0 (likewise x), patch pixel (r, c) of position j is
 *   (1-ty)(1-tx) O[y0+r, x0+c] + (1-ty) tx O[y0+r, x0+c+1] + ty (1-tx) O[y0+r+1, x0+c]
 *   + ty tx O[y0+r+1, x0+c+1],
 * exact crops at integer positions. */

/* patch_fwd: patches = A obj, the bilinear samples (overwritten). */
void patch_fwd_f32(const cpt_complex64* obj, long long n_modes, long long h, long long w,
                   const double* pos, long long n_pos, long long ny, long long nx, cpt_complex64* patches);
void patch_fwd_f64(const cpt_complex128* obj, long long n_modes, long long h, long long w,
                   const double* pos, long long n_pos, long long ny, long long nx, cpt_complex128* patches);

/* patch_adj: obj_grad += A^H patches, the adjoint of patch_fwd: a scatter-add of every patch
 * with the same four weights (accumulated; thread-independent). obj_grad has the object's shape
 * (n_modes, h, w). Every object pixel adds the patches that cover it in index order.
 * The CPU build ignores tile_start, tile_pos and tile (pass NULL, NULL, 0). The CUDA build gathers
 * per object tile of tile x tile pixels (row-major, ceil(w / tile) per row): tile t's patches are
 * tile_pos[tile_start[t] .. tile_start[t + 1]), ascending. Build them with patch_tile_keys (one
 * key per slot, n_pos * (ny / tile + 2) * (nx / tile + 2) slots), sort the keys ascending, then
 * tile_pos = key % n_pos and tile_start[t] = the first sorted key >= t * n_pos (t = 0 .. n_tiles).
 * With n_pos == 1, tile_start = NULL: the blocks cover the patch's own tiles. */
void patch_adj_f32(const cpt_complex64* patches, long long n_modes, long long h, long long w,
                   const double* pos, long long n_pos, long long ny, long long nx,
                   const long long* tile_start, const long long* tile_pos, long long tile, cpt_complex64* obj_grad);
void patch_adj_f64(const cpt_complex128* patches, long long n_modes, long long h, long long w,
                   const double* pos, long long n_pos, long long ny, long long nx,
                   const long long* tile_start, const long long* tile_pos, long long tile, cpt_complex128* obj_grad);

/* patch_tile_keys: keys (n_pos * slots_y * slots_x) long long, overwritten: for patch_adj's tile
 * lists on the GPU (slot (j, sy, sx): tile id * n_pos + j where the patch's footprint reaches
 * that tile, else n_tiles * n_pos + j). Unused on the CPU. */
void patch_tile_keys_f64(const double* pos, long long n_pos, long long ny, long long nx, long long h, long long w,
                         long long tile, long long* keys);

/* patch_posgrad: out (n_pos, 2) double (overwritten) = (dL/dy, dL/dx) of each position, given
 * the patch gradient grad_patches (n_pos, n_modes, ny, nx) = G_o:
 *   dL/dy_j = Re sum_{m,r,c} conj(G_o) do/dty, do/dty = (1-tx)(O10 - O00) + tx (O11 - O01),
 * likewise dL/dx_j. The derivative of patch_fwd with respect to pos (not an adjoint; it is
 * piecewise constant in the fraction and jumps at integer positions). Sums in double. */
void patch_posgrad_f32(const cpt_complex64* obj, long long n_modes, long long h, long long w,
                       const double* pos, long long n_pos, long long ny, long long nx,
                       const cpt_complex64* grad_patches, double* out);
void patch_posgrad_f64(const cpt_complex128* obj, long long n_modes, long long h, long long w,
                       const double* pos, long long n_pos, long long ny, long long nx,
                       const cpt_complex128* grad_patches, double* out);

/* ===================================================================================== *
 * exitwave.cu: mixed-state exit waves (MATH.md step 2), fused with the sampling          *
 * ===================================================================================== *
 * obj (n_obj, h, w) complex; pos (n_pos, 2) double, preconditions as for patch_fwd with the
 * probe size (ny, nx); probe (n_probe, ny, nx) complex.
 * waves (n_pos, n_obj, n_probe, bny, bnx) complex: the FFT work buffer. Its window, rows
 * off_y .. off_y + ny - 1 and columns off_x .. off_x + nx - 1, holds the exit wave; the rest is
 * the zero padding of a padded propagator (bny = ny, bnx = nx, off = 0 without padding).
 * Preconditions: 0 <= off_y, off_y + ny <= bny, and likewise for x. */

/* exitwave_fwd: waves[j, m, k] = probe[k] * o[j, m] inside the window, 0 outside
 * (overwritten), where o[j, m] = patch_fwd(obj)[j, m] is sampled on the fly. */
void exitwave_fwd_f32(const cpt_complex64* obj, long long n_obj, long long h, long long w,
                      const double* pos, long long n_pos, const cpt_complex64* probe, long long n_probe,
                      long long ny, long long nx, long long bny, long long bnx, long long off_y,
                      long long off_x, cpt_complex64* waves);
void exitwave_fwd_f64(const cpt_complex128* obj, long long n_obj, long long h, long long w,
                      const double* pos, long long n_pos, const cpt_complex128* probe, long long n_probe,
                      long long ny, long long nx, long long bny, long long bnx, long long off_y,
                      long long off_x, cpt_complex128* waves);

/* exitwave_adj: the adjoints of exitwave_fwd, from the exit-wave gradient G_psi = the window of
 * grad_waves (n_pos, n_obj, n_probe, bny, bnx) (padding ignored):
 *   grad_patches (n_pos, n_obj, ny, nx) = sum_k conj(probe[k]) G_psi[j, m, k]   (overwritten)
 *       adjoint with respect to the patches o (probe fixed); patch_adj(grad_patches) then
 *       completes the adjoint with respect to obj, and patch_posgrad the position gradient;
 *   grad_probe (n_probe, ny, nx) += sum_{j,m} conj(o[j, m]) G_psi[j, m, k]     (accumulated)
 *       adjoint with respect to the probe (object fixed); thread-independent on the CPU.
 * n_chunks, partial: the GPU build's scratch. The CPU build ignores them (pass 1 and NULL). The CUDA
 * build cuts the positions into n_chunks consecutive chunks, one thread per (chunk, probe pixel),
 * and writes each chunk's probe gradient to partial (n_chunks, n_probe, ny, nx), zeroed by the
 * caller; exitwave_adj_probe_sum then adds them to grad_probe:
 *   grad_probe[e] += partial[0, e] + ... + partial[n_chunks - 1, e]   (size = n_probe * ny * nx) */
void exitwave_adj_f32(const cpt_complex64* obj, long long n_obj, long long h, long long w,
                      const double* pos, long long n_pos, const cpt_complex64* probe, long long n_probe,
                      long long ny, long long nx, long long bny, long long bnx, long long off_y,
                      long long off_x, const cpt_complex64* grad_waves, cpt_complex64* grad_patches,
                      cpt_complex64* grad_probe, long long n_chunks, cpt_complex64* partial);
void exitwave_adj_f64(const cpt_complex128* obj, long long n_obj, long long h, long long w,
                      const double* pos, long long n_pos, const cpt_complex128* probe, long long n_probe,
                      long long ny, long long nx, long long bny, long long bnx, long long off_y,
                      long long off_x, const cpt_complex128* grad_waves, cpt_complex128* grad_patches,
                      cpt_complex128* grad_probe, long long n_chunks, cpt_complex128* partial);
void exitwave_adj_probe_sum_f32(const cpt_complex64* partial, long long n_chunks, long long size,
                                cpt_complex64* grad_probe);
void exitwave_adj_probe_sum_f64(const cpt_complex128* partial, long long n_chunks, long long size,
                                cpt_complex128* grad_probe);

/* ===================================================================================== *
 * propagate.cu: spectral multiplies of the transfer-function propagators (MATH.md step 3) *
 * ===================================================================================== *
 * x, g, spectrum (batch, buf_ny, buf_nx) complex: spectra on the (padded) grid, i.e. raw,
 * unnormalised FFTs of the waves; h (buf_ny, buf_nx) complex = H_z / (buf_ny * buf_nx), the
 * transfer function pre-divided by n so that IFFT_raw(h * FFT_raw(psi)) = F^-1 diag(H_z) F psi;
 * kz (buf_ny, buf_nx) double = 2 pi (sqrt(1/lambda^2 - f^2) - 1/lambda) (angular spectrum,
 * carrier-free) or -pi lambda f^2 (Fresnel); dz_rows (batch * buf_ny) double. */

/* spectrum_fwd: x *= h, in place; when spectrum_out is not NULL it also receives the product
 * (the forward spectrum that spectrum_adj needs for dL/dz; overwritten). */
void spectrum_fwd_f32(cpt_complex64* x, cpt_complex64* spectrum_out, const cpt_complex64* h,
                      long long batch, long long buf_ny, long long buf_nx);
void spectrum_fwd_f64(cpt_complex128* x, cpt_complex128* spectrum_out, const cpt_complex128* h,
                      long long batch, long long buf_ny, long long buf_nx);

/* spectrum_adj: g *= conj(h), in place: the adjoint of spectrum_fwd's multiply. When spectrum
 * is not NULL, first dz_rows[b*buf_ny + r] += -sum_c kz Im(conj(g) spectrum) over row r of item
 * b, with g the raw FFT of G_Psi before the multiply and spectrum from spectrum_fwd: the sum of
 * dz_rows is dL/dz (accumulated; kz and dz_rows are ignored when spectrum is NULL). */
void spectrum_adj_f32(cpt_complex64* g, const cpt_complex64* spectrum, const cpt_complex64* h,
                      const double* kz, double* dz_rows, long long batch, long long buf_ny, long long buf_nx);
void spectrum_adj_f64(cpt_complex128* g, const cpt_complex128* spectrum, const cpt_complex128* h,
                      const double* kz, double* dz_rows, long long batch, long long buf_ny, long long buf_nx);

/* ===================================================================================== *
 * likelihood.cu: intensities, loss and the loss gradient G_Psi (MATH.md steps 4-5)       *
 * ===================================================================================== *
 * waves (n_pos, n_modes, buf_ny, buf_nx) complex, n_modes = object modes x probe modes: the
 * propagated waves of each pattern, updated in place to G_Psi. data (n_pos, ny, nx) real
 * intensities; mask (ny, nx) real when mask_per_pattern == 0, else (n_pos, ny, nx) (weights,
 * 0 = ignored pixel). loss_rows (n_pos * ny) double, accumulated: their sum is the loss of
 * this batch. The detector window is buffer rows off_y .. off_y + ny - 1 and columns
 * off_x .. off_x + nx - 1; window pixel (r, c) pairs with data pixel ((r + shift_y) % ny,
 * (c + shift_x) % nx), 0 <= shift_y < ny, 0 <= shift_x < nx (far field: the buffer holds the
 * unshifted FFT and shift = (ny/2, nx/2) applies fftshift; near field: 0). Per window pixel,
 *   I = intensity_scale * sum_modes |waves|^2,   loss_rows += w l(I, d),
 *   waves = grad_scale * w * dl/dI(I, d) * waves;   buffer pixels outside the window become 0.
 * loss is a cpt_loss; eps the regulariser of the gaussian and poisson terms. Raw FFTs
 * (n = buf_ny * buf_nx): far field intensity_scale = 1/n, grad_scale = 2 / (J n); near field
 * intensity_scale = 1, grad_scale = 2 / J, with J the number of patterns the loss averages
 * over. The gradient is the first link of the adjoint chain (not an adjoint of a linear map). */
typedef enum cpt_loss {
  CPT_LOSS_GAUSSIAN = 0,    /* (sqrt(I) - sqrt(d))^2, amplitude */
  CPT_LOSS_POISSON = 1,     /* I - d log I (+ d log d - d, so >= 0) */
  CPT_LOSS_INTENSITY = 2,   /* (I - d)^2 */
  CPT_LOSS_WEIGHTED = 3     /* (I - d)^2 / (2 d) if d > 0, else I */
} cpt_loss;

void likelihood_f32(cpt_complex64* waves, const float* data, const float* mask, double* loss_rows,
                    long long n_pos, long long n_modes, long long buf_ny, long long buf_nx, long long ny,
                    long long nx, long long off_y, long long off_x, long long shift_y, long long shift_x,
                    long long mask_per_pattern, long long loss, float eps, float intensity_scale,
                    float grad_scale);
void likelihood_f64(cpt_complex128* waves, const double* data, const double* mask, double* loss_rows,
                    long long n_pos, long long n_modes, long long buf_ny, long long buf_nx, long long ny,
                    long long nx, long long off_y, long long off_x, long long shift_y, long long shift_x,
                    long long mask_per_pattern, long long loss, double eps, double intensity_scale,
                    double grad_scale);

/* detector_likelihood: likelihood with the detector model I = s_j I_coh + b, where
 * I_coh = intensity_scale * sum_modes |waves|^2 (the I of likelihood). scale (n_pos) real, or
 * NULL for s = 1; background (ny, nx) real, or (n_pos, ny, nx) when background_per_pattern, in
 * detector order, or NULL for b = 0. loss_rows and waves as in likelihood, with
 * waves = grad_scale * s_j * w * dl/dI * waves. When not NULL: dl_di (n_pos, ny, nx) real,
 * detector order, overwritten with deriv_scale * w * dl/dI (dL/db per pattern for
 * deriv_scale = 1/J), and scale_rows (n_pos * ny) double, accumulated with
 * deriv_scale * sum over the row of w * dl/dI * I_coh (summed per pattern: dL/ds_j). */
void detector_likelihood_f32(cpt_complex64* waves, const float* data, const float* mask, double* loss_rows,
                             const float* scale, const float* background, double* scale_rows, float* dl_di,
                             long long n_pos, long long n_modes, long long buf_ny, long long buf_nx, long long ny,
                             long long nx, long long off_y, long long off_x, long long shift_y, long long shift_x,
                             long long mask_per_pattern, long long background_per_pattern, long long loss,
                             float eps, float intensity_scale, float grad_scale, float deriv_scale);
void detector_likelihood_f64(cpt_complex128* waves, const double* data, const double* mask, double* loss_rows,
                             const double* scale, const double* background, double* scale_rows, double* dl_di,
                             long long n_pos, long long n_modes, long long buf_ny, long long buf_nx, long long ny,
                             long long nx, long long off_y, long long off_x, long long shift_y, long long shift_x,
                             long long mask_per_pattern, long long background_per_pattern, long long loss,
                             double eps, double intensity_scale, double grad_scale, double deriv_scale);

/* intensity: the modelled intensities alone (the forward model's output; waves untouched),
 * in detector order: out (n_pos, ny, nx) real (overwritten),
 *   out[j, (r + shift_y) % ny, (c + shift_x) % nx] = intensity_scale * sum_modes |waves[j, :, off_y + r, off_x + c]|^2,
 * with the window, shift and scaling conventions of likelihood (summed in double). */
void intensity_f32(const cpt_complex64* waves, float* out, long long n_pos, long long n_modes, long long buf_ny,
                   long long buf_nx, long long ny, long long nx, long long off_y, long long off_x,
                   long long shift_y, long long shift_x, float intensity_scale);
void intensity_f64(const cpt_complex128* waves, double* out, long long n_pos, long long n_modes,
                   long long buf_ny, long long buf_nx, long long ny, long long nx, long long off_y,
                   long long off_x, long long shift_y, long long shift_x, double intensity_scale);

/* ===================================================================================== *
 * adam.cu: fused Adam step (PyTorch's formulation; MATH.md "Adam on complex parameters")   *
 * ===================================================================================== *
 * param, grad, m, v (n,) real, distinct; param, m, v updated in place:
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
 *   param -= lr (m / bias1) / (sqrt(v / bias2) + eps),
 * bias1 = 1 - beta1^t, bias2 = 1 - beta2^t for step t = 1, 2, ... (compute them in double).
 * A complex parameter of N elements is passed as its 2N interleaved reals (cast the pointer),
 * so the moments are kept per real component; m and v start at zero. */
void adam_step_f32(float* param, const float* grad, float* m, float* v, long long n, float lr, float beta1,
                   float beta2, float eps, float bias1, float bias2);
void adam_step_f64(double* param, const double* grad, double* m, double* v, long long n, double lr,
                   double beta1, double beta2, double eps, double bias1, double bias2);

/* ===================================================================================== *
 * pie.cu: the regularised update step of the PIE engines (ePIE, rPIE, mPIE)                *
 * ===================================================================================== *
 * param (n,) complex, updated in place; grad (n,) complex; weight (plane,) real, shared by every
 * mode (n is a multiple of plane, plane of width, the plane's last axis: 1 for a 1-D
 * plane); weight_max (1,) real, the maximum of weight (a pointer, so
 * a GPU caller need not copy it to the host). Per element, with d = max((1 - alpha) w + alpha
 * weight_max, rel_floor weight_max), w = weight[i % plane]:
 *   param[i] += (step / d) grad[i]   where d > 0 (elsewhere param is left unchanged).
 * alpha = 1: ePIE's max-normalised step; alpha < 1: rPIE's. */
void pie_update_f32(cpt_complex64* param, const cpt_complex64* grad, const float* weight, const float* weight_max,
                    long long n, long long plane, long long width, float step, float alpha, float rel_floor);
void pie_update_f64(cpt_complex128* param, const cpt_complex128* grad, const double* weight,
                    const double* weight_max, long long n, long long plane, long long width, double step,
                    double alpha, double rel_floor);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* CUPTYCHO_KERNELS_H */
