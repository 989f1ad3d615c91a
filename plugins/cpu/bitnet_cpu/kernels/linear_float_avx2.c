/* linear_float_avx2.c: f32 dot products of float-format weight rows (AVX2 + FMA + F16C).
 * Each weight is dequantized exactly as in linear_float_generic.c (same f32 products), then
 * multiplied into x with FMA; four accumulators hide the FMA latency. */
#include <immintrin.h>
#include <string.h>

#include "bitnet_cpu.h"

static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

float dot_f32_f32_avx2(const void *row, const float *x, int K)
{
    const float *w = (const float *)row;
    __m256 a0 = _mm256_setzero_ps();
    __m256 a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= K; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    float acc = hsum_ps(_mm256_add_ps(a0, a1));
    for (; i < K; i++) {
        acc += w[i] * x[i];
    }
    return acc;
}

float dot_f16_f32_avx2(const void *row, const float *x, int K)
{
    const uint16_t *w = (const uint16_t *)row;
    __m256 a[4];
    for (int j = 0; j < 4; j++) {
        a[j] = _mm256_setzero_ps();
    }
    int i = 0;
    for (; i + 32 <= K; i += 32) {
        for (int j = 0; j < 4; j++) {
            __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8 * j)));
            a[j] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + i + 8 * j), a[j]);
        }
    }
    float acc = hsum_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    for (; i < K; i++) {
        acc += bn_f16_to_f32(w[i]) * x[i];
    }
    return acc;
}

/* bn_f16_rows_fn with 8-lane f32 (the table's F16 head/matmul). R rows x T tokens per tile,
 * one accumulator each: with R x T >= 8 independent FMA chains the FMA latency is hidden, and
 * per 8-column step the tile loads R weight vectors and T activation vectors for R x T FMAs. */
static inline __attribute__((always_inline)) void
f16_tile_avx2(const uint8_t *w, size_t row_bytes, const float *x, int K, float *y, int M,
               const int R, const int T)
{
    __m256 acc[8][4];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; r++) {
        _Pragma("GCC unroll 4")
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
        }
    }
    int i = 0;
    for (; i + 8 <= K; i += 8) {
        __m256 xv[4];
        _Pragma("GCC unroll 4")
        for (int t = 0; t < T; t++) {
            xv[t] = _mm256_loadu_ps(x + (size_t)t * K + i);
        }
        _Pragma("GCC unroll 8")
        for (int r = 0; r < R; r++) {
            const uint16_t *wr = (const uint16_t *)(w + (size_t)r * row_bytes) + i;
            __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wr));
            _Pragma("GCC unroll 4")
            for (int t = 0; t < T; t++) {
                acc[r][t] = _mm256_fmadd_ps(wf, xv[t], acc[r][t]);
            }
        }
    }
    _Pragma("GCC unroll 8")
    for (int r = 0; r < R; r++) {
        const uint16_t *wr = (const uint16_t *)(w + (size_t)r * row_bytes);
        _Pragma("GCC unroll 4")
        for (int t = 0; t < T; t++) {
            float s = hsum_ps(acc[r][t]);
            for (int k = i; k < K; k++) {
                s += bn_f16_to_f32(wr[k]) * x[(size_t)t * K + k];
            }
            y[(size_t)t * M + r] = s;
        }
    }
}

/* T tokens of rows r0..r1-1 in tiles of {RT} rows (one row at a time at the end) */
static inline __attribute__((always_inline)) void
f16_tokens_avx2(const uint8_t *w, size_t row_bytes, int r0, int r1, const float *x, int K,
                 float *y, int M, const int RT, const int T)
{
    int r = r0;
    for (; r + RT <= r1; r += RT) {
        f16_tile_avx2(w + (size_t)r * row_bytes, row_bytes, x, K, y + r, M, RT, T);
    }
    for (; r < r1; r++) {
        f16_tile_avx2(w + (size_t)r * row_bytes, row_bytes, x, K, y + r, M, 1, T);
    }
}

void f16_rows_avx2(const uint8_t *w, size_t row_bytes, int r0, int r1, const float *x, int n,
                    int K, float *y, int M)
{
    if (n == 1) {
        f16_tokens_avx2(w, row_bytes, r0, r1, x, K, y, M, 8, 1);  /* decode: 8 row chains */
        return;
    }
    int t = 0;
    for (; t + 4 <= n; t += 4) {
        f16_tokens_avx2(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 2, 4);
    }
    switch (n - t) {
    case 3: f16_tokens_avx2(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 2, 3); break;
    case 2: f16_tokens_avx2(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 4, 2); break;
    case 1: f16_tokens_avx2(w, row_bytes, r0, r1, x + (size_t)t * K, K, y + (size_t)t * M, M, 8, 1); break;
    default: break;
    }
}

float dot_bf16_f32_avx2(const void *row, const float *x, int K)
{
    const uint16_t *w = (const uint16_t *)row;
    __m256 a0 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= K; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 wf = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        a0 = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + i), a0);
    }
    float acc = hsum_ps(a0);
    for (; i < K; i++) {
        acc += bn_bf16_to_f32(w[i]) * x[i];
    }
    return acc;
}

float dot_q8_0_f32_avx2(const void *row, const float *x, int K)
{
    const uint8_t *b = (const uint8_t *)row;
    __m256 a[4];
    for (int j = 0; j < 4; j++) {
        a[j] = _mm256_setzero_ps();
    }
    for (int blk = 0; blk < K / 32; blk++) {
        uint16_t dh;
        memcpy(&dh, b, 2);
        __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
        for (int j = 0; j < 4; j++) {
            __m128i q8 = _mm_loadl_epi64((const __m128i *)(b + 2 + 8 * j));
            __m256 wf = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)));
            a[j] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + blk * 32 + 8 * j), a[j]);
        }
        b += 34;
    }
    return hsum_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

static inline int32_t hsum_epi32_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The 128 six-bit codes of half-block `half` of the Q6_K block at b as four vectors of 32
 * unsigned codes (ql low nibbles | qh bit pairs), with the head's stream prefetch (the row data
 * comes from DRAM). Shared by the decode dot and the batched head's unpack. */
static inline __attribute__((always_inline)) void
q6_k_half_codes_avx2(const uint8_t *b, int half, __m256i v[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const uint8_t *ql = b + 64 * half;
    const uint8_t *qh = b + 128 + 32 * half;
    const char *ahead = (const char *)(b + 105 * half + BN_PREFETCH_HEAD_BYTES);
    _mm_prefetch(ahead, _MM_HINT_T0);
    _mm_prefetch(ahead + 64, _MM_HINT_T0);
    __m256i ql0 = _mm256_loadu_si256((const __m256i *)ql);
    __m256i ql1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i qhv = _mm256_loadu_si256((const __m256i *)qh);
    v[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                           _mm256_and_si256(_mm256_slli_epi16(qhv, 4), m30));
    v[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                           _mm256_and_si256(_mm256_slli_epi16(qhv, 2), m30));
    v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                           _mm256_and_si256(qhv, m30));
    v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(qhv, 2), m30));
}

/* Q6_K x Q8_K: three loads (ql low half, ql high half, qh) give four vectors of 32 unsigned
 * six-bit codes; maddubs (u8 x s8) pairs them with the activations into s16 (|sum| <= 16128, no
 * saturation), the precomputed 32 * pair sums remove the -32 offset, and madd with the
 * sub-block scales widens to s32. Integer sums are exact; the f32 epilogue is in block order. */
float dot_q6_k_q8_k_avx2(const void *row, const int8_t *q, const int16_t *pair32,
                         const float *dy, int K)
{
    const uint8_t *b = (const uint8_t *)row;
    float acc = 0.0f;
    for (int blk = 0; blk < K / 256; blk++) {
        const int8_t *sc = (const int8_t *)(b + 192);
        uint16_t dh;
        memcpy(&dh, b + 208, 2);
        __m256i isum = _mm256_setzero_si256();
        for (int half = 0; half < 2; half++) {
            __m256i v[4];
            q6_k_half_codes_avx2(b, half, v);
            size_t e0 = (size_t)blk * 256 + (size_t)half * 128;
            for (int k = 0; k < 4; k++) {
                __m256i qv = _mm256_loadu_si256((const __m256i *)(q + e0 + 32 * k));
                __m256i p = _mm256_maddubs_epi16(v[k], qv);
                p = _mm256_sub_epi16(
                    p, _mm256_loadu_si256((const __m256i *)(pair32 + (e0 + 32 * k) / 2)));
                /* lanes 0..7 are sub-block 2k of the half, lanes 8..15 sub-block 2k + 1 */
                __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[8 * half + 2 * k + 1]),
                                                 _mm_set1_epi16(sc[8 * half + 2 * k]));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale));
            }
        }
        acc += (float)hsum_epi32_avx2(isum) * (_cvtsh_ss(dh) * dy[blk]);
        b += 210;
    }
    return acc;
}

/* Q6_K row -> w16 [K] = sc_j * (q6 - 32), dw [K/256] = d (batched head path, once per row):
 * the AVX2 dot kernel's four code vectors, widened to s16 and scaled per sub-block of 16. */
static void q6_k_unpack_avx2(const void *row, int16_t *w16, float *dw, int K)
{
    const uint8_t *b = (const uint8_t *)row;
    const __m256i c32 = _mm256_set1_epi16(32);
    for (int blk = 0; blk < K / 256; blk++) {
        const int8_t *sc = (const int8_t *)(b + 192);
        uint16_t dh;
        memcpy(&dh, b + 208, 2);
        dw[blk] = _cvtsh_ss(dh);
        for (int half = 0; half < 2; half++) {
            __m256i v[4];
            q6_k_half_codes_avx2(b, half, v);
            int16_t *c = w16 + (size_t)blk * 256 + (size_t)half * 128;
            for (int k = 0; k < 4; k++) {
                /* 16 codes of sub-block 8 * half + 2k, then 16 of sub-block 8 * half + 2k + 1 */
                for (int h = 0; h < 2; h++) {
                    __m128i part = h ? _mm256_extracti128_si256(v[k], 1)
                                     : _mm256_castsi256_si128(v[k]);
                    __m256i wide = _mm256_sub_epi16(_mm256_cvtepu8_epi16(part), c32);
                    __m256i scale = _mm256_set1_epi16(sc[8 * half + 2 * k + h]);
                    _mm256_storeu_si256((__m256i *)(c + 32 * k + 16 * h),
                                        _mm256_mullo_epi16(wide, scale));
                }
            }
        }
        b += 210;
    }
}

/* w16 x int16 Q8_K for nt tokens: each 16-weight vector is loaded once and madd'ed (s16 x s16
 * -> s32, exact: |pair sum| < 2^21) with every token of the group; f32 epilogue in block order
 * per token, as the per-row kernels. */
static inline __attribute__((always_inline)) void
w16_group_avx2(const int16_t *w16, const float *dw, const int16_t *q16, size_t qstride,
               const float *dy, int K, float *out, const int nt)
{
    int nb = K / 256;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int blk = 0; blk < nb; blk++) {
        __m256i isum[4];
        for (int t = 0; t < nt; t++) {
            isum[t] = _mm256_setzero_si256();
        }
        for (int k = 0; k < 16; k++) {
            size_t e = (size_t)blk * 256 + 16 * (size_t)k;
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w16 + e));
            for (int t = 0; t < nt; t++) {
                __m256i qv = _mm256_loadu_si256((const __m256i *)(q16 + t * qstride + e));
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(wv, qv));
            }
        }
        for (int t = 0; t < nt; t++) {
            acc[t] += (float)hsum_epi32_avx2(isum[t]) * (dw[blk] * dy[(size_t)t * nb + blk]);
        }
    }
    for (int t = 0; t < nt; t++) {
        out[t] = acc[t];
    }
}

static void dot_q6_w16_q16_avx2(const int16_t *w16, const float *dw, int nr,
                                const int16_t *q16, size_t qstride, const float *dy, int nt,
                                int K, float *out)
{
    int nb = K / 256;
    if (nr > 1) {
        for (int r = 0; r < nr; r++) {
            dot_q6_w16_q16_avx2(w16 + (size_t)r * K, dw + (size_t)r * nb, 1, q16, qstride, dy,
                                nt, K, out + (size_t)r * nt);
        }
        return;
    }
    int t = 0;
    for (; t + 4 <= nt; t += 4) {
        w16_group_avx2(w16, dw, q16 + t * qstride, qstride, dy + (size_t)t * nb, K, out + t, 4);
    }
    for (; t < nt; t++) {
        w16_group_avx2(w16, dw, q16 + t * qstride, qstride, dy + (size_t)t * nb, K, out + t, 1);
    }
}

/* Batched Q6_K rows (bitnet_cpu.h) on the generic int16 activation layout: two rows at a time
 * unpacked to w16 (2K bytes a row, L1 resident) and dotted with every token. */
void q6_k_rows_avx2(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                    size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                    float out_scale)
{
    int nb = K / 256;
    int16_t w16[2 * K] __attribute__((aligned(32)));
    float dw[2 * nb];
    float out[2 * BN_Q6_K_TOKENS];
    for (int r0 = 0; r0 < nr; r0 += 2) {
        int rows = nr - r0 < 2 ? nr - r0 : 2;
        for (int i = 0; i < rows; i++) {
            q6_k_unpack_avx2(w + (size_t)(r0 + i) * row_bytes, w16 + (size_t)i * K,
                             dw + (size_t)i * nb, K);
        }
        dot_q6_w16_q16_avx2(w16, dw, rows, (const int16_t *)qa, qa_stride / sizeof(int16_t), dy,
                            nt, K, out);
        for (int i = 0; i < rows; i++) {
            for (int t = 0; t < nt; t++) {
                float v = out[(size_t)i * nt + t];
                y[(size_t)t * ystride + r0 + i] = out_scale != 1.0f ? v * out_scale : v;
            }
        }
    }
}

void f16_to_f32_row_avx2(const uint16_t *src, float *dst, int count)
{
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    }
    for (; i < count; i++) {
        dst[i] = bn_f16_to_f32(src[i]);
    }
}

void f32_to_f16_row_avx2(const float *src, uint16_t *dst, int count)
{
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        /* F16C rounds to nearest even with imm 0, like bn_f32_to_f16 */
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < count; i++) {
        dst[i] = bn_f32_to_f16(src[i]);
    }
}
