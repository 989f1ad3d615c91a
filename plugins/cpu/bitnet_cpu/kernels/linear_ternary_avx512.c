/* linear_ternary_avx512.c: ternary kernels for AVX-512 BW/VL + VNNI (compiled with those -m
 * flags; called only when the CPU probe reports all of them). Also holds the AVX-512 table.
 *
 * Weights are in the row-interleaved r16 layout (bitnet_cpu.h): each 32-bit lane of a zmm is one
 * of 16 rows, so vpdpbusd (u8 codes x s8 activations, four products per s32 lane) against a
 * broadcast of four activations advances 16 rows at once, block sums come out one per lane
 * (no horizontal reductions, which dominated the TQ kernels' time in a per-row layout), and the
 * codes unpacked from one 64-byte load are reused for up to 16 tokens. */
#include <immintrin.h>
#include <string.h>

#include "bitnet_cpu.h"

void ternary_tile_avx2(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                       int nt, int32_t *sums);
float dot_f32_f32_avx2(const void *row, const float *x, int K);
float dot_bf16_f32_avx2(const void *row, const float *x, int K);
float dot_q8_0_f32_avx2(const void *row, const float *x, int K);
float dot_f16_f32_avx512(const void *row, const float *x, int K);
void f16_rows_avx512(const uint8_t *w, size_t row_bytes, int r0, int r1, const float *x, int n,
                    int K, float *y, int M);
float dot_q6_k_q8_k_avx2(const void *row, const int8_t *q, const int16_t *pair32,
                         const float *dy, int K);
void q6_k_act_avx512(const int8_t *q, int K, uint8_t *qa);
void q6_k_rows_avx512(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                      size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                      float out_scale);
void f16_to_f32_row_avx2(const uint16_t *src, float *dst, int count);
void f32_to_f16_row_avx2(const float *src, uint16_t *dst, int count);

/* r16 layout (bitnet_cpu.h): one 64-byte chunk = 16 rows x 16 columns. Field k of every lane
 * pairs with the same four activations, read as one broadcast 32-bit memory operand. */
static inline __attribute__((always_inline)) void
rows16_avx512(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride, int32_t *sums,
              const int nt)
{
    /* accumulators per token: up to 4 tokens keep one per 2-bit field, so a field is just
     * masked in place (code * 4^(3-k), no shift) and its sum shifted once at the end; up to 8
     * tokens keep two, one for fields 0 and 2 (masked after one shift, code * 4) and one for
     * fields 1 and 3 (code * 1); more tokens keep one, fields shifted down. More chains hide the
     * vpdpbusd latency and fewer decode ops leave its port free: on Zen 4, 1 thread, a
     * 6912x2560 I2_S matmul of 4 tokens took 0.42 ms with two accumulators, 0.34 with four;
     * of 8 tokens 0.74 ms with one, 0.66 with two (the sums are integers: same bits). */
    const int na = nt <= 4 ? 4 : (nt <= 8 ? 2 : 1);
    const __m512i mask = _mm512_set1_epi8(3);
    int nsum = K / 128 / gps;
    for (int s = 0; s < nsum; s++) {
        __m512i acc[4][BN_TILE_MAX_TOKENS];
        for (int a = 0; a < na; a++) {
            for (int t = 0; t < nt; t++) {
                acc[a][t] = _mm512_setzero_si512();
            }
        }
        for (int g = s * gps; g < (s + 1) * gps; g++) {
            for (int j = 0; j < 8; j++) {
                const uint8_t *wc = w + ((size_t)g * 8 + j) * 64;
                _mm_prefetch((const char *)(wc + BN_PREFETCH_BYTES), _MM_HINT_T0);
                __m512i wb = _mm512_loadu_si512((const void *)wc);
                __m512i c[4];
                if (na == 2) {
                    const __m512i hi = _mm512_srli_epi16(wb, 4);
                    const __m512i x4 = _mm512_set1_epi8(12);
                    c[0] = _mm512_and_si512(hi, x4);
                    c[1] = _mm512_and_si512(hi, mask);
                    c[2] = _mm512_and_si512(wb, x4);
                    c[3] = _mm512_and_si512(wb, mask);
                }
                for (int k = 0; k < 4 && na != 2; k++) {
                    if (na == 4) {
                        c[k] = _mm512_and_si512(wb, _mm512_set1_epi8((char)(3 << (6 - 2 * k))));
                    } else {
                        c[k] = _mm512_and_si512(_mm512_srli_epi16(wb, 6 - 2 * k), mask);
                    }
                }
                for (int t = 0; t < nt; t++) {
                    const int8_t *qc = q + (size_t)t * qstride + (size_t)g * 128 + 4 * j;
                    for (int k = 0; k < 4; k++) {
                        int32_t four;
                        memcpy(&four, qc + 32 * k, 4);
                        acc[k % na][t] = _mm512_dpbusd_epi32(acc[k % na][t], c[k],
                                                             _mm512_set1_epi32(four));
                    }
                }
            }
        }
        for (int t = 0; t < nt; t++) {
            __m512i tot = acc[0][t];
            if (na == 4) {
                tot = _mm512_add_epi32(
                    _mm512_add_epi32(_mm512_srai_epi32(acc[0][t], 6),
                                     _mm512_srai_epi32(acc[1][t], 4)),
                    _mm512_add_epi32(_mm512_srai_epi32(acc[2][t], 2), acc[3][t]));
            } else if (na == 2) {
                tot = _mm512_add_epi32(_mm512_srai_epi32(acc[0][t], 2), acc[1][t]);
            }
            _mm512_storeu_si512((void *)(sums + ((size_t)s * nt + t) * 16), tot);
        }
    }
}

/* Four activations read as one 32-bit value, broadcast by vpdpbusd's own {1to16} memory
 * operand (GCC keeps _mm512_set1_epi32 of a load as a separate vpbroadcastd). */
typedef int32_t bn_i32u __attribute__((aligned(1), may_alias));

static inline __attribute__((always_inline)) __m512i
dpbusd_b(__m512i acc, __m512i c, const int8_t *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(c), "m"(*(const bn_i32u *)p));
    return acc;
}

/* One token (decode): rows16_avx512 with nt = 1, written for the bus. A one-token GEMV does
 * 4 vpdpbusd per 64 bytes of codes (latency 4, one a cycle on Zen 4) and little else, so with
 * one accumulator per field (4 chains) the chains set the pace: the 64-byte chunks alternate
 * between two sets of four accumulators (8 chains), added as exact integers before the field
 * shifts. Zen 4, L1-resident codes: 5.04 -> 4.38 cycles per 64 bytes with the broadcasts
 * folded in (the bus at ~33 GB/s allows ~7; the rest of the time is for memory to overlap).
 * No software prefetch: the matrix is one front-to-back stream, which the hardware prefetchers
 * follow best alone (Zen 4 dev VM, one thread, 256 MB of copies a pass, interleaved in one
 * process, best of 12: 6912x2560 / 2560x6912 / 2560x2560 at 30.9 / 30.7 / 30.2 GB/s without,
 * 28.8 / 28.5 / 28.9 with prefetches 4 KB ahead, 28.1 / 25.8 / 28.3 at 8 KB; plain read
 * 29-31 GB/s; 2026-12-05). */
static void rows16_gemv_avx512(const uint8_t *w, int K, int gps, const int8_t *q, int32_t *sums)
{
    const __m512i m0 = _mm512_set1_epi8((char)0xC0);
    const __m512i m1 = _mm512_set1_epi8(0x30);
    const __m512i m2 = _mm512_set1_epi8(0x0C);
    const __m512i m3 = _mm512_set1_epi8(0x03);
    int nsum = K / 128 / gps;
    for (int s = 0; s < nsum; s++) {
        __m512i acc[2][4];
        for (int a = 0; a < 2; a++) {
            for (int k = 0; k < 4; k++) {
                acc[a][k] = _mm512_setzero_si512();
            }
        }
        for (int g = s * gps; g < (s + 1) * gps; g++) {
            const uint8_t *wg = w + (size_t)g * 512;
            const int8_t *qg = q + (size_t)g * 128;
            _Pragma("GCC unroll 8")
            for (int j = 0; j < 8; j++) {
                const uint8_t *wc = wg + 64 * j;
                __m512i wb = _mm512_loadu_si512((const void *)wc);
                __m512i *a = acc[j & 1];
                const int8_t *qc = qg + 4 * j;
                a[0] = dpbusd_b(a[0], _mm512_and_si512(wb, m0), qc);
                a[1] = dpbusd_b(a[1], _mm512_and_si512(wb, m1), qc + 32);
                a[2] = dpbusd_b(a[2], _mm512_and_si512(wb, m2), qc + 64);
                a[3] = dpbusd_b(a[3], _mm512_and_si512(wb, m3), qc + 96);
            }
        }
        __m512i f0 = _mm512_add_epi32(acc[0][0], acc[1][0]);
        __m512i f1 = _mm512_add_epi32(acc[0][1], acc[1][1]);
        __m512i f2 = _mm512_add_epi32(acc[0][2], acc[1][2]);
        __m512i f3 = _mm512_add_epi32(acc[0][3], acc[1][3]);
        __m512i tot = _mm512_add_epi32(
            _mm512_add_epi32(_mm512_srai_epi32(f0, 6), _mm512_srai_epi32(f1, 4)),
            _mm512_add_epi32(_mm512_srai_epi32(f2, 2), f3));
        _mm512_storeu_si512((void *)(sums + (size_t)s * 16), tot);
    }
}

void ternary_rows16_avx512(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                           int nt, int32_t *sums)
{
    switch (nt) {
    case 1: rows16_gemv_avx512(w, K, gps, q, sums); break;
    case 2: rows16_avx512(w, K, gps, q, qstride, sums, 2); break;
    case 3: rows16_avx512(w, K, gps, q, qstride, sums, 3); break;
    case 4: rows16_avx512(w, K, gps, q, qstride, sums, 4); break;
    case 5: rows16_avx512(w, K, gps, q, qstride, sums, 5); break;
    case 6: rows16_avx512(w, K, gps, q, qstride, sums, 6); break;
    case 7: rows16_avx512(w, K, gps, q, qstride, sums, 7); break;
    case 8: rows16_avx512(w, K, gps, q, qstride, sums, 8); break;
    case 9: rows16_avx512(w, K, gps, q, qstride, sums, 9); break;
    case 10: rows16_avx512(w, K, gps, q, qstride, sums, 10); break;
    case 11: rows16_avx512(w, K, gps, q, qstride, sums, 11); break;
    case 12: rows16_avx512(w, K, gps, q, qstride, sums, 12); break;
    case 13: rows16_avx512(w, K, gps, q, qstride, sums, 13); break;
    case 14: rows16_avx512(w, K, gps, q, qstride, sums, 14); break;
    case 15: rows16_avx512(w, K, gps, q, qstride, sums, 15); break;
    default: rows16_avx512(w, K, gps, q, qstride, sums, 16); break;
    }
}

const bn_kernels bn_kernels_avx512 = {
    .name = "avx512",
    .tile_tokens = 16,  /* 16 accumulators + 4 code vectors fit the 32 zmm registers */
    .ternary_tile = ternary_tile_avx2,  /* unused here (row_group = 16); valid all the same */
    .row_group = 16,
    .ternary_rows16 = ternary_rows16_avx512,
    .dot_f32 = dot_f32_f32_avx2,
    .dot_f16 = dot_f16_f32_avx512,
    .f16_rows = f16_rows_avx512,
    .dot_bf16 = dot_bf16_f32_avx2,
    .dot_q8_0 = dot_q8_0_f32_avx2,
    .dot_q6_k_q8_k = NULL,  /* decode runs q6_k_rows (one token: 24 vs 31 cycles a block) */
    .q6_k_act_block = BN_Q6_K_ACT_BLOCK_AVX512,
    .q6_k_act = q6_k_act_avx512,
    .q6_k_rows = q6_k_rows_avx512,
    .q6_k_grouped = 1,
    .f16_to_f32_row = f16_to_f32_row_avx2,
    .f32_to_f16_row = f32_to_f16_row_avx2,
};
