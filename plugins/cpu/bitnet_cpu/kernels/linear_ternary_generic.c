/* linear_ternary_generic.c: the portable ternary tile and the generic kernel table.
 * Scalar C, the ground truth every SIMD file is tested against. */
#include "bitnet_cpu.h"

void ternary_tile_generic(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                          int nt, int32_t *sums)
{
    int groups = K / 128;
    int nsum = groups / gps;
    for (int t = 0; t < nt; t++) {
        const int8_t *qt = q + (size_t)t * qstride;
        for (int s = 0; s < nsum; s++) {
            int32_t acc = 0;
            for (int g = s * gps; g < (s + 1) * gps; g++) {
                const uint8_t *wg = w + (size_t)g * 32;
                const int8_t *qg = qt + (size_t)g * 128;
                for (int b = 0; b < 32; b++) {
                    int byte = wg[b];
                    acc += ((byte >> 6) & 3) * qg[b];
                    acc += ((byte >> 4) & 3) * qg[b + 32];
                    acc += ((byte >> 2) & 3) * qg[b + 64];
                    acc += (byte & 3) * qg[b + 96];
                }
            }
            sums[s * nt + t] = acc;
        }
    }
}

const bn_kernels bn_kernels_generic = {
    .name = "generic",
    .tile_tokens = 4,
    .ternary_tile = ternary_tile_generic,
    .dot_f32 = dot_f32_f32_generic,
    .dot_f16 = dot_f16_f32_generic,
    .dot_bf16 = dot_bf16_f32_generic,
    .dot_q8_0 = dot_q8_0_f32_generic,
    .dot_q6_k_q8_k = dot_q6_k_q8_k_generic,
    .q6_k_act_block = BN_Q6_K_ACT_BLOCK_I16,
    .q6_k_act = q6_k_act_i16_generic,
    .q6_k_rows = q6_k_rows_generic,
    .f16_to_f32_row = f16_to_f32_row_generic,
    .f32_to_f16_row = f32_to_f16_row_generic,
};
