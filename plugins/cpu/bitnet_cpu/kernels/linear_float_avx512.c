/* linear_float_avx512.c: the F16 row dot product with 16-wide f32 (AVX-512F/BW/VL) and the
 * Q6_K head kernels with VNNI (per-row decode dot; batched unpack + s16 dot); the other float
 * formats use the AVX2 kernels (linear_float_avx2.c). */
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

/* Q6_K x Q8_K with VNNI. One half-block (128 codes) is two zmm: ql's 64 bytes hold the low
 * nibbles of codes 0..63 (bits 0-3) and 64..127 (bits 4-7); qh's 32 bytes, broadcast to both
 * 256-bit halves, give the top two bits with a per-half shift (vpsllvw / vpsrlvw), so each zmm
 * is 64 consecutive codes and pairs with 64 consecutive activations in one vpdpbusd (u8 codes
 * x s8 activations -> s32, four products per lane: a lane never mixes sub-blocks of 16). The
 * -32 code offset is a second vpdpbusd of 32 x activations, subtracted lane by lane; each lane
 * is then multiplied by its sub-block scale (the 16 scales widened to s32 once per block and
 * spread with vpermd). Integer block sums are exact, so the block total equals the AVX2 and
 * reference kernels' and the f32 epilogue runs in the same block order: bit-identical output.
 * About half the instructions of the AVX2 kernel per block, which matters because the head
 * streamed at ~14 GB/s on one thread, below the ~24 GB/s a plain read reaches here. */
float dot_q6_k_q8_k_avx512(const void *row, const int8_t *q, const int16_t *pair32,
                           const float *dy, int K)
{
    (void)pair32;  /* the offset comes from the 32 x activations vpdpbusd instead */
    const uint8_t *b = (const uint8_t *)row;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i c32 = _mm512_set1_epi8(32);
    /* codes 0..31 take qh bits 0-1 (<< 4), codes 32..63 bits 2-3 (<< 2); codes 64..95 bits 4-5
     * (as is), codes 96..127 bits 6-7 (>> 2) */
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    /* lane i of a 64-code vector belongs to sub-block i / 4 of its four */
    const __m512i sub = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    float acc = 0.0f;
    for (int blk = 0; blk < K / 256; blk++) {
        uint16_t dh;
        memcpy(&dh, b + 208, 2);
        __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 192)));
        __m512i isum = _mm512_setzero_si512();
        _mm_prefetch((const char *)(b + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 64 + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 128 + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 192 + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        for (int half = 0; half < 2; half++) {
            __m512i ql = _mm512_loadu_si512((const void *)(b + 64 * half));
            __m512i qh = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * half)));
            __m512i v0 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                         _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30));
            __m512i v1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                         _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30));
            const int8_t *qa = q + (size_t)blk * 256 + (size_t)half * 128;
            __m512i q0 = _mm512_loadu_si512((const void *)qa);
            __m512i q1 = _mm512_loadu_si512((const void *)(qa + 64));
            __m512i d0 = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), v0, q0),
                                          _mm512_dpbusd_epi32(_mm512_setzero_si512(), c32, q0));
            __m512i d1 = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), v1, q1),
                                          _mm512_dpbusd_epi32(_mm512_setzero_si512(), c32, q1));
            __m512i first = _mm512_set1_epi32(8 * half);
            __m512i s0 = _mm512_permutexvar_epi32(_mm512_add_epi32(sub, first), sc);
            __m512i s1 = _mm512_permutexvar_epi32(
                _mm512_add_epi32(sub, _mm512_add_epi32(first, _mm512_set1_epi32(4))), sc);
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(d0, s0));
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(d1, s1));
        }
        acc += (float)_mm512_reduce_add_epi32(isum) * (_cvtsh_ss(dh) * dy[blk]);
        b += 210;
    }
    return acc;
}

/* Q6_K row -> w16 [K] = sc_j * (q6 - 32), dw [K/256] = d (batched head path, once per row):
 * the two 64-code zmm per half-block of dot_q6_k_q8_k_avx512, widened to s16 and scaled. */
void q6_k_unpack_avx512(const void *row, int16_t *w16, float *dw, int K)
{
    const uint8_t *b = (const uint8_t *)row;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i c32 = _mm512_set1_epi16(32);
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    for (int blk = 0; blk < K / 256; blk++) {
        uint16_t dh;
        memcpy(&dh, b + 208, 2);
        dw[blk] = _cvtsh_ss(dh);
        /* the 16 sub-block scales as s16 in both 256-bit halves; vector k of the block takes
         * scale 2k in its low 16 lanes and 2k + 1 in its high 16 (one vpermw each) */
        __m512i sc16 = _mm512_broadcast_i64x4(
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192))));
        /* the same stream prefetch as the n == 1 kernel: the row data comes from DRAM */
        _mm_prefetch((const char *)(b + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 64 + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 128 + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 192 + BN_PREFETCH_HEAD_BYTES), _MM_HINT_T0);
        for (int half = 0; half < 2; half++) {
            __m512i ql = _mm512_loadu_si512((const void *)(b + 64 * half));
            __m512i qh = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * half)));
            __m512i v[2];
            v[0] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                   _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30));
            v[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                   _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30));
            int16_t *c = w16 + (size_t)blk * 256 + (size_t)half * 128;
            for (int k = 0; k < 4; k++) {
                /* 32 codes: sub-blocks 8 * half + 2k (low 16) and 8 * half + 2k + 1 */
                __m256i part = k & 1 ? _mm512_extracti64x4_epi64(v[k >> 1], 1)
                                     : _mm512_castsi512_si256(v[k >> 1]);
                __m512i wide = _mm512_sub_epi16(_mm512_cvtepu8_epi16(part), c32);
                __m512i idx = _mm512_inserti64x4(
                    _mm512_set1_epi16((short)(8 * half + 2 * k)),
                    _mm256_set1_epi16((short)(8 * half + 2 * k + 1)), 1);
                __m512i scale = _mm512_permutexvar_epi16(idx, sc16);
                _mm512_storeu_si512((void *)(c + 32 * k), _mm512_mullo_epi16(wide, scale));
            }
        }
        b += 210;
    }
}

/* Token t's block sum of isum[t] (t < 4; missing tokens are zero vectors) in lane t of an xmm:
 * one transpose-add tree for four horizontal sums. */
static inline __attribute__((always_inline)) __m128i hsum4_epi32_avx512(const __m512i *isum)
{
    __m512i x0 = _mm512_add_epi32(_mm512_unpacklo_epi32(isum[0], isum[1]),
                                  _mm512_unpackhi_epi32(isum[0], isum[1]));
    __m512i x1 = _mm512_add_epi32(_mm512_unpacklo_epi32(isum[2], isum[3]),
                                  _mm512_unpackhi_epi32(isum[2], isum[3]));
    __m512i x = _mm512_add_epi32(_mm512_unpacklo_epi64(x0, x1), _mm512_unpackhi_epi64(x0, x1));
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* nr (1 or 2) unpacked rows x nt <= 4 tokens with VNNI vpdpwssd (s16 pairs -> s32, exact): each
 * activation load serves both rows and each weight load every token (the activations of a
 * batch do not fit L1, so their loads are what this loop is bound by). The f32 epilogue per
 * lane is the scalar kernels' (no FMA), in block order. */
static inline __attribute__((always_inline)) void
w16_group_avx512(const int16_t *w16, const float *dw, const int16_t *q16, size_t qstride,
                 const float *dy, int K, float *out, int ostride, const int nr, const int nt)
{
    int nb = K / 256;
    __m128 acc4[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int blk = 0; blk < nb; blk++) {
        __m512i isum[2][4];
        for (int r = 0; r < 2; r++) {
            for (int t = 0; t < 4; t++) {
                isum[r][t] = _mm512_setzero_si512();
            }
        }
        for (int k = 0; k < 8; k++) {
            size_t e = (size_t)blk * 256 + 32 * (size_t)k;
            __m512i wv0 = _mm512_loadu_si512((const void *)(w16 + e));
            __m512i wv1 = nr > 1 ? _mm512_loadu_si512((const void *)(w16 + K + e)) : wv0;
            for (int t = 0; t < nt; t++) {
                __m512i qv = _mm512_loadu_si512((const void *)(q16 + t * qstride + e));
                isum[0][t] = _mm512_dpwssd_epi32(isum[0][t], wv0, qv);
                if (nr > 1) {
                    isum[1][t] = _mm512_dpwssd_epi32(isum[1][t], wv1, qv);
                }
            }
        }
        float dyt[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int t = 0; t < nt; t++) {
            dyt[t] = dy[(size_t)t * nb + blk];
        }
        __m128 dyv = _mm_loadu_ps(dyt);
        for (int r = 0; r < nr; r++) {
            __m128i s4 = hsum4_epi32_avx512(isum[r]);
            __m128 scale = _mm_mul_ps(_mm_set1_ps(dw[(size_t)r * nb + blk]), dyv);
            acc4[r] = _mm_add_ps(acc4[r], _mm_mul_ps(_mm_cvtepi32_ps(s4), scale));
        }
    }
    for (int r = 0; r < nr; r++) {
        float res[4];
        _mm_storeu_ps(res, acc4[r]);
        for (int t = 0; t < nt; t++) {
            out[(size_t)r * ostride + t] = res[t];
        }
    }
}

static void w16_rows_avx512(const int16_t *w16, const float *dw, const int16_t *q16,
                            size_t qstride, const float *dy, int nt, int K, float *out,
                            const int nr)
{
    int nb = K / 256;
    int t = 0;
    for (; t + 4 <= nt; t += 4) {
        w16_group_avx512(w16, dw, q16 + t * qstride, qstride, dy + (size_t)t * nb, K, out + t,
                         nt, nr, 4);
    }
    const int16_t *qr = q16 + t * qstride;
    const float *dr = dy + (size_t)t * nb;
    switch (nt - t) {
    case 3: w16_group_avx512(w16, dw, qr, qstride, dr, K, out + t, nt, nr, 3); break;
    case 2: w16_group_avx512(w16, dw, qr, qstride, dr, K, out + t, nt, nr, 2); break;
    case 1: w16_group_avx512(w16, dw, qr, qstride, dr, K, out + t, nt, nr, 1); break;
    default: break;
    }
}

void dot_q6_w16_q16_avx512(const int16_t *w16, const float *dw, int nr, const int16_t *q16,
                           size_t qstride, const float *dy, int nt, int K, float *out)
{
    if (nr > 1) {
        w16_rows_avx512(w16, dw, q16, qstride, dy, nt, K, out, 2);
    } else {
        w16_rows_avx512(w16, dw, q16, qstride, dy, nt, K, out, 1);
    }
}
