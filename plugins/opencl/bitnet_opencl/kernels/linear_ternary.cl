// Ternary matmuls y [n, M] = W [M, K] x [n, K] on pre-quantized int8 activations.
//
// Weights on the device (bitnet_opencl.weights): codes uint8 [M, K/4] in the I2_S interleave:
// each 128-element block is 32 bytes, byte b holds elements b, b+32, b+64, b+96 of the block at
// bit shifts 6, 4, 2, 0 (TQ2_0 and TQ1_0 are repacked into it at load). Reading 4 bytes at once
// (a uint) gives, per shift, the codes of 4 consecutive elements: one packed 4 x int8 dot.
//
// A work-group is ROWS output rows x LANES lanes (local size (LANES, ROWS), both chosen by the
// host from the device's SIMD width), for a tile of TILE_N tokens: global size
// (LANES, M rounded up to ROWS, ceil(n / TILE_N)). Weights are decoded once per tile.

#ifndef TILE_N
#define TILE_N 8
#endif

// The 4 ternary values {-1, 0, 1} of group g (0..3) of a code word, as signed bytes.
inline char4 ternary4(uint word, int g) {
    uint codes = (word >> (6 - 2 * g)) & 0x03030303u;
    return as_char4(as_uchar4(codes) - (uchar4)(1));
}

// acc[tt] += dot of one code word with token t0+tt's activations at element `base`.
#define ACCUMULATE_WORD(word, base, q, K, t0, n, acc)                                   \
    for (int g = 0; g < 4; g++) {                                                         \
        const char4 w4 = ternary4((word), g);                                             \
        for (int tt = 0; tt < TILE_N; tt++) {                                             \
            if ((t0) + tt < (n)) {                                                        \
                char4 q4 = vload4(0, (q) + (size_t)((t0) + tt) * (K) + (base) + 32 * g);  \
                (acc)[tt] += DOT4(w4, q4);                                                \
            }                                                                             \
        }                                                                                 \
    }

// I2_S with per-token int8 activations: y = float32(float32(dot) / s_t) * wscale [* out_scale].
// Lanes stride over the row's code words; the exact int sums meet in local memory.
__kernel void linear_i2s(__global const uint* codes, __global const char* q,
                         __global const float* act_scale, const int K, const int n,
                         const int M, const float wscale, const float out_scale,
                         __global float* y, __local int* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int r = get_local_id(1);
    const int m = get_global_id(1);
    const int t0 = get_group_id(2) * TILE_N;
    const int words = K / 16;
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (m < M) {
        __global const uint* row = codes + (size_t)m * words;
        for (int u = lane; u < words; u += lanes) {
            const uint word = row[u];
            const int base = (u / 8) * 128 + (u % 8) * 4;
            ACCUMULATE_WORD(word, base, q, K, t0, n, acc)
        }
    }
    __local int* mine = scratch + r * TILE_N * lanes;  // [TILE_N][lanes] of this row
    REDUCE_TILE_LANES(mine, acc, lane, lanes);
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const int t = t0 + lane;
        float v = div_rn((float)mine[lane * lanes], act_scale[t]) * wscale;
        if (out_scale != 1.0f) {
            v = v * out_scale;
        }
        y[(size_t)t * M + m] = v;
    }
}

// TQ1_0 / TQ2_0 with Q8_K activations: per 256-block b an exact integer sum, then
// y = sum_b float32(sumi_b) * (dw_b * dy_b) in block order, as llama.cpp's generic kernel does.
// Each lane owns whole 256-blocks (16 code words) and leaves their sums in block_sums
// [ROWS][TILE_N][nb]; then lane tt of each row adds token tt's blocks in order.
__kernel void linear_tq(__global const uint* codes, __global const float* wscale,
                        __global const char* q, __global const float* act_d, const int K,
                        const int n, const int M, const float out_scale, __global float* y,
                        __local int* block_sums) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int r = get_local_id(1);
    const int m = get_global_id(1);
    const int t0 = get_group_id(2) * TILE_N;
    const int nb = K / 256;
    __local int* mine = block_sums + r * TILE_N * nb;
    if (m < M) {
        __global const uint* row = codes + (size_t)m * (K / 16);
        for (int b = lane; b < nb; b += lanes) {
            int acc[TILE_N];
            for (int tt = 0; tt < TILE_N; tt++) {
                acc[tt] = 0;
            }
            for (int u = b * 16; u < b * 16 + 16; u++) {
                const uint word = row[u];
                const int base = (u / 8) * 128 + (u % 8) * 4;
                ACCUMULATE_WORD(word, base, q, K, t0, n, acc)
            }
            for (int tt = 0; tt < TILE_N; tt++) {
                mine[tt * nb + b] = acc[tt];
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const int t = t0 + lane;
        y[(size_t)t * M + m] = block_sums_to_y(mine + lane * nb, nb, wscale + (size_t)m * nb,
                                               act_d + (size_t)t * nb, out_scale);
    }
}
