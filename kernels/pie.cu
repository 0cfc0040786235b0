// The PIE family's regularised update step (ePIE, rPIE, mPIE and their multi-mode forms).
// Reference twin: cuptycho/reference.py pie_update; launcher: cuptycho/launchers/pie.py.
//
// param (n,) complex, the object or probe (modes x plane, plane = the last `plane` elements of
// each mode); grad (n,) complex, the matching sum conj(partner) * (psi' - psi) (or a multiple of
// it: `step` carries the scale); weight (plane,) real, the partner's power (illumination map for
// the object, sum_j |O_j|^2 for the probe), shared by every mode; weight_max (1,) real, its maximum
// (a device pointer: no host round trip per update). In place:
//   d = max((1 - alpha) weight[i % plane] + alpha weight_max, rel_floor weight_max)
//   param[i] += (step / d) grad[i]          where d > 0 (elements with d = 0 are left alone)
// alpha = 1 is ePIE's max-normalised step, alpha < 1 rPIE's (Maiden, Johnson & Li 2017).
// width: the plane's last axis (plane and n are multiples of it).
// Launch: grid-stride over n elements (GPU); rows of width in parallel (CPU). Every element is
// independent: the result does not depend on the launch geometry or the thread count.
#include "common.cuh"

template <typename T>
CPT_DEV void pie_update(cplx<T>* CPT_RESTRICT param, const cplx<T>* CPT_RESTRICT grad,
                        const T* CPT_RESTRICT weight, const T* CPT_RESTRICT weight_max, long long n,
                        long long plane, long long width, T step, T alpha, T rel_floor) {
  const T wmax = weight_max[0];
  const T floor_d = rel_floor * wmax;
  const long long plane_rows = plane / width;
  // rows of `width` (the plane's last axis): the weight's row is found once per row, and the columns
  // vectorise on the CPU (an element-wise i % plane cost more than the update itself)
  CPT_FOR_ROWS(row, n / width, width)
    const T* CPT_RESTRICT w = weight + (row % plane_rows) * width;
    cplx<T>* CPT_RESTRICT p = param + row * width;
    const cplx<T>* CPT_RESTRICT g = grad + row * width;
    CPT_FOR_COLS(c, width) {
      T d = (1 - alpha) * w[c] + alpha * wmax;
      d = d < floor_d ? floor_d : d;
      const T s = step / (d > 0 ? d : T(1));
      p[c] = d > 0 ? p[c] + s * g[c] : p[c];
    }
  CPT_END_ROWS
}

#define CPT_PIE_ENTRIES(SFX, T)                                                                     \
  CPT_KERNEL void pie_update_##SFX(cplx<T>* param, const cplx<T>* grad, const T* weight,           \
                                   const T* weight_max, long long n, long long plane, long long width, \
                                   T step, T alpha, T rel_floor) {                                  \
    pie_update<T>(param, grad, weight, weight_max, n, plane, width, step, alpha, rel_floor);        \
  }

CPT_PIE_ENTRIES(f32, float)
CPT_PIE_ENTRIES(f64, double)
