/* linear_float_avx512.c: the F16 row dot product with 16-wide f32 (AVX-512F/BW/VL) and the
 * Q6_K head kernel with VNNI over the grouped Q6_K layout (rows x tokens with one sub-block per
 * lane, for decode too); the other float formats use the AVX2 kernels (linear_float_avx2.c). */
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
 * The weights come in the table's grouped Q6_K layout (bitnet_cpu.h, repacked at load by
 * q6_k_to_groups16): each row's block already holds the four vectors in this lane order, 6 bits
 * a code, so they come out with 9 bitwise ops (the file's layout took 8 unpacks for a 4 x 4
 * dword transpose plus 12 shifts and masks), and a 16-row group is one stream front to back.
 *
 * Block sums per (row, token) are reduced 16 at a time with a transpose-add tree (lane j of the
 * result = the sum of input j), so the f32 epilogue runs 16 (row, token) pairs per instruction:
 * acc += (float)isum * (d_w * d_y), the per-row kernels' operations in their order (no FMA), so
 * the output is bit-identical to dot_q6_k_q8_k_* and to the reference, for any batch.
 *
 * One token (decode) runs here too, straight from the codes into each row's dot
 * (q6g_rows_one). Zen 4, one thread: 2048 x 2560 from cache at 57 against 29 GB/s in the
 * file's layout; the 2B head (128256 x 2560) from memory 10.2 against 11.4 ms (min of 8
 * interleaved passes; 2 threads 7.8 against 10.5 ms), the same bits (2026-12-05). */

#define Q6B_ACT_BLOCK BN_Q6_K_ACT_BLOCK_AVX512  /* 256 permuted int8 + 16 int32 offsets */

#define Q6G_PF_GROUPS 2  /* the batched kernel's prefetch distance, in groups */

/* One token's Q8_K codes -> the layout above: per block, bytes 64m + 4i + b =
 * q[16 s(i) + 4m + b], then int32 [16] = -32 x the sum of sub-block s(i). */
void q6_k_act_avx512(const int8_t *q, int K, uint8_t *qa)
{
    for (int blk = 0; blk < K / 256; blk++) {
        const int8_t *qb = q + (size_t)blk * 256;
        uint8_t *o = qa + (size_t)blk * Q6B_ACT_BLOCK;
        int32_t off[16];
        for (int i = 0; i < 16; i++) {
            const int8_t *sb = qb + 16 * bn_q6g_sub(i);
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

/* One row's block of the grouped layout (bitnet_cpu.h) -> its four code vectors (u8 0..63,
 * lane order above): u0..u2 are the low six bits of L0..L2, u3 gathers their top two bits
 * (16-bit shifts: a byte's garbage from its neighbour is masked off). */
static inline __attribute__((always_inline)) void q6g_codes(const uint8_t *p, __m512i *u)
{
    const __m512i m3f = _mm512_set1_epi8(0x3F);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i m0f = _mm512_set1_epi8(0x0F);
    const __m512i m03 = _mm512_set1_epi8(0x03);
    __m512i l0 = _mm512_loadu_si512((const void *)p);
    __m512i l1 = _mm512_loadu_si512((const void *)(p + 64));
    __m512i l2 = _mm512_loadu_si512((const void *)(p + 128));
    u[0] = _mm512_and_si512(l0, m3f);
    u[1] = _mm512_and_si512(l1, m3f);
    u[2] = _mm512_and_si512(l2, m3f);
    /* bits 0-1 from L2 >> 6, bits 2-3 from L1 >> 4 (0xD8: C ? B : A), then bits 4-5 from
     * L0 >> 2 (0xEC: (A & C) | B) */
    __m512i lo = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l1, 4), _mm512_srli_epi16(l2, 6),
                                           m03, 0xD8);
    u[3] = _mm512_ternarylogic_epi32(lo, _mm512_and_si512(_mm512_srli_epi16(l0, 2), m30), m0f,
                                     0xEC);
}

/* The 16 sub-block scales of a row's block as s32 (lane i: sub-block s(i)) */
static inline __attribute__((always_inline)) __m512i q6g_scales(const uint8_t *p)
{
    return _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p));
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

/* One token (decode): each row's codes go straight into its dot (nothing kept on the stack
 * between rows), the tree built as rows come. Same integer sums and epilogue as q6b_block with
 * T = 1. No software prefetch: the group is one stream front to back, which the hardware
 * prefetchers follow (2B head, one Zen 4 thread: 10.0 ms without, 11.4-13.8 with prefetches
 * 1-16 KB ahead). */
static void q6g_rows_one(const uint8_t *w, int nb, const uint8_t *qa, const float *dy,
                         __m512 *acc)
{
    for (int blk = 0; blk < nb; blk++) {
        const uint8_t *cb = w + bn_q6g_codes(nb, blk);
        const uint8_t *sb = w + bn_q6g_scales(nb, blk);
        const uint8_t *ab = qa + (size_t)blk * Q6B_ACT_BLOCK;
        const __m512i a0 = _mm512_loadu_si512((const void *)ab);
        const __m512i a1 = _mm512_loadu_si512((const void *)(ab + 64));
        const __m512i a2 = _mm512_loadu_si512((const void *)(ab + 128));
        const __m512i a3 = _mm512_loadu_si512((const void *)(ab + 192));
        const __m512i off = _mm512_loadu_si512((const void *)(ab + 256));
        __m512i q[4];
        for (int k = 0; k < 4; k++) {
            __m512i v[4];
            for (int r = 0; r < 4; r++) {
                int row = 4 * k + r;
                __m512i u[4];
                q6g_codes(cb + (size_t)row * 192, u);
                __m512i s = _mm512_dpbusd_epi32(off, u[0], a0);
                s = _mm512_dpbusd_epi32(s, u[1], a1);
                s = _mm512_dpbusd_epi32(s, u[2], a2);
                s = _mm512_dpbusd_epi32(s, u[3], a3);
                v[r] = _mm512_mullo_epi32(s, q6g_scales(sb + 16 * row));
            }
            q[k] = q6b_pair64(q6b_pair32(v[0], v[1]), q6b_pair32(v[2], v[3]));
        }
        __m512i isum = q6b_pair128(q6b_pair128(q[0], q[1]), q6b_pair128(q[2], q[3]));
        __m512 dwv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + bn_q6g_d(nb, blk))));
        __m512 scale = _mm512_mul_ps(dwv, _mm512_set1_ps(dy[blk]));
        *acc = _mm512_add_ps(*acc, _mm512_mul_ps(_mm512_cvtepi32_ps(isum), scale));
    }
}

void q6_k_rows_avx512(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                      size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                      float out_scale)
{
    /* w: the group (bitnet_cpu.h, the grouped Q6_K layout), 16 x row_bytes bytes */
    int nb = K / 256;
    __m512 acc[BN_Q6_K_TOKENS];
    for (int t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
    }
    if (nt == 1) {
        q6g_rows_one(w, nb, qa, dy, acc);
    } else {
        __m512i u[BN_Q6_K_ROWS][4];
        __m512i sc[BN_Q6_K_ROWS];
        /* a batch spends long enough on a block that the hardware prefetchers lose the
         * stream: the block Q6G_PF_GROUPS groups ahead is prefetched as this one unpacks
         * (53 lines, 3 a row and one more for the first five) */
        const char *pf = (const char *)w + (size_t)Q6G_PF_GROUPS * 16 * row_bytes;
        for (int blk = 0; blk < nb; blk++, pf += 3360) {
            for (int r = 0; r < BN_Q6_K_ROWS; r++) {
                const char *p = pf + 192 * r + 64 * (r < 5 ? r : 5);
                _mm_prefetch(p, _MM_HINT_T1);
                _mm_prefetch(p + 64, _MM_HINT_T1);
                _mm_prefetch(p + 128, _MM_HINT_T1);
                if (r < 5) {
                    _mm_prefetch(p + 192, _MM_HINT_T1);
                }
                q6g_codes(w + bn_q6g_codes(nb, blk) + (size_t)r * 192, u[r]);
                sc[r] = q6g_scales(w + bn_q6g_scales(nb, blk) + (size_t)r * 16);
            }
            __m512 d16 = _mm512_cvtph_ps(
                _mm256_loadu_si256((const __m256i *)(w + bn_q6g_d(nb, blk))));
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
