// Shared by the matmul shaders: a work-group is ROWS output rows x WG_SIZE lanes (local size
// (WG_SIZE, ROWS), both specialization constants the host picks from the subgroup size and the
// shared-memory limit) for a tile of TILE_N tokens. Dispatch (ceil(M / ROWS), ceil(n / TILE_N));
// group counts beyond the device limit in x fold into z.
layout(local_size_x_id = 0, local_size_y_id = 2) in;
layout(constant_id = 2) const uint ROWS = 1;

#define TILE_N 8

uint matmul_row() {
    const uint group = gl_WorkGroupID.x + gl_WorkGroupID.z * gl_NumWorkGroups.x;
    return group * ROWS + gl_LocalInvocationID.y;
}

// The ternary values {-1, 0, 1} of group g (0..3) of a code word (I2_S interleave) as 4 packed
// signed bytes: element i of the 4 consecutive elements sits in byte i at bit shift 6 - 2g.
// Per byte c in {0, 1, 2}: (c + 0x7F) ^ 0x80 = c - 1 as a byte, with no carry between bytes.
uint ternary_packed(uint word, int g) {
    const uint c = (word >> uint(6 - 2 * g)) & 0x03030303u;
    return (c + 0x7F7F7F7Fu) ^ 0x80808080u;
}

// Signed dot product of two words of 4 packed int8. The *_idot builds (build_shaders.py) swap
// this body for OpSDot (VK_KHR_shader_integer_dot_product, 4x8-bit packed); GLSL cannot spell it
// with Debian's glslc. Keep the name and signature: the patch finds the function by them.
int dot4_packed(uint a, uint b) {
    return sbyte(a, 0) * sbyte(b, 0) + sbyte(a, 1) * sbyte(b, 1) + sbyte(a, 2) * sbyte(b, 2)
        + sbyte(a, 3) * sbyte(b, 3);
}

// acc[tt] += the dots of an I2_S row (code words CODES[row_base ..]) with tokens t0 + tt of the
// packed int8 activations Q (a buffer or a shared array, rows K / 4 words apart), over this
// lane's code words. Word u of a row holds, per shift 6-2g, 4 consecutive elements
// 128*(u/8) + 32*g + 4*(u%8) + 0..3.
#define I2S_ROW_DOTS(CODES, row_base, Q, K, t0, n, acc, lane)                              \
    for (uint u = (lane); u < (K) / 16u; u += WG_SIZE) {                                   \
        const uint word = CODES[(row_base) + u];                                           \
        const uint base = (u / 8u) * 128u + (u % 8u) * 4u;                                 \
        for (int g = 0; g < 4; g++) {                                                      \
            const uint w4 = ternary_packed(word, g);                                       \
            for (uint tt = 0u; tt < TILE_N; tt++) {                                        \
                if ((t0) + tt < (n)) {                                                     \
                    acc[tt] += dot4_packed(w4, Q[(((t0) + tt) * (K) + base + 32u * uint(g)) / 4u]); \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

// A TQ row's exact 256-block sums with tokens t0 + tt: this lane's whole blocks into
// SUMS[mine + tt * nb + b] (shared).
#define TQ_ROW_SUMS(CODES, row_base, Q, K, t0, n, SUMS, mine, nb, lane)                    \
    for (uint b = (lane); b < (nb); b += WG_SIZE) {                                        \
        int acc_[TILE_N];                                                                  \
        for (int tt = 0; tt < TILE_N; tt++) {                                              \
            acc_[tt] = 0;                                                                  \
        }                                                                                  \
        for (uint u = b * 16u; u < b * 16u + 16u; u++) {                                   \
            const uint word = CODES[(row_base) + u];                                       \
            const uint base = (u / 8u) * 128u + (u % 8u) * 4u;                             \
            for (int g = 0; g < 4; g++) {                                                  \
                const uint w4 = ternary_packed(word, g);                                   \
                for (uint tt = 0u; tt < TILE_N; tt++) {                                    \
                    if ((t0) + tt < (n)) {                                                 \
                        acc_[tt] += dot4_packed(w4, Q[(((t0) + tt) * (K) + base + 32u * uint(g)) / 4u]); \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (uint tt = 0u; tt < TILE_N; tt++) {                                            \
            SUMS[(mine) + tt * (nb) + b] = acc_[tt];                                       \
        }                                                                                  \
    }

// The lanes' acc[TILE_N] of one row meet in RED[mine + tt * WG_SIZE] (shared int, TILE_N *
// WG_SIZE entries from mine): token tt's exact sum ends in RED[mine + tt * WG_SIZE].
#define REDUCE_TILE_LANES(RED, mine, acc, lane)                                           \
    for (uint tt = 0u; tt < TILE_N; tt++) {                                                \
        RED[(mine) + tt * WG_SIZE + (lane)] = acc[tt];                                     \
    }                                                                                      \
    barrier();                                                                             \
    for (uint stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {                         \
        if ((lane) < stride) {                                                             \
            for (uint tt = 0u; tt < TILE_N; tt++) {                                        \
                RED[(mine) + tt * WG_SIZE + (lane)] += RED[(mine) + tt * WG_SIZE + (lane) + stride]; \
            }                                                                              \
        }                                                                                  \
        barrier();                                                                         \
    }

// The I2_S epilogue: float32(float32(dot) / s) * wscale [* out_scale].
float i2s_output(int dot, float act_scale, float wscale, float out_scale) {
    precise float v = div_rn(float(dot), act_scale) * wscale;
    if (out_scale != 1.0) {
        v = v * out_scale;
    }
    return v;
}

// result (a float the caller declared) = sum_b float(SUMS[sums + b]) * (DW[dw + b] * DY[dy + b])
// over nb blocks in block order, then times out_scale unless that is 1 (llama.cpp's order).
#define BLOCK_SUMS_TO_Y(result, SUMS, sums, DW, dw, DY, dy, nb, out_scale)                 \
    {                                                                                      \
        precise float sum_ = 0.0;                                                          \
        for (uint b = 0u; b < (nb); b++) {                                                 \
            precise float d_ = DW[(dw) + b] * DY[(dy) + b];                                \
            sum_ += float(SUMS[(sums) + b]) * d_;                                          \
        }                                                                                  \
        if ((out_scale) != 1.0) {                                                          \
            sum_ = sum_ * (out_scale);                                                     \
        }                                                                                  \
        result = sum_;                                                                     \
    }
