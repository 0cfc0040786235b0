// Fused likelihood (MATH.md steps 4-5 and the first link of the backward chain) over propagated
// waves held in an FFT work buffer: intensities, per-row loss sums and, in place, G_Psi.
// Reference twins: cuptycho/reference.py likelihood and intensity (built on loss_terms and
// loss_derivative; reference.loss_and_grad calls the same likelihood).
//
// Shapes (C order), T = field real type (float | double):
//   waves (n_pos, n_modes, buf_ny, buf_nx) complex   n_modes = Mo*K, all modes of one pattern
//   data  (n_pos, ny, nx) T
//   mask  (ny, nx) T when mask_per_pattern == 0, else (n_pos, ny, nx) T
//   loss_rows (n_pos * ny) double, accumulated into (the caller zeroes it)
//
// Window and shift (index arithmetic only, no copies):
//   the detector window is buffer rows off_y .. off_y+ny-1, columns off_x .. off_x+nx-1 (the
//   zero padding of a near-field propagator; off = 0, buf = (ny, nx) without padding). Window
//   pixel (r, c) pairs with data / mask pixel ((r + shift_y) % ny, (c + shift_x) % nx): the far
//   field passes shift = (ny//2, nx//2) because the buffer holds the unshifted FFT and fftshift
//   moves unshifted index u to (u + N//2) % N (odd N too); the near field passes 0.
//
// Per window pixel:
//   I = intensity_scale * sum_modes |waves|^2                      (summed in T)
//   loss_rows[j*ny + r] += w * l(I, d)                             (l in T without cancellation,
//                                                                   summed in double; see pixel_loss)
//   waves[j, :, pixel] = grad_scale * w * l'(I, d) * waves[j, :, pixel]   (l' in T)
// Buffer pixels outside the window are set to 0: the adjoint of the crop.
//
// Scaling: FFTs are raw (unnormalised, both directions) on every backend; let n = buf_ny*buf_nx.
//   far field: the buffer holds Psi_raw = sqrt(n) S^-1 Psi, so intensity_scale = 1/n, and
//     G_psi = F^H S^-1 G_Psi = IFFT_raw((2/(J n)) w l' Psi_raw):  grad_scale = 2/(J_total n);
//   near field (transfer function, h pre-divided by n): the buffer holds Psi itself, so
//     intensity_scale = 1 and grad_scale = 2/J_total.
//   In both cases grad_scale = 2 * intensity_scale / J_total (J_total = patterns in the loss's
//   1/|B|, which may exceed this launch's n_pos when the batch is processed in chunks).
//
// loss: 0 gaussian, 1 poisson, 2 intensity, 3 weighted (reference.LOSSES order); eps is
// reference.EPS, passed in by the launcher.
// Launch: GPU one block per buffer row (n_pos*buf_ny), the row's sums reduced in the block (no
// atomics); CPU buffer rows (n_pos*buf_ny) in parallel, one plain add per row.
// A second entry, intensity, writes the modelled intensities alone (the forward model's output).
#include "common.cuh"

enum { CPT_GAUSSIAN = 0, CPT_POISSON = 1, CPT_INTENSITY = 2, CPT_WEIGHTED = 3 };

// Per real type, for log_gap: bit patterns (a union: defined behaviour for g++, nvcc and NVRTC in
// host and device code alike, and a plain register move) and the series
// Q(z) = sum_k z^k / (2k + 3), written out (a Horner loop kept the CPU pixel loop from vectorising).
template <typename T> struct cpt_real;
template <> struct cpt_real<float> {
  typedef unsigned int U;
  static constexpr int mant = 23;
  static constexpr U one = 0x3f800000u, sqrt_half = 0x3f3504f3u, mant_mask = 0x007fffffu;
  union Pun { float v; U b; };
  static CPT_HD U of(float v) { Pun p; p.v = v; return p.b; }
  static CPT_HD float to(U b) { Pun p; p.b = b; return p.v; }
  static CPT_HD float series(float z) {   // z <= 0.0295: the first omitted term is < 1e-7 Q
    return 1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7 + z * (1.0f / 9)));
  }
};
template <> struct cpt_real<double> {
  typedef unsigned long long U;
  static constexpr int mant = 52;
  static constexpr U one = 0x3ff0000000000000ull, sqrt_half = 0x3fe6a09e667f3bcdull,
                     mant_mask = 0x000fffffffffffffull;
  union Pun { double v; U b; };
  static CPT_HD U of(double v) { Pun p; p.v = v; return p.b; }
  static CPT_HD double to(U b) { Pun p; p.b = b; return p.v; }
  static CPT_HD double series(double z) {   // z <= 0.0295: the first omitted term is < 1e-17 Q
    return 1.0 / 3 + z * (1.0 / 5 + z * (1.0 / 7 + z * (1.0 / 9 + z * (1.0 / 11 + z * (1.0 / 13 + z * (1.0 / 15
           + z * (1.0 / 17 + z * (1.0 / 19 + z * (1.0 / 21 + z * (1.0 / 23))))))))));
  }
};

// log_gap(x, u) = x - log(u) for u = 1 + x > 0, i.e. x - log1p(x) >= 0, to a relative error
// < 1e-6 (float) or 2e-15 (double), also near x = 0, where it is ~x^2/2: the poisson
// loss per pixel is (d + eps) log_gap((I - d) / (d + eps), (I + eps) / (d + eps)). x and u are
// each rounded once (1 + x would lose u's digits near u = 0, u - 1 would lose x's near x = 0).
// Plain arithmetic and bit operations, no libm call: the CPU loop vectorises with the default
// flags (libmvec's log needs -ffast-math), and the GPU runs the same formula.
//   u = m 2^e with m in [sqrt(1/2), sqrt(2)); f = m - 1 (exact), or f = x when e = 0 (then u = m);
//   log(m) = 2 atanh(t) = 2t + 2t^3 Q(t^2) with t = f / (2 + f), Q(z) = sum_k z^k / (2k + 3);
//   x - log(u) = (u - m - e ln2) + (f - 2t) - 2t^3 Q  with  f - 2t = t f,  u - m = 0 when e = 0.
// (u - 1 stands for x when e != 0: the result then depends on u alone, and its slope 1 - 1/u
// damps u's rounding where x and log(u) cancel most, at u ~ 0.7 and 1.4.)
// |t| <= 0.172, so z <= 0.0295: 4 terms of Q for float, 11 for double.
template <typename T>
CPT_HD T log_gap(T x, T u) {
  typedef cpt_real<T> B;
  const typename B::U bu = B::of(u) + (B::one - B::sqrt_half);
  const int e = (int)(bu >> B::mant) - (int)(B::one >> B::mant);     // u >= eps / d' is normal for d < 1e32
  const T m = B::to((bu & B::mant_mask) + B::sqrt_half);
  // f = e == 0 ? x : m - 1 as a bit select: g++ (trapping math) will not turn the float form into
  // a vector blend, and the branch kept the pixel loop scalar
  const typename B::U keep_x = (typename B::U)0 - (typename B::U)(e == 0);
  const T f = B::to((B::of(x) & keep_x) | (B::of(m - (T)1) & ~keep_x));
  const T t = f / ((T)2 + f), z = t * t;
  return ((u - m) - (T)e * (T)0.693147180559945309417) + t * (f - (T)2 * z * B::series(z));
}

// One pixel of the loss: returns l(I, d) (as double, for the row sums) and sets slope = dl/dI,
// the formulas of reference.loss_terms / loss_derivative, in T without cancellation: gaussian as
// ((I - d) / (sqrt(I') + sqrt(d')))^2, which equals (sqrt(I') - sqrt(d'))^2 and shares its square
// roots with the slope; poisson, I' - d' log I' + d' log d' - d', as d' log_gap(x, I'/d') with
// x = (I - d)/d': those terms cancel to O(1) from O(d log d), which needed two double logs per
// pixel (the likelihood stage then ran 4x slower than gaussian's on the CPU); log_gap holds the
// value to < 1e-6 of itself in float (the rounding of the float I alone moves it by up to ~3e-7).
// d >= 0 (the API validates it), so I'/d' > 0.
template <int LOSS, typename T>
CPT_HD double pixel_loss(T i, T d, T eps, T& slope) {
  if (LOSS == CPT_GAUSSIAN) {
    const T si = sqrt(i + eps), sd = sqrt(d + eps);
    const T a = (i - d) / (si + sd);
    slope = (T)1 - sd / si;
    return (double)(a * a);
  } else if (LOSS == CPT_POISSON) {
    const T ie = i + eps, de = d + eps;
    slope = (T)1 - de / ie;
    return (double)(de * log_gap((i - d) / de, ie / de));
  } else if (LOSS == CPT_INTENSITY) {
    slope = (T)2 * (i - d);
    return (double)((i - d) * (i - d));
  } else {
    slope = d > 0 ? (i - d) / d : (T)1;
    return d > 0 ? (double)((i - d) * (i - d) / (2 * d)) : (double)i;
  }
}

// EXT: the detector model of `detector_likelihood` (below), I = s_j I_coh + b, and its gradients;
// false compiles the plain likelihood's loop unchanged (the hot path pays nothing for it).
template <typename T, int LOSS, bool EXT>
CPT_DEV void likelihood(cplx<T>* CPT_RESTRICT waves, const T* CPT_RESTRICT data, const T* CPT_RESTRICT mask,
                        double* CPT_RESTRICT loss_rows, const T* CPT_RESTRICT scale,
                        const T* CPT_RESTRICT background, double* CPT_RESTRICT scale_rows, T* CPT_RESTRICT dl_di,
                        long long n_pos, long long n_modes,
                        long long buf_ny, long long buf_nx, long long ny, long long nx,
                        long long off_y, long long off_x, long long shift_y, long long shift_x,
                        long long mask_per_pattern, long long background_per_pattern, T eps, T intensity_scale,
                        T grad_scale, T deriv_scale) {
  const long long plane = buf_ny * buf_nx;
#if CPT_GPU
  // one block per buffer row, its threads over the columns (CPT_FOR_ROW_SUMS): the row's loss and scale
  // sums are block sums, no atomics, the same on every run
  CPT_FOR_ROW_SUMS(row, n_pos * buf_ny, buf_nx)
    const long long j = row / buf_ny, r = row % buf_ny - off_y;      // r: window row
    cplx<T>* CPT_RESTRICT w0 = waves + (j * n_modes * buf_ny + row % buf_ny) * buf_nx;   // mode 0
    if (r < 0 || r >= ny) {                                         // the whole row: every thread
      CPT_ROW_COLS(bc, buf_nx) {
        for (long long m = 0; m < n_modes; ++m) w0[m * plane + bc] = make_cplx<T>(0, 0);
      }
    } else {
      long long dr = r + shift_y;                                      // 0 <= shift < n (launcher)
      if (dr >= ny) dr -= ny;
      const T* CPT_RESTRICT d_row = data + (j * ny + dr) * nx;
      const T* CPT_RESTRICT m_row = mask + ((mask_per_pattern ? j * ny : 0) + dr) * nx;
      const T s = (EXT && scale) ? scale[j] : (T)1;
      double acc = 0, acc_s = 0;
      CPT_ROW_COLS(bc, buf_nx) {
        const long long c = bc - off_x;                                // window column
        if (c < 0 || c >= nx) {
          for (long long m = 0; m < n_modes; ++m) w0[m * plane + bc] = make_cplx<T>(0, 0);
          continue;
        }
        long long dc = c + shift_x;
        if (dc >= nx) dc -= nx;
        T sum = 0;
        for (long long m = 0; m < n_modes; ++m) sum += abs2(w0[m * plane + bc]);
        const T icoh = intensity_scale * sum, d = d_row[dc], w = m_row[dc];
        T i = icoh;
        if (EXT) {
          i = s * icoh;
          if (background) i += background[((background_per_pattern ? j * ny : 0) + dr) * nx + dc];
        }
        T slope;
        acc += (double)w * pixel_loss<LOSS, T>(i, d, eps, slope);
        const T g = grad_scale * w * slope;
        if (EXT) {
          acc_s += (double)(w * slope) * (double)icoh;
          if (dl_di) dl_di[(j * ny + dr) * nx + dc] = deriv_scale * w * slope;
        }
        const T gs = EXT ? s * g : g;
        for (long long m = 0; m < n_modes; ++m) w0[m * plane + bc] = gs * w0[m * plane + bc];
      }
      CPT_ROW_SUMS_ADD(loss_rows + j * ny + r, acc, (EXT && scale_rows) ? scale_rows + j * ny + r : (double*)0,
                       (double)deriv_scale * acc_s);
    }
  CPT_END_ROWS
#else
  // CPU: rows in parallel, each in three contiguous column passes over a per-thread scratch row
  // (intensity summed over the modes, then loss and gradient factor per pixel, then every mode
  // scaled), so each pass vectorises; the per-pixel form above ran 2.5x slower here.
#pragma omp parallel if(n_pos * n_modes * buf_ny * buf_nx >= CPT_MIN_PARALLEL)
  {
    T* factor = new T[nx > 0 ? nx : 1];
    // EXT: a zero row stands for an absent background and a scratch row for an unwanted dl_di, so the
    // pixel loop has no branch (with them it ran 2x slower than the plain loop)
    T* zeros = EXT ? new T[nx > 0 ? nx : 1]() : nullptr;
    T* unwanted = EXT ? new T[nx > 0 ? nx : 1] : nullptr;
#pragma omp for schedule(static)
    for (long long row = 0; row < n_pos * buf_ny; ++row) {
      const long long j = row / buf_ny, br = row % buf_ny, r = br - off_y;
      cplx<T>* CPT_RESTRICT w0 = waves + (j * n_modes * buf_ny + br) * buf_nx;      // mode 0, buffer row br
      if (r < 0 || r >= ny) {
        for (long long m = 0; m < n_modes; ++m)
          for (long long bc = 0; bc < buf_nx; ++bc) w0[m * plane + bc] = make_cplx<T>(0, 0);
        continue;
      }
      long long dr = r + shift_y;
      if (dr >= ny) dr -= ny;
      const T* CPT_RESTRICT d_row = data + (j * ny + dr) * nx;
      const T* CPT_RESTRICT m_row = mask + ((mask_per_pattern ? j * ny : 0) + dr) * nx;
      for (long long c = 0; c < nx; ++c) factor[c] = 0;
      for (long long m = 0; m < n_modes; ++m) {
        const cplx<T>* CPT_RESTRICT wm = w0 + m * plane + off_x;
        for (long long c = 0; c < nx; ++c) factor[c] += abs2(wm[c]);
      }
      // window column c pairs with data column c + shift_x, wrapped: two unwrapped segments
      double acc = 0;
      const long long split = nx - shift_x;
      if (!EXT) {
        for (int seg = 0; seg < 2; ++seg) {
          const long long c0 = seg == 0 ? 0 : split, c1 = seg == 0 ? split : nx;
          const long long dc0 = seg == 0 ? shift_x : shift_x - nx;
          // `omp simd reduction` lets the double row sum vectorise (a fixed, thread-count
          // independent summation order; plain C++ forbids reassociating it)
#pragma omp simd reduction(+ : acc)
          for (long long c = c0; c < c1; ++c) {
            const T i = intensity_scale * factor[c], d = d_row[c + dc0], wgt = m_row[c + dc0];
            T slope;
            acc += (double)wgt * pixel_loss<LOSS, T>(i, d, eps, slope);
            factor[c] = grad_scale * wgt * slope;
          }
        }
      } else {
        // the detector model: per row, the pattern's scale and background row (zero when absent)
        const T s = scale ? scale[j] : (T)1;
        const T* CPT_RESTRICT b_row =
            background ? background + ((background_per_pattern ? j * ny : 0) + dr) * nx : zeros;
        T* CPT_RESTRICT g_row = dl_di ? dl_di + (j * ny + dr) * nx : unwanted;
        double acc_s = 0;
        for (int seg = 0; seg < 2; ++seg) {
          const long long c0 = seg == 0 ? 0 : split, c1 = seg == 0 ? split : nx;
          const long long dc0 = seg == 0 ? shift_x : shift_x - nx;
#pragma omp simd reduction(+ : acc, acc_s)
          for (long long c = c0; c < c1; ++c) {
            const T icoh = intensity_scale * factor[c], d = d_row[c + dc0], wgt = m_row[c + dc0];
            const T i = s * icoh + b_row[c + dc0];
            T slope;
            acc += (double)wgt * pixel_loss<LOSS, T>(i, d, eps, slope);
            const T dl = wgt * slope;
            acc_s += (double)dl * (double)icoh;
            factor[c] = grad_scale * s * dl;
            g_row[c + dc0] = deriv_scale * dl;
          }
        }
        if (scale_rows) scale_rows[j * ny + r] += (double)deriv_scale * acc_s;
      }
      for (long long m = 0; m < n_modes; ++m) {
        cplx<T>* CPT_RESTRICT wm = w0 + m * plane;
        for (long long bc = 0; bc < off_x; ++bc) wm[bc] = make_cplx<T>(0, 0);
        for (long long c = 0; c < nx; ++c) wm[off_x + c] = factor[c] * wm[off_x + c];
        for (long long bc = off_x + nx; bc < buf_nx; ++bc) wm[bc] = make_cplx<T>(0, 0);
      }
      loss_rows[j * ny + r] += acc;
    }
    delete[] factor;
    delete[] zeros;
    delete[] unwanted;
  }
#endif
}

// intensity: the modelled intensities alone (no data, waves untouched), in detector order:
//   out[j, (r + shift_y) % ny, (c + shift_x) % nx] = intensity_scale * sum_modes |waves[j, :, off_y + r, off_x + c]|^2
// with the window, shift and scaling conventions of `likelihood` (summed in double, stored in T).
// out (n_pos, ny, nx) T, overwritten. Launch: GPU one thread per window pixel (n_pos*ny*nx);
// CPU window rows (n_pos*ny) in parallel.
template <typename T>
CPT_DEV void intensity(const cplx<T>* CPT_RESTRICT waves, T* CPT_RESTRICT out, long long n_pos, long long n_modes,
                       long long buf_ny, long long buf_nx, long long ny, long long nx, long long off_y,
                       long long off_x, long long shift_y, long long shift_x, T intensity_scale) {
  const long long plane = buf_ny * buf_nx;
  CPT_FOR_ROWS(row, n_pos * ny, nx)
    const long long j = row / ny, r = row % ny;
    const cplx<T>* CPT_RESTRICT w0 = waves + (j * n_modes * buf_ny + off_y + r) * buf_nx + off_x;   // mode 0
    long long dr = r + shift_y;
    if (dr >= ny) dr -= ny;
    T* CPT_RESTRICT o_row = out + (j * ny + dr) * nx;
    CPT_FOR_COLS(c, nx) {
      long long dc = c + shift_x;
      if (dc >= nx) dc -= nx;
      double sum = 0;
      for (long long m = 0; m < n_modes; ++m) sum += (double)abs2(w0[m * plane + c]);
      o_row[dc] = (T)((double)intensity_scale * sum);
    }
  CPT_END_ROWS
}

// The loss kind is a template parameter, so the pixel loop has no branch on it; this dispatcher
// turns the entry's runtime `loss` code into that parameter and forwards every other argument
// unchanged (one call site per code, the argument list written once).
template <typename T, bool EXT, typename... Args>
CPT_DEV void likelihood_for_loss(long long loss, Args... args) {
  switch (loss) {
    case CPT_GAUSSIAN: likelihood<T, CPT_GAUSSIAN, EXT>(args...); break;
    case CPT_POISSON: likelihood<T, CPT_POISSON, EXT>(args...); break;
    case CPT_INTENSITY: likelihood<T, CPT_INTENSITY, EXT>(args...); break;
    default: likelihood<T, CPT_WEIGHTED, EXT>(args...); break;
  }
}

// One entry per dtype. detector_likelihood: the likelihood of the detector model
//   I = s_j * I_coh + b,   I_coh = intensity_scale * sum_modes |waves|^2
// with scale (n_pos) T (s_j; NULL: 1) and background (ny, nx) T, or (n_pos, ny, nx) when
// background_per_pattern (b in detector order; NULL: 0). Besides loss_rows and G_Psi (now
// grad_scale * s_j * w l'(I, d) * waves) it forms, when the pointers are not NULL,
//   dl_di (n_pos, ny, nx) T, detector order, overwritten:  deriv_scale * w l'(I, d)
//   scale_rows (n_pos * ny) double, accumulated:  deriv_scale * sum_c w l'(I, d) I_coh
// With deriv_scale = 1/J (the loss's 1/|B|) these are dL/db per pattern and pixel and, summed
// per pattern, dL/ds_j.
#define CPT_LIKELIHOOD_ENTRIES(SFX, T)                                                                       \
  CPT_KERNEL void likelihood_##SFX(cplx<T>* waves, const T* data, const T* mask, double* loss_rows,         \
                                   long long n_pos, long long n_modes, long long buf_ny, long long buf_nx, \
                                   long long ny, long long nx, long long off_y, long long off_x,           \
                                   long long shift_y, long long shift_x, long long mask_per_pattern,       \
                                   long long loss, T eps, T intensity_scale, T grad_scale) {               \
    likelihood_for_loss<T, false>(loss, waves, data, mask, loss_rows, (const T*)nullptr, (const T*)nullptr, \
                                  (double*)nullptr, (T*)nullptr, n_pos, n_modes, buf_ny, buf_nx, ny, nx,    \
                                  off_y, off_x, shift_y, shift_x, mask_per_pattern, 0LL, eps,               \
                                  intensity_scale, grad_scale, (T)0);                                       \
  }                                                                                                         \
  CPT_KERNEL void detector_likelihood_##SFX(cplx<T>* waves, const T* data, const T* mask, double* loss_rows, \
                                            const T* scale, const T* background, double* scale_rows,        \
                                            T* dl_di, long long n_pos, long long n_modes, long long buf_ny, \
                                            long long buf_nx, long long ny, long long nx, long long off_y,  \
                                            long long off_x, long long shift_y, long long shift_x,          \
                                            long long mask_per_pattern, long long background_per_pattern,   \
                                            long long loss, T eps, T intensity_scale, T grad_scale,         \
                                            T deriv_scale) {                                                \
    likelihood_for_loss<T, true>(loss, waves, data, mask, loss_rows, scale, background, scale_rows, dl_di,  \
                                 n_pos, n_modes, buf_ny, buf_nx, ny, nx, off_y, off_x, shift_y, shift_x,    \
                                 mask_per_pattern, background_per_pattern, eps, intensity_scale,            \
                                 grad_scale, deriv_scale);                                                  \
  }                                                                                                         \
  CPT_KERNEL void intensity_##SFX(const cplx<T>* waves, T* out, long long n_pos, long long n_modes,         \
                                  long long buf_ny, long long buf_nx, long long ny, long long nx,           \
                                  long long off_y, long long off_x, long long shift_y, long long shift_x,   \
                                  T intensity_scale) {                                                      \
    intensity<T>(waves, out, n_pos, n_modes, buf_ny, buf_nx, ny, nx, off_y, off_x, shift_y, shift_x,        \
                 intensity_scale);                                                                          \
  }

CPT_LIKELIHOOD_ENTRIES(f32, float)
CPT_LIKELIHOOD_ENTRIES(f64, double)
