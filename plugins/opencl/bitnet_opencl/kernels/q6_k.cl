// Q6_K weights: linear_float as llama.cpp runs a Q6_K head (Q6_K x Q8_K integer dot) and embed.
//
// Weights on the device (bitnet.formats.device_layout.split_q6_k_ints, split once at load):
// codes int8 [M, K] in -32..31, sub-block scales int8 [M, K/16], block scales d f32 [M, K/256].
// Activations arrive as Q8_K (quantize.cl's quantize_q8_k): q int8 [n, K], d_y f32 [n, K/256].

#ifndef TILE_N
#define TILE_N 8
#endif

// y = sum_b float32(isum_b) * (d_w_b * d_y_b) in block order (hal KernelBackend.linear_float),
// isum_b = sum_j sc_j * sum_{k in 16-element sub-block j} q6_k * q8_k, exact in int32
// (|isum_b| <= 256 * 32 * 128 * 127 < 2^31). Geometry as linear_ternary.cl's linear_tq: each
// lane owns whole 256-blocks and leaves their sums in block_sums [ROWS][TILE_N][nb]; then lane
// tt of each row adds token tt's blocks in order.
__kernel void linear_q6_k(__global const char* codes, __global const char* sub,
                          __global const float* wscale, __global const char* q,
                          __global const float* act_d, const int K, const int n, const int M,
                          const float out_scale, __global float* y, __local int* block_sums) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int r = get_local_id(1);
    const int m = get_global_id(1);
    const int t0 = get_group_id(2) * TILE_N;
    const int nb = K / 256;
    __local int* mine = block_sums + r * TILE_N * nb;
    if (m < M) {
        __global const char* row = codes + (size_t)m * K;
        __global const char* row_sub = sub + (size_t)m * (K / 16);
        for (int b = lane; b < nb; b += lanes) {
            int acc[TILE_N];
            for (int tt = 0; tt < TILE_N; tt++) {
                acc[tt] = 0;
            }
            for (int j = 0; j < 16; j++) {
                const int base = b * 256 + j * 16;
                const int sc = row_sub[b * 16 + j];
                const char4 w0 = vload4(0, row + base);
                const char4 w1 = vload4(1, row + base);
                const char4 w2 = vload4(2, row + base);
                const char4 w3 = vload4(3, row + base);
                for (int tt = 0; tt < TILE_N; tt++) {
                    if (t0 + tt < n) {
                        __global const char* qt = q + (size_t)(t0 + tt) * K + base;
                        int part = DOT4(w0, vload4(0, qt)) + DOT4(w1, vload4(1, qt));
                        part += DOT4(w2, vload4(2, qt)) + DOT4(w3, vload4(3, qt));
                        acc[tt] += sc * part;
                    }
                }
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

// out [n, K] f32 = rows ids [n] of a Q6_K table, exactly dequantized: (d * sc) * q, two f32
// roundings as ggml's dequantize_row_q6_K (the product d * sc is exact). Global size (K, n).
__kernel void embed_q6_k(__global const char* codes, __global const char* sub,
                         __global const float* wscale, __global const int* ids, const int K,
                         __global float* out) {
    const int k = get_global_id(0);
    const int t = get_global_id(1);
    if (k < K) {
        const size_t row = (size_t)ids[t];
        const float d = wscale[row * (K / 256) + k / 256];
        const float sc = (float)sub[row * (K / 16) + k / 16];
        out[(size_t)t * K + k] = (d * sc) * (float)codes[row * K + k];
    }
}
