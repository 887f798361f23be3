// The scalar limit: the engine's kernel shapes as plain C loops, compiled the way JavaScript must
// run them - one element per instruction, no SIMD, no fused multiply-add:
//
//   cc -O2 -fno-tree-vectorize -fno-tree-slp-vectorize -ffp-contract=off -o scalar-limit tools/scalar-limit.c -lm
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
//   ./scalar-limit attn f32|bf16|q8_0 N MILLIS [HEADS]
//     one decode row's attention (attention.ts), Qwen2.5-0.5B's shape: 7 query heads per kv head of
//     64, HEADS kv heads (48: 24 layers x 2) of N positions; prints attn DTYPE N GMACS VARIANT ...
//     (GMAC/s = 2 * 7 * 64 * N * HEADS / seconds). Run by `node dist/bench/attention-decode.js --scalar`.
#include <math.h>
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

// ---- Attention of one decode row (attention.ts's attendRange): 7 query heads sharing one kv head of
// 64, the cache in blocks of 16 positions; per block the scores Q·Kᵀ [7 x 16], the online softmax,
// and acc += P·V [7 x 64]. 2 * 7 * 64 MACs per position and kv head (scores and P·V).
#define AQ 7
#define HD 64
#define BS 16
#define QG 32 // q8_0: values per scale
#define UNR _Pragma("GCC unroll 16")
#define INLINE static inline __attribute__((always_inline))

// exp(x) for x <= 0 as attention.ts's expNonPositive: a table of 2^-i/64 steps and a cubic.
static double EXP_HI[1100], EXP_LO[64];
INLINE double exp_np(double x) {
  if (x < -700) return 0;
  double t = -x * (64 / 0.6931471805599453);
  int i = (int)t;
  double f = (t - i) * (0.6931471805599453 / 64);
  return EXP_HI[i >> 6] * EXP_LO[i & 63] * (1 - f * (1 - f * (0.5 - f * (1.0 / 6))));
}

// Online softmax of one tile: s[q][0..16) become probabilities; acc and sum rescaled when the max grows.
#define SOFTMAX(REAL)                                                                           \
  INLINE void softmax_##REAL(REAL *s, REAL *acc, double *mx, double *sum) {                     \
    for (int q = 0; q < AQ; q++) {                                                              \
      REAL *sq = s + q * BS;                                                                    \
      double m = mx[q], sm = sum[q];                                                            \
      for (int t = 0; t < BS; t++) m = sq[t] > m ? sq[t] : m;                                   \
      if (m != mx[q]) {                                                                         \
        double c = exp(mx[q] - m);                                                              \
        sm *= c, mx[q] = m;                                                                     \
        for (int d = 0; d < HD; d++) acc[q * HD + d] *= c;                                      \
      }                                                                                         \
      for (int t = 0; t < BS; t++) sq[t] = exp_np(sq[t] - m), sm += sq[t];                      \
      sum[q] = sm;                                                                              \
    }                                                                                           \
  }
SOFTMAX(float)
SOFTMAX(double)

// s[i][t] = Σ_j q[i][j] k[t][j] over j < W (rows HD apart): QB queries x TB positions in registers.
#define SCORES(NAME, REAL, KT, QB, TB, W)                                                       \
  INLINE void NAME(REAL *s, const REAL *q, const KT *k) {                                       \
    for (int t = 0; t < BS; t += TB) {                                                          \
      REAL a[QB][TB];                                                                           \
      UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < TB; m++) a[i][m] = 0;            \
      for (int j = 0; j < W; j++) {                                                             \
        REAL x[TB], w[QB];                                                                      \
        UNR for (int m = 0; m < TB; m++) x[m] = k[(t + m) * HD + j];                            \
        UNR for (int i = 0; i < QB; i++) w[i] = q[i * HD + j];                                  \
        UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < TB; m++) a[i][m] += w[i] * x[m]; \
      }                                                                                         \
      UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < TB; m++) s[i * BS + t + m] = a[i][m]; \
    }                                                                                           \
  }
// acc[i][d] += Σ_t p[i][t] v[t][d] over d < W: QB queries x DB values in registers over the 16 positions.
#define PV_QD(NAME, REAL, VT, QB, DB, W)                                                        \
  INLINE void NAME(REAL *acc, const REAL *p, const VT *v) {                                     \
    for (int d = 0; d < W; d += DB) {                                                           \
      REAL a[QB][DB];                                                                           \
      UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < DB; m++) a[i][m] = acc[i * HD + d + m]; \
      for (int t = 0; t < BS; t++) {                                                            \
        REAL x[DB], w[QB];                                                                      \
        UNR for (int m = 0; m < DB; m++) x[m] = v[t * HD + d + m];                              \
        UNR for (int i = 0; i < QB; i++) w[i] = p[i * BS + t];                                  \
        UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < DB; m++) a[i][m] += w[i] * x[m]; \
      }                                                                                         \
      UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < DB; m++) acc[i * HD + d + m] = a[i][m]; \
    }                                                                                           \
  }
// The same as attention.ts's tileValues: QB queries x TB positions of p in registers, one pass per d.
#define PV_QT(NAME, REAL, VT, QB, TB, W)                                                        \
  INLINE void NAME(REAL *acc, const REAL *p, const VT *v) {                                     \
    for (int t = 0; t < BS; t += TB) {                                                          \
      REAL w[QB][TB];                                                                           \
      UNR for (int i = 0; i < QB; i++) UNR for (int m = 0; m < TB; m++) w[i][m] = p[i * BS + t + m]; \
      for (int d = 0; d < W; d++) {                                                             \
        REAL x[TB];                                                                             \
        UNR for (int m = 0; m < TB; m++) x[m] = v[(t + m) * HD + d];                            \
        UNR for (int i = 0; i < QB; i++) {                                                      \
          REAL y = 0;                                                                           \
          UNR for (int m = 0; m < TB; m++) y += w[i][m] * x[m];                                 \
          acc[i * HD + d] += y;                                                                 \
        }                                                                                       \
      }                                                                                         \
    }                                                                                           \
  }

// The blockings of a tile's 7 queries, chosen by `b`. Scores: 0 = 4+3 queries x 2 positions
// (attention.ts), 1 = 7 x 1, 2 = 4+3 x 4. P·V: 0 = 4+3 queries x 2 values, 1 = 7 x 2, 2 = 4+3 x 4,
// 3 = 2+2+2+1 queries x 8 positions (attention.ts).
#define TILE_FNS(SFX, REAL, KT, VT, W)                                                          \
  SCORES(sc4x2_##SFX, REAL, KT, 4, 2, W) SCORES(sc3x2_##SFX, REAL, KT, 3, 2, W)                 \
  SCORES(sc7x1_##SFX, REAL, KT, 7, 1, W) SCORES(sc4x4_##SFX, REAL, KT, 4, 4, W)                 \
  SCORES(sc3x4_##SFX, REAL, KT, 3, 4, W)                                                        \
  INLINE void scores_##SFX(int b, REAL *s, const REAL *q, const KT *k) {                        \
    if (b == 1) sc7x1_##SFX(s, q, k);                                                           \
    else if (b == 2) sc4x4_##SFX(s, q, k), sc3x4_##SFX(s + 4 * BS, q + 4 * HD, k);              \
    else sc4x2_##SFX(s, q, k), sc3x2_##SFX(s + 4 * BS, q + 4 * HD, k);                          \
  }                                                                                             \
  PV_QD(pv4x2_##SFX, double, VT, 4, 2, W) PV_QD(pv3x2_##SFX, double, VT, 3, 2, W)               \
  PV_QD(pv7x2_##SFX, double, VT, 7, 2, W) PV_QD(pv4x4_##SFX, double, VT, 4, 4, W)               \
  PV_QD(pv3x4_##SFX, double, VT, 3, 4, W)                                                       \
  PV_QT(pt2x8_##SFX, double, VT, 2, 8, W) PV_QT(pt1x8_##SFX, double, VT, 1, 8, W)               \
  INLINE void values_##SFX(int b, double *acc, const double *p, const VT *x) {                  \
    if (b == 1) pv7x2_##SFX(acc, p, x);                                                         \
    else if (b == 2) pv4x4_##SFX(acc, p, x), pv3x4_##SFX(acc + 4 * HD, p + 4 * BS, x);          \
    else if (b == 3)                                                                            \
      pt2x8_##SFX(acc, p, x), pt2x8_##SFX(acc + 2 * HD, p + 2 * BS, x),                         \
        pt2x8_##SFX(acc + 4 * HD, p + 4 * BS, x), pt1x8_##SFX(acc + 6 * HD, p + 6 * BS, x);     \
    else pv4x2_##SFX(acc, p, x), pv3x2_##SFX(acc + 4 * HD, p + 4 * BS, x);                      \
  }
TILE_FNS(d, double, float, float, HD) // f32 cache, JavaScript's arithmetic (each f32 load widened)
TILE_FNS(i, int32_t, int8_t, int8_t, QG) // q8_0: integer scores and int8 values, one group at a time
TILE_FNS(l, double, int8_t, int8_t, QG) // q8_0: attention.ts's float64 lanes for the scores

// float arithmetic, the f32 cache's limit (no widening at all): scores and P·V in float.
SCORES(fsc4x2, float, float, 4, 2, HD) SCORES(fsc3x2, float, float, 3, 2, HD)
PV_QD(fpv4x2, float, float, 4, 2, HD) PV_QD(fpv3x2, float, float, 3, 2, HD)

// One kv head of a decode row over n positions. f32 and bf16 (widened to an f32 tile per block as
// attention.ts does): `b` the blockings, b = 4 all in float (4+3 x 2 both). q8_0: int8 keys and
// values with an f32 scale per 32; b < 3 integer scores (the query rounded to 13 bits per group as
// tileScoresQ8), b = 3 attention.ts's lanes (two queries per double, 4 pairs x 2 positions) with
// its P·V, b = 4 the lanes with P·V 4+3 x 2; P·V with each probability times its position's group
// scale once per tile.
#define LANE 67108864.0
static __attribute__((noinline)) void attn(int dtype, int b, const void *K, const void *V, const float *KS,
                                           const float *VS, const float *q0, float *out, int n) {
  double q[AQ * HD], s[AQ * BS], ps[AQ * BS], acc[AQ * HD] = {0}, mx[AQ], sum[AQ], qs[AQ * HD / QG], qp[8 * HD] = {0};
  float qf[AQ * HD], sf[AQ * BS], accf[AQ * HD] = {0}, kt[BS * HD], vt[BS * HD];
  int32_t qi[AQ * HD], si[AQ * BS];
  const int qmax = (int)((LANE / 2 - 1) / (QG * 128));
  for (int i = 0; i < AQ * HD; i++) q[i] = qf[i] = q0[i] * 0.125f;
  for (int i = 0; i < AQ * HD; i += QG) {
    double amax = 0;
    for (int j = i; j < i + QG; j++) amax = fmax(amax, fabs(q[j]));
    qs[i / QG] = amax / qmax;
    for (int j = i; j < i + QG; j++) {
      qi[j] = (int)lrint(amax == 0 ? 0 : q[j] * qmax / amax);
      qp[(j / HD >> 1) * HD + j % HD] += (j / HD & 1) ? qi[j] * LANE : qi[j];
    }
  }
  for (int i = 0; i < AQ; i++) mx[i] = -INFINITY, sum[i] = 0;
  for (int t0 = 0; t0 < n; t0 += BS) {
    if (dtype == 2) {
      const int8_t *kb = (const int8_t *)K + (size_t)t0 * HD, *vb = (const int8_t *)V + (size_t)t0 * HD;
      const float *ks = KS + (size_t)t0 * HD / QG, *vs = VS + (size_t)t0 * HD / QG;
      for (int g = 0; g < HD / QG; g++) {
        if (b < 3) scores_i(b, si, qi + g * QG, kb + g * QG);
        else {
          sc4x2_l(s, qp + g * QG, kb + g * QG); // pairs 0-3 (8 lanes, the last padding) into rows 0-3
          for (int p = 0; p < 4; p++)
            for (int t = 0; t < BS; t++) {
              double x = s[p * BS + t], hi = nearbyint(x * (1 / LANE));
              si[2 * p * BS + t] = (int32_t)(x - hi * LANE);
              if (2 * p + 1 < AQ) si[(2 * p + 1) * BS + t] = (int32_t)hi;
            }
        }
        for (int i = 0; i < AQ; i++)
          for (int t = 0; t < BS; t++) {
            double x = si[i * BS + t] * qs[i * (HD / QG) + g] * ks[t * (HD / QG) + g];
            ps[i * BS + t] = g ? ps[i * BS + t] + x : x;
          }
      }
      softmax_double(ps, acc, mx, sum);
      for (int g = 0; g < HD / QG; g++) {
        for (int i = 0; i < AQ; i++)
          for (int t = 0; t < BS; t++) s[i * BS + t] = ps[i * BS + t] * vs[t * (HD / QG) + g];
        values_i(b == 3 ? 3 : b == 4 ? 0 : b, acc + g * QG, s, vb + g * QG);
      }
      continue;
    }
    const float *kb = (const float *)K + (size_t)t0 * HD, *vb = (const float *)V + (size_t)t0 * HD;
    if (dtype == 1) {
      const uint16_t *k16 = (const uint16_t *)K + (size_t)t0 * HD, *v16 = (const uint16_t *)V + (size_t)t0 * HD;
      for (int i = 0; i < BS * HD; i++) {
        uint32_t x = (uint32_t)k16[i] << 16, y = (uint32_t)v16[i] << 16;
        memcpy(kt + i, &x, 4), memcpy(vt + i, &y, 4);
      }
      kb = kt, vb = vt;
    }
    if (b == 4) {
      fsc4x2(sf, qf, kb), fsc3x2(sf + 4 * BS, qf + 4 * HD, kb);
      softmax_float(sf, accf, mx, sum);
      fpv4x2(accf, sf, vb), fpv3x2(accf + 4 * HD, sf + 4 * BS, vb);
    } else {
      scores_d(b, s, q, kb);
      softmax_double(s, acc, mx, sum);
      values_d(b, acc, s, vb);
    }
  }
  for (int i = 0; i < AQ * HD; i++) out[i] = (b == 4 && dtype < 2 ? accf[i] : acc[i]) / sum[i / HD];
}

// ./scalar-limit attn f32|bf16|q8_0 N MILLIS [HEADS]: HEADS kv heads (default 48: Qwen2.5-0.5B's 24
// layers x 2) of N positions each, one decode row; prints "attn DTYPE N GMACS VARIANT V=GMACS..."
// with GMAC/s = 2 * 7 * 64 * N * HEADS / CPU seconds, best of each variant over the rounds.
static int attn_main(int argc, char **argv) {
  const char *dt = argv[2];
  int dtype = !strcmp(dt, "f32") ? 0 : !strcmp(dt, "bf16") ? 1 : !strcmp(dt, "q8_0") ? 2 : -1;
  int n = atoi(argv[3]), heads = argc > 5 ? atoi(argv[5]) : 48;
  double millis = atof(argv[4]);
  if (dtype < 0 || n <= 0 || n % BS || heads <= 0) {
    fprintf(stderr, "scalar-limit attn: DTYPE f32|bf16|q8_0, N a multiple of %d\n", BS);
    return 2;
  }
  for (int i = 0; i < 1100; i++) EXP_HI[i] = pow(2, -i);
  for (int i = 0; i < 64; i++) EXP_LO[i] = pow(2, -i / 64.0);
  size_t vals = (size_t)heads * n * HD, es = dtype == 0 ? 4 : dtype == 1 ? 2 : 1;
  char *K = malloc(vals * es), *V = malloc(vals * es);
  float *KS = malloc(vals / QG * 4), *VS = malloc(vals / QG * 4), q[AQ * HD], out[AQ * HD];
  for (size_t i = 0; i < vals; i++) {
    float k = 2 * frand(), v = frand() / 2;
    if (dtype == 0) ((float *)K)[i] = k, ((float *)V)[i] = v;
    else if (dtype == 1) {
      uint32_t a, c;
      memcpy(&a, &k, 4), memcpy(&c, &v, 4);
      ((uint16_t *)K)[i] = a >> 16, ((uint16_t *)V)[i] = c >> 16;
    } else ((int8_t *)K)[i] = (int8_t)(frand() * 127), ((int8_t *)V)[i] = (int8_t)(frand() * 127);
  }
  for (size_t i = 0; i < vals / QG; i++) KS[i] = 2.0f / 127 * (1 + frand() / 4), VS[i] = 0.5f / 127 * (1 + frand() / 4);
  for (int i = 0; i < AQ * HD; i++) q[i] = frand();
  const char *names[2][5] = {{"4+3x2/4+3x2d", "7x1/7x2d", "4+3x4/4+3x4d", "4+3x2/2x8t", "float"},
                             {"int4+3x2/4+3x2d", "int7x1/7x2d", "int4+3x4/4+3x4d", "lanes/2x8t", "lanes/4+3x2d"}};
  // The variants compute the same attention (up to rounding): check them against variant 0.
  float ref[AQ * HD];
  for (int b = 0; b < 5; b++) {
    attn(dtype, b, K, V, KS, VS, q, b ? out : ref, n);
    for (int i = 0; b && i < AQ * HD; i++)
      if (fabsf(out[i] - ref[i]) > 1e-4f * (1 + fabsf(ref[i]))) {
        fprintf(stderr, "scalar-limit attn: variant %s differs at %d: %g vs %g\n", names[dtype == 2][b], i, out[i], ref[i]);
        return 1;
      }
  }
  double best = 0, bestOf[5] = {0};
  const char *bestName = "";
  double deadline = now() + millis / 1000;
  for (int round = 0; round < 2 || now() < deadline; round++)
    for (int b = 0; b < 5; b++) {
      double t0 = now();
      for (int h = 0; h < heads; h++) {
        size_t o = (size_t)h * n * HD;
        attn(dtype, b, K + o * es, V + o * es, KS + o / QG, VS + o / QG, q, out, n);
        sink += out[h % (AQ * HD)];
      }
      double gmacs = 2.0 * AQ * HD * n * heads / (now() - t0) / 1e9;
      if (gmacs > bestOf[b]) bestOf[b] = gmacs;
      if (gmacs > best) best = gmacs, bestName = names[dtype == 2][b];
    }
  printf("attn %s %d %.3f %s", dt, n, best, bestName);
  for (int b = 0; b < 5; b++) printf(" %s=%.3f", names[dtype == 2][b], bestOf[b]);
  printf("\n");
  return 0;
}


int main(int argc, char **argv) {
  if (argc >= 5 && !strcmp(argv[1], "attn")) return attn_main(argc, argv);
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
