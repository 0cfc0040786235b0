/* Calling the cuptycho CPU kernels from C: bilinear patch extraction and its adjoint.
 *
 * Builds a random complex64 object (Mo, H, W) and J fractional scan positions, extracts
 * patches with patch_fwd_f32 (A), scatters random patch gradients back with patch_adj_f32
 * (A^H) and checks the adjoint identity <A x, y> = <x, A^H y> (<a, b> = sum conj(a) b), summed
 * in double: |lhs - rhs| / (|A x| |y| + |x| |A^H y|) must be below 1e-5 (float32 data).
 *
 * Build against an installed library (cmake --install), e.g.
 *   cc -std=c99 -O2 -I<prefix>/include gather_scatter.c -L<prefix>/lib -lcuptycho_kernels \
 *      -Wl,-rpath,<prefix>/lib -lm -o gather_scatter
 * Exit status 0 when the identity holds, 1 otherwise.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuptycho_kernels.h"

/* xorshift64* and Box-Muller: a reproducible generator with no library dependency */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double uniform(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static double normal(void) {
  double u = uniform();
  while (u <= 0) u = uniform();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * uniform());
}

static void fill(cpt_complex64* a, long long n) {
  for (long long i = 0; i < n; ++i) {
    a[i].re = (float)normal();
    a[i].im = (float)normal();
  }
}

/* <a, b> = sum conj(a) b, in double; *norm_a, *norm_b receive |a|^2 and |b|^2 */
static void vdot(const cpt_complex64* a, const cpt_complex64* b, long long n, double* re, double* im,
                 double* norm_a, double* norm_b) {
  double sr = 0, si = 0, na = 0, nb = 0;
  for (long long i = 0; i < n; ++i) {
    const double ar = a[i].re, ai = a[i].im, br = b[i].re, bi = b[i].im;
    sr += ar * br + ai * bi;
    si += ar * bi - ai * br;
    na += ar * ar + ai * ai;
    nb += br * br + bi * bi;
  }
  *re = sr, *im = si, *norm_a = na, *norm_b = nb;
}

int main(void) {
  const long long n_modes = 2, h = 64, w = 72, n_pos = 25, ny = 16, nx = 20;
  const long long n_obj = n_modes * h * w, n_patch = n_pos * n_modes * ny * nx;
  cpt_complex64* x = malloc(sizeof *x * n_obj);             /* object */
  cpt_complex64* ahy = calloc(n_obj, sizeof *ahy);          /* A^H y: patch_adj accumulates, so zeroed */
  cpt_complex64* ax = malloc(sizeof *ax * n_patch);         /* A x */
  cpt_complex64* y = malloc(sizeof *y * n_patch);           /* patch gradients */
  double* pos = malloc(sizeof *pos * 2 * n_pos);            /* (y, x) top-left corners, float64 */
  if (!x || !ahy || !ax || !y || !pos) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  fill(x, n_obj);
  fill(y, n_patch);
  for (long long j = 0; j < n_pos; ++j) {                   /* every patch inside the object */
    pos[2 * j] = uniform() * (double)(h - ny);
    pos[2 * j + 1] = uniform() * (double)(w - nx);
  }
  pos[0] = 0, pos[1] = 0;                                   /* exact crop at the origin */
  pos[2] = (double)(h - ny), pos[3] = (double)(w - nx);     /* and at the far corner */

  patch_fwd_f32(x, n_modes, h, w, pos, n_pos, ny, nx, ax);
  patch_adj_f32(y, n_modes, h, w, pos, n_pos, ny, nx, NULL, NULL, 0, ahy);  /* tile lists: CUDA build only */

  double lr, li, lhs_na, lhs_nb, rr, ri, rhs_na, rhs_nb;
  vdot(ax, y, n_patch, &lr, &li, &lhs_na, &lhs_nb);
  vdot(x, ahy, n_obj, &rr, &ri, &rhs_na, &rhs_nb);
  const double scale = sqrt(lhs_na) * sqrt(lhs_nb) + sqrt(rhs_na) * sqrt(rhs_nb);
  const double err = hypot(lr - rr, li - ri) / scale;
  const int ok = scale > 0 && err < 1e-5;
  printf("patch_fwd_f32 / patch_adj_f32 adjoint identity: <Ax,y> = %.9g%+.9gi, <x,A^H y> = %.9g%+.9gi, "
         "relative error %.3g (tolerance 1e-5): %s\n", lr, li, rr, ri, err, ok ? "ok" : "FAILED");
  free(x), free(ahy), free(ax), free(y), free(pos);
  return ok ? 0 : 1;
}
