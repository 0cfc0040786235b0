// Spectral multiplies of the transfer-function propagators (angular_spectrum, fresnel; MATH.md
// step 3 and the dL/dz line of the backward chain) on raw-FFT work buffers.
// Reference twins: cuptycho/reference.py spectrum_fwd, spectrum_adj (which
// TransferFunctionPropagator's spectrum and adj_and_dz call).
//
// Shapes (C order), T = field real type (float | double), f = flat frequency index:
//   x, g, spectrum (batch, buf_ny, buf_nx) complex     buf = the padded grid
//   h (buf_ny, buf_nx) complex, kz (buf_ny, buf_nx) double, dz_rows (batch * buf_ny) double
//
// Scaling: FFTs are raw (unnormalised, both directions) on every backend; n = buf_ny*buf_nx and
// F is the unitary DFT, so FFT_raw = sqrt(n) F and IFFT_raw = sqrt(n) F^-1. The caller passes
// h = H_z / n, which makes
//   IFFT_raw(h * FFT_raw(psi)) = sqrt(n) F^-1 (H_z/n) sqrt(n) F psi = F^-1 diag(H_z) F psi
// exactly, and likewise IFFT_raw(conj(h) * FFT_raw(G)) = F^-1 diag(conj H_z) F G, its adjoint.
// The stored forward spectrum is then h * FFT_raw(psi) = Psihat / sqrt(n) (Psihat = H_z F psi of
// MATH.md) and the adjoint's input is FFT_raw(G_Psi) = sqrt(n) Ghat, so their product
//   conj(FFT_raw(G_Psi)) * spectrum = conj(Ghat) Psihat
// is the MATH.md quantity exactly: dL/dz = -sum_f kz(f) Im(conj(Ghat) Psihat) needs no rescaling.
#include "common.cuh"

// spectrum_fwd: x[b, f] *= h[f]; when spectrum_out is not null, also spectrum_out[b, f] = x[b, f]
// after the multiply (the forward spectrum kept for dL/dz). Adjoint: spectrum_adj's multiply.
// Launch: GPU one thread per element (batch*buf_ny*buf_nx); CPU rows (batch*buf_ny) in parallel.
template <typename T>
CPT_DEV void spectrum_fwd(cplx<T>* CPT_RESTRICT x, cplx<T>* CPT_RESTRICT spectrum_out,
                          const cplx<T>* CPT_RESTRICT h, long long batch, long long buf_ny, long long buf_nx) {
  CPT_FOR_ROWS(row, batch * buf_ny, buf_nx)
    cplx<T>* CPT_RESTRICT xr = x + row * buf_nx;
    const cplx<T>* CPT_RESTRICT hr = h + (row % buf_ny) * buf_nx;
    if (spectrum_out) {
      cplx<T>* CPT_RESTRICT sr = spectrum_out + row * buf_nx;
      CPT_FOR_COLS(c, buf_nx) {
        const cplx<T> v = hr[c] * xr[c];
        xr[c] = v;
        sr[c] = v;
      }
    } else {
      CPT_FOR_COLS(c, buf_nx) { xr[c] = hr[c] * xr[c]; }
    }
  CPT_END_ROWS
}

// spectrum_adj: when spectrum is not null, first
//   dz_rows[b*buf_ny + r] += -sum_c kz[f] Im(conj(g[b, f]) spectrum[b, f])   (double; caller zeroes)
// with g the raw FFT of G_Psi (before the multiply); then g[b, f] *= conj(h[f]). One pass.
// Launch: rows with sums (CPT_FOR_ROW_SUMS): GPU one block per buffer row, the dz row summed in the
// block (no atomics); CPU rows in parallel, one add per row.
template <typename T>
CPT_DEV void spectrum_adj(cplx<T>* CPT_RESTRICT g, const cplx<T>* CPT_RESTRICT spectrum,
                          const cplx<T>* CPT_RESTRICT h, const double* CPT_RESTRICT kz,
                          double* CPT_RESTRICT dz_rows, long long batch, long long buf_ny, long long buf_nx) {
  CPT_FOR_ROW_SUMS(row, batch * buf_ny, buf_nx)
    cplx<T>* CPT_RESTRICT gr = g + row * buf_nx;
    const long long f0 = (row % buf_ny) * buf_nx;
    const cplx<T>* CPT_RESTRICT hr = h + f0;
    if (spectrum) {                                  // the same branch for every thread of a row
      const cplx<T>* CPT_RESTRICT sr = spectrum + row * buf_nx;
      const double* CPT_RESTRICT kr = kz + f0;
      double acc = 0;
      CPT_ROW_COLS(c, buf_nx) {
        const cplx<T> v = gr[c], s = sr[c];
        acc -= kr[c] * ((double)v.re * (double)s.im - (double)v.im * (double)s.re);   // Im(conj(v) s)
        gr[c] = conj_mul(hr[c], v);
      }
      CPT_ROW_SUMS_ADD(dz_rows + row, acc, (double*)0, 0.0);
    } else {
      CPT_ROW_COLS(c, buf_nx) { gr[c] = conj_mul(hr[c], gr[c]); }
    }
  CPT_END_ROWS
}

#define CPT_PROPAGATE_ENTRIES(SFX, T)                                                                        \
  CPT_KERNEL void spectrum_fwd_##SFX(cplx<T>* x, cplx<T>* spectrum_out, const cplx<T>* h, long long batch,  \
                                     long long buf_ny, long long buf_nx) {                                  \
    spectrum_fwd<T>(x, spectrum_out, h, batch, buf_ny, buf_nx);                                             \
  }                                                                                                         \
  CPT_KERNEL void spectrum_adj_##SFX(cplx<T>* g, const cplx<T>* spectrum, const cplx<T>* h, const double* kz, \
                                     double* dz_rows, long long batch, long long buf_ny, long long buf_nx) {  \
    spectrum_adj<T>(g, spectrum, h, kz, dz_rows, batch, buf_ny, buf_nx);                                    \
  }

CPT_PROPAGATE_ENTRIES(f32, float)
CPT_PROPAGATE_ENTRIES(f64, double)
