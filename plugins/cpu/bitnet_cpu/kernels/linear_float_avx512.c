/* linear_float_avx512.c: the F16 row dot product with 16-wide f32 (AVX-512F/BW/VL) and the
 * Q6_K head kernel with VNNI (rows x tokens with one sub-block per lane, for decode too); the
 * other float formats use the AVX2 kernels (linear_float_avx2.c). */
#include <immintrin.h>
#include <string.h>

#include "bitnet_cpu.h"

float dot_f16_f32_avx512(const void *row, const float *x, int K)
{
    const uint16_t *w = (const uint16_t *)row;
    __m512 a[4];
    for (int j = 0; j < 4; j++) {
        a[j] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 64 <= K; i += 64) {
        _mm_prefetch((const char *)(w + i) + BN_PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w + i) + 64 + BN_PREFETCH_BYTES, _MM_HINT_T0);
        for (int j = 0; j < 4; j++) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(w + i + 16 * j));
            a[j] = _mm512_fmadd_ps(_mm512_cvtph_ps(h), _mm512_loadu_ps(x + i + 16 * j), a[j]);
        }
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]),
                                                   _mm512_add_ps(a[2], a[3])));
    for (; i < K; i++) {
        acc += bn_f16_to_f32(w[i]) * x[i];
    }
    return acc;
}

/* bn_f16_rows_fn with 16-lane f32 (the table's F16 head/matmul). R rows x T tokens per tile,
 * one accumulator each: with R x T >= 8 independent FMA chains the FMA latency is hidden, and
 * per 16-column step the tile loads R weight vectors and T activation vectors for R x T FMAs. */
static inline __attribute__((always_inline)) void
f16_tile_avx512(const uint8_t *w, size_t row_bytes, const float *x, int K, float *y, int M,
               const int R, const int T)
{
    __m512 acc[8][4];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; r++) {
        _Pragma("GCC unroll 4")
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm512_setzero_ps();
        }
    }
    int i = 0;
    for (; i + 16 <= K; i += 16) {
        __m512 xv[4];
        _Pragma("GCC unroll 4")
        for (int t = 0; t < T; t++) {
            xv[t] = _mm512_loadu_ps(x + (size_t)t * K + i);
        }
        _Pragma("GCC unroll 8")
        for (int r = 0; r < R; r++) {
            const uint16_t *wr = (const uint16_t *)(w + (size_t)r * row_bytes) + i;
            __m512 wf = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)wr));
            _Pragma("GCC unroll 4")
            for (int t = 0; t < T; t++) {
                acc[r][t] = _mm512_fmadd_ps(wf, xv[t], acc[r][t]);
            }
        }
    }
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; r++) {
        const uint16_t *wr = (const uint16_t *)(w + (size_t)r * row_bytes);
        _Pragma("GCC unroll 4")
        for (int t = 0; t < T; t++) {
            float s = _mm512_reduce_add_ps(acc[r][t]);
            for (int k = i; k < K; k++) {
                s += bn_f16_to_f32(wr[k]) * x[(size_t)t * K + k];
            }
            y[(size_t)t * M + r] = s;
        }
    }
}

/* T tokens of rows r0..r1-1 in tiles of {RT} rows (one row at a time at the end) */
static inline __attribute__((always_inline)) void
f16_tokens_avx512(const uint8_t *w, size_t row_bytes, int r0, int r1, const float *x, int K,
                 float *y, int M, const int RT, const int T)
{
    int r = r0;
    for (; r + RT <= r1; r += RT) {
        f16_tile_avx512(w + (size_t)r * row_bytes, row_bytes, x, K, y + r, M, RT, T);
    }
    for (; r < r1; r++) {
        f16_tile_avx512(w + (size_t)r * row_bytes, row_bytes, x, K, y + r, M, 1, T);
    }
}

void f16_rows_avx512(const uint8_t *w, size_t row_bytes, int r0, int r1, const float *x, int n,
                    int K, float *y, int M)
{
    if (n == 1) {
        f16_tokens_avx512(w, row_bytes, r0, r1, x, K, y, M, 8, 1);  /* decode: 8 row chains */
        return;
    }
    int t = 0;
    for (; t + 4 <= n; t += 4) {
        f16_tokens_avx512(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 4, 4);
    }
    switch (n - t) {
    case 3: f16_tokens_avx512(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 4, 3); break;
    case 2: f16_tokens_avx512(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 4, 2); break;
    case 1: f16_tokens_avx512(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 8, 1); break;
    default: break;
    }
}

/* ---- Q6_K rows x tokens (a batch, and one decoded token): one sub-block of 16 codes per s32
 * lane ----
 *
 * Both operands of vpdpbusd come from a 256-column block laid out so that lane i (0..15) of
 * vector m (0..3) holds columns 16 s(i) + 4m .. 16 s(i) + 4m + 3 of sub-block s(i) =
 * 4 (i % 4) + i / 4: four vpdpbusd (u8 codes x s8 activations) then sum sub-block s(i)
 * completely in lane i, the sub-block scales multiply lane by lane (one vpmulld), and the -32
 * code offset is the starting value of the chain (-32 x the sub-block's activation sum,
 * precomputed once per token). Per row and token that is 5 multiply-pipe instructions per 256
 * columns, against 8 vpdpwssd + a shared unpack for the int16 path this replaced (and no L2
 * reloads: a block's activations of every token stay in L1).
 *
 * s(i) is what the weights give cheaply: the four 64-code vectors a Q6_K block unpacks to (codes
 * 0..63, 64..127 of each half; lane d = sub-block 4k + d / 4, quad d % 4 in vector k) become the
 * four vectors above with one 4 x 4 dword transpose inside each 128-bit lane (8 unpacks), so
 * the permutation lives in the activation layout (once per token) and one pshufb of the scales.
 *
 * Block sums per (row, token) are reduced 16 at a time with a transpose-add tree (lane j of the
 * result = the sum of input j), so the f32 epilogue runs 16 (row, token) pairs per instruction:
 * acc += (float)isum * (d_w * d_y), the per-row kernels' operations in their order (no FMA), so
 * the output is bit-identical to dot_q6_k_q8_k_* and to the reference, for any batch.
 *
 * One token (decode) runs here too: on Zen 4 a block of one row and one token costs ~24 cycles
 * against ~31 in the per-row dot this table had (which unpacked the same codes, then spent 8
 * vpdpbusd, 4 vpmulld, 4 vpermd and a horizontal sum per block): the head streamed at 28 against
 * 23 GB/s from memory, 31 against 24 from cache (2026-12-05, one thread, min of runs). */

#define Q6B_ACT_BLOCK BN_Q6_K_ACT_BLOCK_AVX512  /* 256 permuted int8 + 16 int32 offsets */

/* Weight prefetch of the batched kernel: a row group (16 rows) reads its 16 row streams one
 * block at a time, which the hardware prefetchers do not follow (without this the kernel
 * waited on DRAM most of its time), so each row's block step prefetches Q6B_PF_LINES lines of
 * the range Q6B_PF_GROUPS groups ahead into L2 (16 x 4 x 64 bytes >= the 16 x 210 a step
 * reads). Zen 4 dev VM, M = 32768 x K = 2560, n = 8, one thread: 18 ms without, 9.2 ms one
 * group ahead, 7.7 ms two (three or four: no better); into L1 (T0) it was slower. */
#define Q6B_PF_GROUPS 2
#define Q6B_PF_LINES 4

static inline int q6b_sub(int i)
{
    return 4 * (i % 4) + i / 4;
}

/* One token's Q8_K codes -> the layout above: per block, bytes 64m + 4i + b =
 * q[16 s(i) + 4m + b], then int32 [16] = -32 x the sum of sub-block s(i). */
void q6_k_act_avx512(const int8_t *q, int K, uint8_t *qa)
{
    for (int blk = 0; blk < K / 256; blk++) {
        const int8_t *qb = q + (size_t)blk * 256;
        uint8_t *o = qa + (size_t)blk * Q6B_ACT_BLOCK;
        int32_t off[16];
        for (int i = 0; i < 16; i++) {
            const int8_t *sb = qb + 16 * q6b_sub(i);
            int32_t sum = 0;
            for (int e = 0; e < 16; e++) {
                sum += sb[e];
            }
            off[i] = -32 * sum;
            for (int m = 0; m < 4; m++) {
                memcpy(o + 64 * m + 4 * i, sb + 4 * m, 4);
            }
        }
        memcpy(o + 256, off, sizeof(off));
    }
}

/* One 210-byte Q6_K block -> the four code vectors (u8 0..63, lane order above), the 16
 * sub-block scales as s32 (lane i = scale of sub-block s(i)) and d. */
static inline __attribute__((always_inline)) void
q6b_unpack(const uint8_t *b, __m512i *u, __m512i *sc, float *d)
{
    const __m512i m0f = _mm512_set1_epi8(0x0F);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    /* ql's 64 bytes hold the low nibbles of codes 0..63 (bits 0-3) and 64..127 (bits 4-7) of a
     * half; qh's 32 bytes, broadcast to both 256-bit halves, give the top two bits with a
     * per-half shift: the top two bits of codes 0..31 are qh bits 0-1 (<< 4), of 32..63
     * bits 2-3 (<< 2), of 64..95 bits 4-5 (as is), of 96..127 bits 6-7 (>> 2) */
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    __m512i x[4];
    for (int half = 0; half < 2; half++) {
        __m512i ql = _mm512_loadu_si512((const void *)(b + 64 * half));
        __m512i qh = _mm512_broadcast_i64x4(
            _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * half)));
        x[2 * half] = _mm512_ternarylogic_epi32(_mm512_and_si512(ql, m0f),
                                                _mm512_sllv_epi16(qh, shl), m30, 0xF8);
        x[2 * half + 1] = _mm512_ternarylogic_epi32(
            _mm512_and_si512(_mm512_srli_epi16(ql, 4), m0f), _mm512_srlv_epi16(qh, shr), m30,
            0xF8);  /* a | (b & 0x30) */
    }
    __m512i t0 = _mm512_unpacklo_epi32(x[0], x[1]);
    __m512i t1 = _mm512_unpackhi_epi32(x[0], x[1]);
    __m512i t2 = _mm512_unpacklo_epi32(x[2], x[3]);
    __m512i t3 = _mm512_unpackhi_epi32(x[2], x[3]);
    u[0] = _mm512_unpacklo_epi64(t0, t2);
    u[1] = _mm512_unpackhi_epi64(t0, t2);
    u[2] = _mm512_unpacklo_epi64(t1, t3);
    u[3] = _mm512_unpackhi_epi64(t1, t3);
    /* byte i = scale of sub-block s(i) */
    const __m128i sperm = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    *sc = _mm512_cvtepi8_epi32(
        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 192)), sperm));
    uint16_t dh;
    memcpy(&dh, b + 208, 2);
    *d = _cvtsh_ss(dh);
}

/* Lane j of the result = the sum of the 16 lanes of v[j] (transpose-add tree, 45 ops). */
static inline __attribute__((always_inline)) __m512i q6b_pair32(__m512i a, __m512i b)
{
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

static inline __attribute__((always_inline)) __m512i q6b_pair64(__m512i a, __m512i b)
{
    return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

static inline __attribute__((always_inline)) __m512i q6b_pair128(__m512i a, __m512i b)
{
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD));
}

static inline __attribute__((always_inline)) __m512i q6b_tree16(const __m512i *v)
{
    __m512i s[8], q[4];
    for (int k = 0; k < 8; k++) {
        s[k] = q6b_pair32(v[2 * k], v[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        q[k] = q6b_pair64(s[2 * k], s[2 * k + 1]);
    }
    return q6b_pair128(q6b_pair128(q[0], q[1]), q6b_pair128(q[2], q[3]));
}

/* One block for T tokens (activations at a + t * astride, Q8_K scales dyb [t * nb]) and the 16
 * rows in T groups of R = 16 / T: lane j of acc[g] is row g R + j % R, token j / R. */
static inline __attribute__((always_inline)) void
q6b_block(const __m512i (*u)[4], const __m512i *sc, __m512 d16, const uint8_t *a, size_t astride,
          const float *dyb, int nb, __m512 *acc, const int T)
{
    const int R = 16 / T;
    float dyt[16] __attribute__((aligned(64)));
    for (int j = 0; j < 16; j++) {
        dyt[j] = dyb[(size_t)(j / R) * nb];
    }
    const __m512 dyv = _mm512_load_ps(dyt);
    const __m512i rmod = _mm512_and_si512(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(R - 1));
    for (int g = 0; g < T; g++) {
        __m512i v[16];
        for (int t = 0; t < T; t++) {
            const uint8_t *at = a + (size_t)t * astride;
            __m512i a0 = _mm512_loadu_si512((const void *)at);
            __m512i a1 = _mm512_loadu_si512((const void *)(at + 64));
            __m512i a2 = _mm512_loadu_si512((const void *)(at + 128));
            __m512i a3 = _mm512_loadu_si512((const void *)(at + 192));
            __m512i off = _mm512_loadu_si512((const void *)(at + 256));
            for (int r = 0; r < R; r++) {
                int row = g * R + r;
                __m512i s = _mm512_dpbusd_epi32(off, u[row][0], a0);
                s = _mm512_dpbusd_epi32(s, u[row][1], a1);
                s = _mm512_dpbusd_epi32(s, u[row][2], a2);
                s = _mm512_dpbusd_epi32(s, u[row][3], a3);
                v[t * R + r] = _mm512_mullo_epi32(s, sc[row]);
            }
        }
        __m512i isum = q6b_tree16(v);
        __m512 dwv = _mm512_permutexvar_ps(_mm512_add_epi32(rmod, _mm512_set1_epi32(g * R)), d16);
        __m512 scale = _mm512_mul_ps(dwv, dyv);
        acc[g] = _mm512_add_ps(acc[g], _mm512_mul_ps(_mm512_cvtepi32_ps(isum), scale));
    }
}

void q6_k_rows_avx512(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                      size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                      float out_scale)
{
    int nb = K / 256;
    __m512i u[BN_Q6_K_ROWS][4];
    __m512i sc[BN_Q6_K_ROWS];
    float dr[BN_Q6_K_ROWS] __attribute__((aligned(64)));
    __m512 acc[BN_Q6_K_TOKENS];
    for (int r = nr; r < BN_Q6_K_ROWS; r++) {
        /* missing rows of the last group: zero codes and scales, results not written */
        for (int m = 0; m < 4; m++) {
            u[r][m] = _mm512_setzero_si512();
        }
        sc[r] = _mm512_setzero_si512();
        dr[r] = 0.0f;
    }
    for (int t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
    }
    /* the weights Q6B_PF_GROUPS groups ahead (the caller's next groups; a prefetch past the
     * matrix end is harmless), a few lines after each row's unpack rather than in one burst */
    const char *pf = (const char *)w + (size_t)Q6B_PF_GROUPS * BN_Q6_K_ROWS * row_bytes;
    for (int blk = 0; blk < nb; blk++) {
        for (int r = 0; r < nr; r++) {
            q6b_unpack(w + (size_t)r * row_bytes + (size_t)blk * 210, u[r], &sc[r], &dr[r]);
            for (int l = 0; l < Q6B_PF_LINES; l++) {
                _mm_prefetch(pf + 64 * l, _MM_HINT_T1);
            }
            pf += 64 * Q6B_PF_LINES;
        }
        __m512 d16 = _mm512_load_ps(dr);
        const uint8_t *ab = qa + (size_t)blk * Q6B_ACT_BLOCK;
        const float *dyb = dy + blk;
        /* tokens in chunks of 4 (4 rows x 4 tokens a reduction), the rest 2, 1 */
        int t0 = 0;
        for (; t0 + 4 <= nt; t0 += 4) {
            q6b_block(u, sc, d16, ab + t0 * qa_stride, qa_stride, dyb + (size_t)t0 * nb, nb,
                      acc + t0, 4);
        }
        if (nt - t0 >= 2) {
            q6b_block(u, sc, d16, ab + t0 * qa_stride, qa_stride, dyb + (size_t)t0 * nb, nb,
                      acc + t0, 2);
            t0 += 2;
        }
        if (nt - t0 >= 1) {
            q6b_block(u, sc, d16, ab + t0 * qa_stride, qa_stride, dyb + (size_t)t0 * nb, nb,
                      acc + t0, 1);
        }
    }
    /* the same chunks: lane j of acc[t0 + g] is row g R + j % R, token t0 + j / R */
    for (int t0 = 0; t0 < nt;) {
        int T = nt - t0 >= 4 ? 4 : nt - t0 >= 2 ? 2 : 1;
        int R = 16 / T;
        for (int g = 0; g < T; g++) {
            float v[16];
            _mm512_storeu_ps(v, acc[t0 + g]);
            for (int j = 0; j < 16; j++) {
                int row = g * R + j % R;
                if (row < nr) {
                    float x = v[j];
                    y[(size_t)(t0 + j / R) * ystride + row] = out_scale != 1.0f ? x * out_scale : x;
                }
            }
        }
        t0 += T;
    }
}
