// Fused Adam step (MATH.md "Adam on complex parameters"). Reference twin: cuptycho/reference.py
// adam_step; launcher: cuptycho/launchers/adam.py adam_step.
//
// Arrays are real: a complex parameter is passed as its interleaved reals (complex64 of n
// elements = float32 of 2n), so the first and second moments are kept per real component.
// param, grad, m, v: (n,) float | double, C-contiguous, distinct buffers; param, m, v updated
// in place. PyTorch's formulation (torch.optim.Adam, no weight decay, no amsgrad):
//   m <- b1 m + (1 - b1) g
//   v <- b2 v + (1 - b2) g^2
//   param <- param - lr (m / bias1) / (sqrt(v / bias2) + eps)
// with bias1 = 1 - b1^t and bias2 = 1 - b2^t computed by the caller in double (step t >= 1)
// and passed rounded to the parameter precision.
// Launch: one pass, grid-stride over n elements (GPU); elements in parallel (CPU). Every
// element is independent, so the result does not depend on the launch geometry or thread count.
// Rounding: the whole update runs in the parameter precision; nvcc contracts a*b+c into FMAs,
// the CPU build (ISO C++17) does not, so the two builds may differ in the last bit.
#include "common.cuh"

template <typename T>
CPT_DEV void adam_step(T* CPT_RESTRICT param, const T* CPT_RESTRICT grad, T* CPT_RESTRICT m,
                       T* CPT_RESTRICT v, long long n, T lr, T beta1, T beta2, T eps, T bias1, T bias2) {
  CPT_FOR(i, n) {
    const T g = grad[i];
    const T mi = beta1 * m[i] + (1 - beta1) * g;
    const T vi = beta2 * v[i] + (1 - beta2) * (g * g);
    m[i] = mi;
    v[i] = vi;
    param[i] -= lr * (mi / bias1) / (sqrt(vi / bias2) + eps);
  }
}

#define CPT_ADAM_ENTRIES(SFX, T)                                                                  \
  CPT_KERNEL void adam_step_##SFX(T* param, const T* grad, T* m, T* v, long long n, T lr, T beta1, \
                                  T beta2, T eps, T bias1, T bias2) {                              \
    adam_step<T>(param, grad, m, v, n, lr, beta1, beta2, eps, bias1, bias2);                       \
  }

CPT_ADAM_ENTRIES(f32, float)
CPT_ADAM_ENTRIES(f64, double)
