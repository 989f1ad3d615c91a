/* linear_ternary_avx2.c: ternary tile for AVX2 (compiled with -mavx2 -mfma -mf16c; called only
 * when the CPU probe reports them). Also holds the AVX2 kernel table.
 *
 * One 32-byte load is one 128-element group: shift+mask gives four vectors of 32 codes (0..2),
 * each paired with 32 consecutive int8 activations by maddubs (u8 x s8 -> s16 pairs). The four
 * s16 partials of a group are at most 4 * 512 in magnitude (no overflow), then madd widens them
 * to s32. The codes are unpacked once per group and reused for every token of the tile. */
#include <immintrin.h>

#include "bitnet_cpu.h"

float dot_f16_f32_avx2(const void *row, const float *x, int K);
void f16_rows_avx2(const uint8_t *w, size_t row_bytes, int r0, int r1, const float *x, int n,
                    int K, float *y, int M);
float dot_f32_f32_avx2(const void *row, const float *x, int K);
float dot_bf16_f32_avx2(const void *row, const float *x, int K);
float dot_q8_0_f32_avx2(const void *row, const float *x, int K);
float dot_q6_k_q8_k_avx2(const void *row, const int8_t *q, const int16_t *pair32,
                         const float *dy, int K);
void q6_k_rows_avx2(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                    size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                    float out_scale);
void f16_to_f32_row_avx2(const uint16_t *src, float *dst, int count);
void f32_to_f16_row_avx2(const float *src, uint16_t *dst, int count);

/* Eight horizontal sums at once (see linear_ternary_avx512.c): out[i] = sum of v[i]. */
static inline void hsum8_epi32(const __m256i *v, int32_t *out)
{
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]);
    __m256i h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]);
    __m256i h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i h0123 = _mm256_hadd_epi32(h01, h23);
    __m256i h4567 = _mm256_hadd_epi32(h45, h67);
    __m256i lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
    __m256i hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
    _mm256_storeu_si256((__m256i *)out, _mm256_add_epi32(lo, hi));
}

static inline int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* GEMV over 256-block sums (TQ formats, one token): eight blocks are accumulated, then reduced
 * together by hsum8_epi32 instead of one horizontal reduction per block. */
static void tile_blocks_1tok(const uint8_t *w, int K, const int8_t *q, int32_t *sums)
{
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    int nsum = K / 256;
    for (int s0 = 0; s0 < nsum; s0 += 8) {
        int nb = nsum - s0 < 8 ? nsum - s0 : 8;
        __m256i tot[8];
        for (int j = 0; j < 8; j++) {
            tot[j] = _mm256_setzero_si256();
        }
        for (int j = 0; j < nb; j++) {
            size_t g0 = (size_t)(s0 + j) * 2;
            _mm_prefetch((const char *)(w + g0 * 32 + BN_PREFETCH_BYTES), _MM_HINT_T0);
            __m256i acc = _mm256_setzero_si256();
            for (size_t g = g0; g < g0 + 2; g++) {
                __m256i wb = _mm256_loadu_si256((const __m256i *)(w + g * 32));
                const int8_t *qg = q + g * 128;
                __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(wb, 6), mask),
                                                  _mm256_loadu_si256((const __m256i *)qg));
                __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(wb, 4), mask),
                                                  _mm256_loadu_si256((const __m256i *)(qg + 32)));
                __m256i p2 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(wb, 2), mask),
                                                  _mm256_loadu_si256((const __m256i *)(qg + 64)));
                __m256i p3 = _mm256_maddubs_epi16(_mm256_and_si256(wb, mask),
                                                  _mm256_loadu_si256((const __m256i *)(qg + 96)));
                __m256i p = _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
            }
            tot[j] = acc;
        }
        int32_t out[8];
        hsum8_epi32(tot, out);
        for (int j = 0; j < nb; j++) {
            sums[s0 + j] = out[j];
        }
    }
}

/* Sums of a few 128-column groups kept in 16-bit lanes before widening: a maddubs lane is two
 * products code (0..2) x activation (-128..127), in [-512, 508]; four of them per group sum to
 * [-2048, 2032], so 16 groups fit an int16 exactly ([-32768, 32512]). One vpmaddwd per 16
 * groups instead of one per group frees the multiply port that the maddubs need. */
#define TILE_GROUPS_I16 16

static inline __attribute__((always_inline)) void
tile_avx2(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride, int32_t *sums,
          const int nt)
{
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    int nsum = K / 128 / gps;
    for (int s = 0; s < nsum; s++) {
        __m256i acc[BN_TILE_MAX_TOKENS];
        for (int t = 0; t < nt; t++) {
            acc[t] = _mm256_setzero_si256();
        }
        for (int g0 = s * gps; g0 < (s + 1) * gps; g0 += TILE_GROUPS_I16) {
            int g1 = g0 + TILE_GROUPS_I16 < (s + 1) * gps ? g0 + TILE_GROUPS_I16 : (s + 1) * gps;
            __m256i acc16[BN_TILE_MAX_TOKENS];
            for (int t = 0; t < nt; t++) {
                acc16[t] = _mm256_setzero_si256();
            }
            for (int g = g0; g < g1; g++) {
                if ((g & 1) == 0) {  /* one prefetch per 64-byte line */
                    _mm_prefetch((const char *)(w + (size_t)g * 32 + BN_PREFETCH_BYTES),
                                 _MM_HINT_T0);
                }
                __m256i wb = _mm256_loadu_si256((const __m256i *)(w + (size_t)g * 32));
                __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(wb, 6), mask);
                __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(wb, 4), mask);
                __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(wb, 2), mask);
                __m256i c3 = _mm256_and_si256(wb, mask);
                for (int t = 0; t < nt; t++) {
                    const int8_t *qg = q + (size_t)t * qstride + (size_t)g * 128;
                    __m256i p0 = _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)qg));
                    __m256i p1 = _mm256_maddubs_epi16(
                        c1, _mm256_loadu_si256((const __m256i *)(qg + 32)));
                    __m256i p2 = _mm256_maddubs_epi16(
                        c2, _mm256_loadu_si256((const __m256i *)(qg + 64)));
                    __m256i p3 = _mm256_maddubs_epi16(
                        c3, _mm256_loadu_si256((const __m256i *)(qg + 96)));
                    acc16[t] = _mm256_add_epi16(
                        acc16[t], _mm256_add_epi16(_mm256_add_epi16(p0, p1),
                                                   _mm256_add_epi16(p2, p3)));
                }
            }
            for (int t = 0; t < nt; t++) {
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(acc16[t], ones));
            }
        }
        for (int t = 0; t < nt; t++) {
            sums[s * nt + t] = hsum_epi32(acc[t]);
        }
    }
}

void ternary_tile_avx2(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                       int nt, int32_t *sums)
{
    /* one specialised body per token count: the accumulators stay in registers */
    if (nt == 1 && gps == 2) {
        tile_blocks_1tok(w, K, q, sums);
        return;
    }
    switch (nt) {
    case 1: tile_avx2(w, K, gps, q, qstride, sums, 1); break;
    case 2: tile_avx2(w, K, gps, q, qstride, sums, 2); break;
    case 3: tile_avx2(w, K, gps, q, qstride, sums, 3); break;
    case 4: tile_avx2(w, K, gps, q, qstride, sums, 4); break;
    case 5: tile_avx2(w, K, gps, q, qstride, sums, 5); break;
    case 6: tile_avx2(w, K, gps, q, qstride, sums, 6); break;
    case 7: tile_avx2(w, K, gps, q, qstride, sums, 7); break;
    default: tile_avx2(w, K, gps, q, qstride, sums, 8); break;
    }
}

const bn_kernels bn_kernels_avx2 = {
    .name = "avx2",
    .tile_tokens = 6,  /* 6 accumulators + 4 code vectors + constants fit the 16 ymm registers */
    .ternary_tile = ternary_tile_avx2,
    .dot_f32 = dot_f32_f32_avx2,
    .dot_f16 = dot_f16_f32_avx2,
    .f16_rows = f16_rows_avx2,
    .dot_bf16 = dot_bf16_f32_avx2,
    .dot_q8_0 = dot_q8_0_f32_avx2,
    .dot_q6_k_q8_k = dot_q6_k_q8_k_avx2,
    .q6_k_act_block = BN_Q6_K_ACT_BLOCK_I16,
    .q6_k_act = q6_k_act_i16_generic,
    .q6_k_rows = q6_k_rows_avx2,
    .f16_to_f32_row = f16_to_f32_row_avx2,
    .f32_to_f16_row = f32_to_f16_row_avx2,
};
