// Float-format weights F32 / F16 / BF16 / Q8_0: linear_float (y [n, M] = W [M, K] x [n, K]) and
// embed (rows of W). Q6_K has its own integer path in q6_k.cl.
// Weights stay in their on-disk bytes, one row of `row_bytes` per output; the host builds this
// program once per format with -DDECODE=decode_<format>, the function that dequantizes element k
// of a row exactly to f32.

#ifndef TILE_N
#define TILE_N 8
#endif

inline float decode_f32(__global const uchar* row, int k) {
    return ((__global const float*)row)[k];
}

inline float decode_f16(__global const uchar* row, int k) {
    return vload_half(k, (__global const half*)row);
}

inline float decode_bf16(__global const uchar* row, int k) {
    return as_float((uint)((__global const ushort*)row)[k] << 16);
}

// Q8_0: 32-element blocks of f16 d then 32 int8: d * q.
inline float decode_q8_0(__global const uchar* row, int k) {
    __global const uchar* blk = row + (k / 32) * 34;
    float d = vload_half(0, (__global const half*)blk);
    return d * (float)((__global const char*)blk)[2 + k % 32];
}

// Work-group = ROWS rows x LANES lanes for a tile of TILE_N tokens, as in linear_ternary.cl:
// global size (LANES, M rounded up to ROWS, ceil(n / TILE_N)); any summation order is allowed.
__kernel void linear_float(__global const uchar* w, const int row_bytes,
                           __global const float* x, const int K, const int n, const int M,
                           const float out_scale, __global float* y, __local float* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int r = get_local_id(1);
    const int m = get_global_id(1);
    const int t0 = get_group_id(2) * TILE_N;
    float acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0.0f;
    }
    if (m < M) {
        __global const uchar* row = w + (size_t)m * row_bytes;
        for (int k = lane; k < K; k += lanes) {
            const float wk = DECODE(row, k);
            for (int tt = 0; tt < TILE_N; tt++) {
                if (t0 + tt < n) {
                    acc[tt] += wk * x[(size_t)(t0 + tt) * K + k];
                }
            }
        }
    }
    __local float* mine = scratch + r * TILE_N * lanes;  // [TILE_N][lanes] of this row
    REDUCE_TILE_LANES(mine, acc, lane, lanes);
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const float total = mine[lane * lanes];
        y[(size_t)(t0 + lane) * M + m] = out_scale != 1.0f ? total * out_scale : total;
    }
}

// out [n, K] f32 = rows ids [n] of the table; global size (K, n).
__kernel void embed(__global const uchar* table, const int row_bytes,
                    __global const int* ids, const int K, __global float* out) {
    const int k = get_global_id(0);
    const int t = get_global_id(1);
    if (k < K) {
        out[(size_t)t * K + k] = DECODE(table + (size_t)ids[t] * row_bytes, k);
    }
}
