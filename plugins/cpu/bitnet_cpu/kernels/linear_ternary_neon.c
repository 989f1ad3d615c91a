/* linear_ternary_neon.c: ternary tile for AArch64 NEON with the dot-product extension (compiled
 * with -march=armv8.2-a+dotprod; chosen only when the CPU reports asimddp). Also holds the NEON
 * kernel table (float rows: F16 here, the rest from the generic file).
 *
 * A 128-element group is two 16-byte loads; shift+mask gives codes 0..2 for 16 elements of each
 * of the four 32-element parts, and sdot (s8 x s8, four products per s32 lane) accumulates them
 * against 16 contiguous activations. */
#include <arm_neon.h>

#include "bitnet_cpu.h"

static inline __attribute__((always_inline)) void
tile_neon(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride, int32_t *sums,
          const int nt)
{
    const uint8x16_t mask = vdupq_n_u8(3);
    int nsum = K / 128 / gps;
    for (int s = 0; s < nsum; s++) {
        int32x4_t acc[2][BN_TILE_MAX_TOKENS];
        for (int t = 0; t < nt; t++) {
            acc[0][t] = vdupq_n_s32(0);
            acc[1][t] = vdupq_n_s32(0);
        }
        for (int g = s * gps; g < (s + 1) * gps; g++) {
            for (int hh = 0; hh < 2; hh++) {
                uint8x16_t wb = vld1q_u8(w + (size_t)g * 32 + 16 * hh);
                int8x16_t c[4];
                c[0] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(wb, 6), mask));
                c[1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(wb, 4), mask));
                c[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(wb, 2), mask));
                c[3] = vreinterpretq_s8_u8(vandq_u8(wb, mask));
                for (int t = 0; t < nt; t++) {
                    const int8_t *qg = q + (size_t)t * qstride + (size_t)g * 128 + 16 * hh;
                    for (int k = 0; k < 4; k++) {
                        acc[k & 1][t] = vdotq_s32(acc[k & 1][t], c[k], vld1q_s8(qg + 32 * k));
                    }
                }
            }
        }
        for (int t = 0; t < nt; t++) {
            sums[s * nt + t] = vaddvq_s32(vaddq_s32(acc[0][t], acc[1][t]));
        }
    }
}

void ternary_tile_neon(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                       int nt, int32_t *sums)
{
    switch (nt) {
    case 1: tile_neon(w, K, gps, q, qstride, sums, 1); break;
    case 2: tile_neon(w, K, gps, q, qstride, sums, 2); break;
    case 3: tile_neon(w, K, gps, q, qstride, sums, 3); break;
    case 4: tile_neon(w, K, gps, q, qstride, sums, 4); break;
    case 5: tile_neon(w, K, gps, q, qstride, sums, 5); break;
    case 6: tile_neon(w, K, gps, q, qstride, sums, 6); break;
    case 7: tile_neon(w, K, gps, q, qstride, sums, 7); break;
    default: tile_neon(w, K, gps, q, qstride, sums, 8); break;
    }
}

float dot_f16_f32_neon(const void *row, const float *x, int K)
{
    const float16_t *w = (const float16_t *)row;
    float32x4_t a0 = vdupq_n_f32(0.0f);
    float32x4_t a1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= K; i += 8) {
        float16x8_t h = vld1q_f16(w + i);
        a0 = vfmaq_f32(a0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vcvt_high_f32_f16(h), vld1q_f32(x + i + 4));
    }
    float acc = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < K; i++) {
        acc += bn_f16_to_f32(((const uint16_t *)row)[i]) * x[i];
    }
    return acc;
}

void f16_to_f32_row_neon(const uint16_t *src, float *dst, int count)
{
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        vst1q_f32(dst + i, vcvt_f32_f16(vld1_f16((const float16_t *)(src + i))));
    }
    for (; i < count; i++) {
        dst[i] = bn_f16_to_f32(src[i]);
    }
}

const bn_kernels bn_kernels_neon = {
    .name = "neon",
    .tile_tokens = 4,
    .ternary_tile = ternary_tile_neon,
    .dot_f32 = dot_f32_f32_generic,
    .dot_f16 = dot_f16_f32_neon,
    .dot_bf16 = dot_bf16_f32_generic,
    .dot_q8_0 = dot_q8_0_f32_generic,
    .dot_q6_k_q8_k = dot_q6_k_q8_k_generic,
    .q6_k_act_block = BN_Q6_K_ACT_BLOCK_I16,
    .q6_k_act = q6_k_act_i16_generic,
    .q6_k_rows = q6_k_rows_generic,
    .f16_to_f32_row = f16_to_f32_row_neon,
    .f32_to_f16_row = f32_to_f16_row_generic,
};
