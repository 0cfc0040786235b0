// Bilinear sampling of the object at a patch position (MATH.md step 1): the one definition of
// the taps, the four weights, the object address of a patch row and the sample itself. Every
// sampling and exit-wave body (sampling.cu: patch_fwd, patch_adj, patch_posgrad; exitwave.cu:
// exitwave_fwd, exitwave_adj) uses these helpers, so forward, adjoint and gradients agree on
// indices and weights by construction. Reference twin: cuptycho/reference.py bilinear_taps,
// _corner_weights, patch_fwd.
//
// Shapes (C order): obj (Mo, H, W) complex; pos (J, 2) (y, x) in the position precision P;
// patches (J, Mo, Ny, Nx). T = field real type (float | double).
#pragma once
#include "common.cuh"

// Taps of one patch, in the position precision P: y0 is floor(y) except at the object's far
// edge, where it is H - Ny - 1 with ty = 1, so every tap lies inside the object for
// 0 <= y <= H - Ny (the launchers check that range); likewise x0, tx.
template <typename P>
struct Taps {
  long long y0, x0;
  P ty, tx;
};

template <typename P>
CPT_HD Taps<P> bilinear_taps(const P* pos, long long j, long long ny, long long nx, long long h, long long w) {
  Taps<P> t;
  const P y = pos[2 * j], x = pos[2 * j + 1];
  t.y0 = (long long)floor(y);
  t.x0 = (long long)floor(x);
  if (t.y0 > h - ny - 1) t.y0 = h - ny - 1;
  if (t.x0 > w - nx - 1) t.x0 = w - nx - 1;
  t.ty = y - (P)t.y0;
  t.tx = x - (P)t.x0;
  return t;
}

// The four weights of a patch, one per tap of pixel (r, c): w00 at object (y0+r, x0+c), w01 at
// (y0+r, x0+c+1), w10 at (y0+r+1, x0+c), w11 at (y0+r+1, x0+c+1). Formed in P, rounded to T.
template <typename T>
struct BilinearWeights {
  T w00, w01, w10, w11;
};

template <typename T, typename P>
CPT_HD BilinearWeights<T> bilinear_weights(const Taps<P>& t) {
  BilinearWeights<T> wt;
  wt.w00 = (T)((1 - t.ty) * (1 - t.tx));
  wt.w01 = (T)((1 - t.ty) * t.tx);
  wt.w10 = (T)(t.ty * (1 - t.tx));
  wt.w11 = (T)(t.ty * t.tx);
  return wt;
}

// Row address: the flat index in obj of the top-left tap of patch row r, column 0, in mode m
// (object row y0 + r, column x0). The row's other taps sit at +1 (right), +w (below), +w+1.
template <typename P>
CPT_HD long long tap_row(const Taps<P>& t, long long m, long long r, long long h, long long w) {
  return (m * h + t.y0 + r) * w + t.x0;
}

// The bilinear sample of patch column c of a row whose top-left tap is a = obj + tap_row(...):
//   w00 a[c] + w01 a[c+1] + w10 a[c+w] + w11 a[c+w+1]     (this summation order, in T)
template <typename T>
CPT_HD cplx<T> sample(const cplx<T>* a, long long w, const BilinearWeights<T>& wt, long long c) {
  const cplx<T>* b = a + w;
  return wt.w00 * a[c] + wt.w01 * a[c + 1] + wt.w10 * b[c] + wt.w11 * b[c + 1];
}
