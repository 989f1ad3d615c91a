// Ternary matmuls y [n, M] = W [M, K] x [n, K] on pre-quantized int8 activations.
//
// Weights on the device (bitnet.hal.device_layout): codes uint8 [M, K/4] in the I2_S interleave
// (TQ2_0 and TQ1_0 are repacked into it at load); the row dots (I2S_ROW_DOTS, TQ_ROW_SUMS) and
// epilogues (i2s_output, block_sums_to_y) are common.cl's, shared with the fused decode-layer
// kernels (decode_layer.cl).
//
// A work-group is ROWS output rows x LANES lanes (local size (LANES, ROWS), both chosen by the
// host from the device's SIMD width), for a tile of TILE_N tokens: global size
// (LANES, M rounded up to ROWS, ceil(n / TILE_N)). Weights are decoded once per tile.

#ifndef TILE_N
#define TILE_N 8
#endif

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
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (m < M) {
        __global const uint* row = codes + (size_t)m * (K / 16);
        I2S_ROW_DOTS(row, q, K, t0, n, acc, lane, lanes)
    }
    __local int* mine = scratch + r * TILE_N * lanes;  // [TILE_N][lanes] of this row
    REDUCE_TILE_LANES(mine, acc, lane, lanes);
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const int t = t0 + lane;
        y[(size_t)t * M + m] = i2s_output(mine[lane * lanes], act_scale[t], wscale, out_scale);
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
        TQ_ROW_SUMS(row, q, K, t0, n, mine, nb, lane, lanes)
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const int t = t0 + lane;
        y[(size_t)t * M + m] = block_sums_to_y(mine + lane * nb, nb, wscale + (size_t)m * nb,
                                               act_d + (size_t)t * nb, out_scale);
    }
}
