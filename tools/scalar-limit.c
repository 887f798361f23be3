// The scalar limit: the engine's kernel shapes as plain C loops, compiled the way JavaScript must
// run them - one element per instruction, no SIMD, no fused multiply-add:
//
//   cc -O2 -fno-tree-vectorize -fno-tree-slp-vectorize -ffp-contract=off -o scalar-limit tools/scalar-limit.c
//
// This is a measuring stick for bench/scalar.ts, not part of the engine (which stays TypeScript).
// Each kernel is the best of a few register blockings, so "% of the scalar limit" compares a JS
// kernel with what a C compiler gets out of the same scalar instructions.
//
//   ./scalar-limit KERNEL ROWS COLS N MILLIS
//     KERNEL  f32 (y = W x for N tokens; N = 1 is matvec), q8_0, q4_0 (N = 1: int8/4-bit dot products;
//             N > 1: the float64-lanes loop of src/tensor/lanes.ts)
//   prints one line: KERNEL ROWS COLS N GFLOPS VARIANT VARIANT=GFLOPS...  (the best over every
//   variant and repetition first, then each variant's best; GFLOP/s = 2 * ROWS * COLS * N / seconds)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// CPU time, not wall time: on a machine shared with other processes, time spent switched out does
// not count (bench/scalar.ts times the JS kernels the same way, with process.cpuUsage()).
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t rng = 1;
static float frand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (float)((rng >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
}

// ---- f32: y[t][r] = sum_k w[r][k] x[t][k] ----

// Matvec, 4 rows x 2 columns per step: 8 independent add chains (the JS decode kernel's shape).
static __attribute__((noinline)) void mv_4x2(const float *w, const float *x, float *y, int rows, int cols) {
  for (int r = 0; r + 4 <= rows; r += 4) {
    const float *w0 = w + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    for (int k = 0; k < cols; k += 2) {
      float v0 = x[k], v1 = x[k + 1];
      a0 += w0[k] * v0; b0 += w0[k + 1] * v1;
      a1 += w1[k] * v0; b1 += w1[k + 1] * v1;
      a2 += w2[k] * v0; b2 += w2[k + 1] * v1;
      a3 += w3[k] * v0; b3 += w3[k + 1] * v1;
    }
    y[r] = a0 + b0; y[r + 1] = a1 + b1; y[r + 2] = a2 + b2; y[r + 3] = a3 + b3;
  }
}

// Matvec, 2 rows x 4 columns per step: 8 chains, fewer weight streams.
static __attribute__((noinline)) void mv_2x4(const float *w, const float *x, float *y, int rows, int cols) {
  for (int r = 0; r + 2 <= rows; r += 2) {
    const float *w0 = w + (size_t)r * cols, *w1 = w0 + cols;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    for (int k = 0; k < cols; k += 4) {
      float v0 = x[k], v1 = x[k + 1], v2 = x[k + 2], v3 = x[k + 3];
      a0 += w0[k] * v0; a1 += w0[k + 1] * v1; a2 += w0[k + 2] * v2; a3 += w0[k + 3] * v3;
      b0 += w1[k] * v0; b1 += w1[k + 1] * v1; b2 += w1[k + 2] * v2; b3 += w1[k + 3] * v3;
    }
    y[r] = (a0 + a1) + (a2 + a3); y[r + 1] = (b0 + b1) + (b2 + b3);
  }
}

// Matmat, RB rows x TB tokens register block over all k.
#define MM_BLOCK(NAME, RB, TB)                                                                  \
  static __attribute__((noinline)) void NAME(const float *w, const float *x, float *y, int rows, int cols, int n) {       \
    for (int t = 0; t + TB <= n; t += TB)                                                       \
      for (int r = 0; r + RB <= rows; r += RB) {                                                \
        float acc[RB][TB] = {{0}};                                                              \
        for (int k = 0; k < cols; k++) {                                                        \
          float wv[RB], xv[TB];                                                                 \
          _Pragma("GCC unroll 8") for (int i = 0; i < RB; i++) wv[i] = w[(size_t)(r + i) * cols + k];                   \
          _Pragma("GCC unroll 8") for (int j = 0; j < TB; j++) xv[j] = x[(size_t)(t + j) * cols + k];                   \
          _Pragma("GCC unroll 8") for (int i = 0; i < RB; i++)                                  \
            _Pragma("GCC unroll 8") for (int j = 0; j < TB; j++) acc[i][j] += wv[i] * xv[j];                            \
        }                                                                                       \
        for (int i = 0; i < RB; i++)                                                            \
          for (int j = 0; j < TB; j++) y[(size_t)(t + j) * rows + r + i] = acc[i][j];           \
      }                                                                                         \
  }
MM_BLOCK(mm_4x4, 4, 4)
MM_BLOCK(mm_3x4, 3, 4)
MM_BLOCK(mm_4x3, 4, 3)
MM_BLOCK(mm_2x4, 2, 4)
MM_BLOCK(mm_4x2, 4, 2)

// ---- q8_0: int8 weights and activations, one float scale per 32-block ----
static __attribute__((noinline)) void q8_mv(const int8_t *w, const float *ws, const int8_t *x, const float *xs, float *y, int rows, int cols) {
  int blocks = cols / 32;
  for (int r = 0; r + 2 <= rows; r += 2) {
    const int8_t *w0 = w + (size_t)r * cols, *w1 = w0 + cols;
    float acc0 = 0, acc1 = 0;
    for (int b = 0; b < blocks; b++) {
      int s0 = 0, s1 = 0;
      for (int k = b * 32; k < b * 32 + 32; k++) {
        s0 += w0[k] * x[k];
        s1 += w1[k] * x[k];
      }
      acc0 += (float)s0 * ws[(size_t)r * blocks + b] * xs[b];
      acc1 += (float)s1 * ws[(size_t)(r + 1) * blocks + b] * xs[b];
    }
    y[r] = acc0; y[r + 1] = acc1;
  }
}

// ---- q4_0 (llama.cpp layout): 16 bytes per 32-block, low nibbles = columns 0..15, high = 16..31 ----
static __attribute__((noinline)) void q4_mv(const uint8_t *w, const float *ws, const int8_t *x, const float *xs, float *y, int rows, int cols) {
  int blocks = cols / 32;
  for (int r = 0; r + 2 <= rows; r += 2) {
    const uint8_t *w0 = w + (size_t)r * cols / 2, *w1 = w0 + cols / 2;
    float acc0 = 0, acc1 = 0;
    for (int b = 0; b < blocks; b++) {
      int s0 = 0, s1 = 0;
      const int8_t *xb = x + b * 32;
      for (int j = 0; j < 16; j++) {
        uint8_t p = w0[b * 16 + j], q = w1[b * 16 + j];
        s0 += ((p & 15) - 8) * xb[j] + ((p >> 4) - 8) * xb[j + 16];
        s1 += ((q & 15) - 8) * xb[j] + ((q >> 4) - 8) * xb[j + 16];
      }
      acc0 += (float)s0 * ws[(size_t)r * blocks + b] * xs[b];
      acc1 += (float)s1 * ws[(size_t)(r + 1) * blocks + b] * xs[b];
    }
    y[r] = acc0; y[r + 1] = acc1;
  }
}

// ---- float64 lanes (src/tensor/lanes.ts), N > 1: several tokens' int8 activations per double ----
// q4_0: 3 tokens per double (lane spacing 2^16), register block 2 weight rows x 3 groups;
// q8_0: 2 tokens per double (2^20), 3 rows x 2 groups. Weights come as int8 values here (-8..7 for
// q4_0) and are widened into a double panel per block of rows, as the JS kernel widens its nibbles.
#define ROUND 6755399441055744.0
static void split3(double sa, double sb, double wA, double wB, const double *d, double *o) {
  const double L1 = 65536.0, L2 = L1 * L1;
  double ha = sa / L2 + ROUND - ROUND, hb = sb / L2 + ROUND - ROUND;
  double ra = sa - ha * L2, rb = sb - hb * L2;
  double ma = ra / L1 + ROUND - ROUND, mb = rb / L1 + ROUND - ROUND;
  o[0] += (ra - ma * L1) * wA * d[0]; o[1] += (rb - mb * L1) * wB * d[0];
  o[2] += ma * wA * d[1]; o[3] += mb * wB * d[1];
  o[4] += ha * wA * d[2]; o[5] += hb * wB * d[2];
}
static void split2(double sa, double sb, double sc, double wA, double wB, double wC, const double *d, double *o) {
  const double M = 1048576.0;
  double ha = sa / M + ROUND - ROUND, hb = sb / M + ROUND - ROUND, hc = sc / M + ROUND - ROUND;
  o[0] += (sa - ha * M) * wA * d[0]; o[1] += (sb - hb * M) * wB * d[0]; o[2] += (sc - hc * M) * wC * d[0];
  o[3] += ha * wA * d[1]; o[4] += hb * wB * d[1]; o[5] += hc * wC * d[1];
}
// packed [groups][cols], xsT [blocks][groups * lanes], panel [3][cols], acc [groups * lanes][3].
static __attribute__((noinline)) void lanes_mm(int q4, const int8_t *w, const float *ws, const double *packed,
                                               const double *xsT, double *panel, double *acc, float *y, int rows,
                                               int cols, int n, int groups) {
  int blocks = cols / 32, lanes = q4 ? 3 : 2, R = q4 ? 2 : 3, G = q4 ? 3 : 2, nPad = groups * lanes;
  for (int r = 0; r + R <= rows; r += R) {
    for (int i = 0; i < R; i++)
      for (int k = 0; k < cols; k++) panel[(size_t)i * cols + k] = w[(size_t)(r + i) * cols + k];
    memset(acc, 0, sizeof(double) * nPad * R);
    for (int g = 0; g < groups; g += G) {
      const double *xa = packed + (size_t)g * cols, *xb = xa + cols, *xc = xb + cols;
      const double *p0 = panel, *p1 = panel + cols, *p2 = panel + 2 * cols;
      for (int b = 0; b < blocks; b++) {
        double a0 = 0, a1 = 0, a2 = 0, b0 = 0, b1 = 0, b2 = 0;
        const double *d = xsT + (size_t)b * nPad + g * lanes;
        if (q4) {
          for (int k = b * 32; k < b * 32 + 32; k++) {
            double x0 = xa[k], x1 = xb[k], x2 = xc[k], p = p0[k], q = p1[k];
            a0 += p * x0; a1 += p * x1; a2 += p * x2; b0 += q * x0; b1 += q * x1; b2 += q * x2;
          }
          double wA = ws[(size_t)r * blocks + b], wB = ws[(size_t)(r + 1) * blocks + b];
          double *o = acc + (size_t)g * lanes * 2;
          split3(a0, b0, wA, wB, d, o); split3(a1, b1, wA, wB, d + 3, o + 6); split3(a2, b2, wA, wB, d + 6, o + 12);
        } else {
          for (int k = b * 32; k < b * 32 + 32; k++) {
            double x0 = xa[k], x1 = xb[k], p = p0[k], q = p1[k], u = p2[k];
            a0 += p * x0; a1 += p * x1; b0 += q * x0; b1 += q * x1; a2 += u * x0; b2 += u * x1;
          }
          double wA = ws[(size_t)r * blocks + b], wB = ws[(size_t)(r + 1) * blocks + b], wC = ws[(size_t)(r + 2) * blocks + b];
          double *o = acc + (size_t)g * lanes * 3;
          split2(a0, b0, a2, wA, wB, wC, d, o); split2(a1, b1, b2, wA, wB, wC, d + 2, o + 6);
        }
      }
    }
    for (int t = 0; t < n; t++)
      for (int i = 0; i < R; i++) y[(size_t)t * rows + r + i] = (float)acc[(size_t)t * R + i];
  }
}

static volatile float sink;

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s f32|q8_0|q4_0 ROWS COLS N MILLIS\n", argv[0]);
    return 2;
  }
  const char *kernel = argv[1];
  int rows = atoi(argv[2]), cols = atoi(argv[3]), n = atoi(argv[4]);
  double millis = atof(argv[5]);
  if (rows <= 0 || cols <= 0 || n <= 0 || cols % 32 || rows % 4) {
    fprintf(stderr, "scalar-limit: ROWS must be a multiple of 4, COLS of 32, N > 0\n");
    return 2;
  }
  float *w = malloc((size_t)rows * cols * 4), *x = malloc((size_t)n * cols * 4), *y = malloc((size_t)n * rows * 4);
  int8_t *w8 = malloc((size_t)rows * cols), *x8 = malloc((size_t)cols);
  uint8_t *w4 = malloc((size_t)rows * cols / 2);
  float *ws = malloc((size_t)rows * cols / 32 * 4), *xs = malloc((size_t)cols / 32 * 4);
  for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = frand(), w8[i] = (int8_t)(frand() * 127);
  for (size_t i = 0; i < (size_t)rows * cols / 2; i++) w4[i] = (uint8_t)((frand() + 1) * 127.99);
  for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = frand();
  for (int i = 0; i < cols; i++) x8[i] = (int8_t)(frand() * 127);
  for (size_t i = 0; i < (size_t)rows * cols / 32; i++) ws[i] = frand();
  for (int i = 0; i < cols / 32; i++) xs[i] = frand();

  int q4 = !strcmp(kernel, "q4_0"), lanes = q4 ? 3 : 2, G = q4 ? 3 : 2;
  int groups = ((n + lanes - 1) / lanes + G - 1) / G * G, nPad = groups * lanes;
  double *packed = calloc((size_t)groups * cols, 8), *xsT = calloc((size_t)cols / 32 * nPad, 8);
  double *panel = malloc((size_t)3 * cols * 8), *acc = malloc((size_t)nPad * 3 * 8);
  int8_t *wl = malloc((size_t)rows * cols);
  for (size_t i = 0; i < (size_t)rows * cols; i++) wl[i] = q4 ? (int8_t)((frand() + 1) * 7.99) - 8 : w8[i];
  for (int t = 0; t < n; t++)
    for (int k = 0; k < cols; k++) {
      double lane = 1;
      for (int i = 0; i < t % lanes; i++) lane *= q4 ? 65536.0 : 1048576.0;
      packed[(size_t)(t / lanes) * cols + k] += (int8_t)(frand() * 127) * lane;
    }
  for (int b = 0; b < cols / 32; b++)
    for (int t = 0; t < n; t++) xsT[(size_t)b * nPad + t] = frand();

  // Each variant with the rows x tokens it covers (a 3-row block leaves rows % 3 undone).
  struct { const char *name; int rb, tb; } vs[8];
  int variants = 0;
#define V(NM, RB, TB) (vs[variants].name = NM, vs[variants].rb = RB, vs[variants].tb = TB, variants++)
  int f32 = !strcmp(kernel, "f32");
  if (f32 && n == 1) V("4x2", 4, 1), V("2x4", 2, 1);
  else if (f32) V("4x4", 4, 4), V("3x4", 3, 4), V("4x3", 4, 3), V("2x4", 2, 4), V("4x2", 4, 2);
  else if ((!strcmp(kernel, "q8_0") || !strcmp(kernel, "q4_0")) && n == 1) V("2x32", 2, 1);
  else if (!strcmp(kernel, "q4_0")) V("lanes2x3", 2, 1);
  else if (!strcmp(kernel, "q8_0")) V("lanes3x2", 3, 1);
  else {
    fprintf(stderr, "scalar-limit: unknown kernel %s\n", kernel);
    return 2;
  }
  double best = 0, bestOf[8] = {0};
  const char *bestName = "";
  // Interleave the variants in rounds so that a busy machine hurts them all alike.
  double deadline = now() + millis / 1000;
  for (int round = 0; round < 3 || now() < deadline; round++) {
    for (int v = 0; v < variants; v++) {
      const char *nm = vs[v].name;
      double t0 = now();
      if (f32 && n == 1) {
        if (!strcmp(nm, "4x2")) mv_4x2(w, x, y, rows, cols);
        else mv_2x4(w, x, y, rows, cols);
      } else if (f32) {
        if (!strcmp(nm, "4x4")) mm_4x4(w, x, y, rows, cols, n);
        else if (!strcmp(nm, "3x4")) mm_3x4(w, x, y, rows, cols, n);
        else if (!strcmp(nm, "4x3")) mm_4x3(w, x, y, rows, cols, n);
        else if (!strcmp(nm, "2x4")) mm_2x4(w, x, y, rows, cols, n);
        else mm_4x2(w, x, y, rows, cols, n);
      } else if (n > 1) lanes_mm(q4, wl, ws, packed, xsT, panel, acc, y, rows, cols, n, groups);
      else if (!strcmp(kernel, "q8_0")) q8_mv(w8, ws, x8, xs, y, rows, cols);
      else q4_mv(w4, ws, x8, xs, y, rows, cols);
      double dt = now() - t0;
      sink = y[0];
      int tokens = f32 ? n / vs[v].tb * vs[v].tb : n;
      double gflops = 2.0 * (rows / vs[v].rb * vs[v].rb) * cols * tokens / dt / 1e9;
      if (gflops > bestOf[v]) bestOf[v] = gflops;
      if (gflops > best) best = gflops, bestName = nm;
    }
  }
  printf("%s %d %d %d %.3f %s", kernel, rows, cols, n, best, bestName);
  for (int v = 0; v < variants; v++) printf(" %s=%.3f", vs[v].name, bestOf[v]);
  printf("\n");
  return 0;
}
