// decode_layer: one decode token's transformer block in seven dispatches
// (bitnet.hal.device_runtime.FUSED_KERNELS, GpuBackend.decode_layer), the bits of the op
// kernels: every step calls the functions those kernels use (common.cl's rms_scale, the
// quantizers' element arithmetic, the ternary row dots and epilogues, rope_pair, the gatings;
// attention.cl's attend is this program's too: the host builds it with attention.cl appended).
//
// Matmuls take the op kernels' work-group: LANES x ROWS, one row of output a (lane) row of the
// group, TILE_N token slots of which one is used. The prologue (rmsnorm + quantization of the
// d-wide input) runs in every work-group into local memory; FIXED_REDUCE makes its sums those
// of the rmsnorm kernel whatever the group size, and the max reductions pick the same element
// in any order.

#ifndef TILE_N
#define TILE_N 8
#endif

// rmsnorm(x, w) [K] quantized per token (I2_S) into q [K] and *scale (SPACE: __global or
// __local). wide: REDUCE_LANES acc_t; narrow: REDUCE_LANES floats.
#define DEFINE_NORM_QUANTIZE_I8(NAME, SPACE)                                               \
    void NAME(__global const float* x, __global const float* w, const int K,               \
              const float eps, SPACE char* q, SPACE float* scale, __local acc_t* wide,      \
              __local float* narrow, const int lid, const int wg) {                        \
        const float r = rms_scale(x, K, eps, wide, lid, wg);                               \
        FIXED_REDUCE(narrow, float, 0.0f, K, k_, fabs(normed(x[k_], r, w[k_])), OP_MAX,    \
                     lid, wg);                                                             \
        const float s = i8_scale(narrow[0]);                                               \
        for (int k = lid; k < K; k += wg) {                                                \
            q[k] = i8_value(normed(x[k], r, w[k]), s);                                     \
        }                                                                                  \
        if (lid == 0) {                                                                    \
            *scale = s;                                                                    \
        }                                                                                  \
    }
DEFINE_NORM_QUANTIZE_I8(norm_quantize_i8_global, __global)
DEFINE_NORM_QUANTIZE_I8(norm_quantize_i8_local, __local)

// rmsnorm(x, w) [K] quantized to Q8_K (TQ) into q [K] and d [K/256]: a work-item per 256-block
// scans it in order for the first element of largest |x| (quantize_q8_k's pick).
#define DEFINE_NORM_QUANTIZE_Q8_K(NAME, SPACE)                                             \
    void NAME(__global const float* x, __global const float* w, const int K,               \
              const float eps, SPACE char* q, SPACE float* d, __local acc_t* wide,          \
              __local float* narrow, const int lid, const int wg) {                        \
        const float r = rms_scale(x, K, eps, wide, lid, wg);                               \
        for (int b = lid; b < K / 256; b += wg) {                                          \
            const int base = b * 256;                                                      \
            float a = -1.0f;                                                               \
            int idx = 0;                                                                   \
            for (int j = 0; j < 256; j++) {                                                \
                const float v = fabs(normed(x[base + j], r, w[base + j]));                 \
                if (v > a) {                                                               \
                    a = v;                                                                 \
                    idx = j;                                                               \
                }                                                                          \
            }                                                                              \
            const float amax = normed(x[base + idx], r, w[base + idx]);                    \
            const float iscale = amax == 0.0f ? 0.0f : q8k_iscale(amax);                   \
            for (int j = 0; j < 256; j++) {                                                \
                q[base + j] = amax == 0.0f                                                 \
                    ? 0 : q8k_value(iscale, normed(x[base + j], r, w[base + j]));          \
            }                                                                              \
            d[b] = amax == 0.0f ? 0.0f : q8k_d(iscale);                                    \
        }                                                                                  \
    }
DEFINE_NORM_QUANTIZE_Q8_K(norm_quantize_q8_k_global, __global)
DEFINE_NORM_QUANTIZE_Q8_K(norm_quantize_q8_k_local, __local)

// ---- sub-norm + quantization: one work-group per row
__kernel void rmsnorm_quantize_i8(__global const float* x, __global const float* w,
                                  __global char* q, __global float* scale, const int K,
                                  const float eps, __local acc_t* wide, __local float* narrow) {
    const size_t t = get_group_id(0);
    norm_quantize_i8_global(x + t * K, w, K, eps, q + t * K, scale + t, wide, narrow,
                            get_local_id(0), get_local_size(0));
}

__kernel void rmsnorm_quantize_q8_k(__global const float* x, __global const float* w,
                                    __global char* q, __global float* d, const int K,
                                    const float eps, __local acc_t* wide,
                                    __local float* narrow) {
    const size_t t = get_group_id(0);
    norm_quantize_q8_k_global(x + t * K, w, K, eps, q + t * K, d + t * (K / 256), wide, narrow,
                              get_local_id(0), get_local_size(0));
}

// The flat local id and size of a matmul work-group (LANES x ROWS).
#define FLAT_ID (get_local_id(1) * get_local_size(0) + get_local_id(0))
#define FLAT_SIZE (get_local_size(0) * get_local_size(1))

// The exact I2_S dot of `row` (null: none) with the local int8 row q, in every lane's mine[0].
int i2s_row_dot(__global const uint* row, __local const char* q, const int K,
                __local int* mine, const int lane, const int lanes) {
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (row) {
        I2S_ROW_DOTS(row, q, K, 0, 1, acc, lane, lanes)
    }
    REDUCE_TILE_LANES(mine, acc, lane, lanes);
    const int dot = mine[0];
    barrier(CLK_LOCAL_MEM_FENCE);  // mine is reusable
    return dot;
}

// A TQ row's output for the local Q8_K row (q, dy): its block sums meet in mine, lane 0 adds
// them in block order (block_sums_to_y_local); 0 elsewhere or without a row.
float tq_row_output(__global const uint* row, __global const float* dw,
                    __local const char* q, __local const float* dy, const int K,
                    const float out_scale, __local int* mine, const int lane,
                    const int lanes) {
    const int nb = K / 256;
    if (row) {
        TQ_ROW_SUMS(row, q, K, 0, 1, mine, nb, lane, lanes)
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float y = 0.0f;
    if (row && lane == 0) {
        y = block_sums_to_y_local(mine, nb, dw, dy, out_scale);
    }
    barrier(CLK_LOCAL_MEM_FENCE);  // mine is reusable
    return y;
}

// ---- q / k / v: rows 0..Mq-1 of y from cq, then Mk rows from ck, then Mv from cv
__kernel void norm_qkv_i2s(__global const float* x, __global const float* norm,
                           __global const uint* cq, __global const uint* ck,
                           __global const uint* cv, __global float* y, const int K,
                           const int Mq, const int Mk, const int Mv, const float eps,
                           const float scale_q, const float scale_k, const float scale_v,
                           const float out_q, const float out_k, const float out_v,
                           __local char* q, __local float* qs, __local acc_t* wide,
                           __local float* narrow, __local int* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int m = get_global_id(1);
    norm_quantize_i8_local(x, norm, K, eps, q, qs, wide, narrow, FLAT_ID, FLAT_SIZE);
    barrier(CLK_LOCAL_MEM_FENCE);
    __global const uint* row = 0;
    float w_scale = scale_q, out_scale = out_q;
    if (m < Mq) {
        row = cq + (size_t)m * (K / 16);
    } else if (m < Mq + Mk) {
        row = ck + (size_t)(m - Mq) * (K / 16);
        w_scale = scale_k;
        out_scale = out_k;
    } else if (m < Mq + Mk + Mv) {
        row = cv + (size_t)(m - Mq - Mk) * (K / 16);
        w_scale = scale_v;
        out_scale = out_v;
    }
    const int dot = i2s_row_dot(row, q, K, scratch + get_local_id(1) * TILE_N * lanes, lane,
                                lanes);
    if (row && lane == 0) {
        y[m] = i2s_output(dot, qs[0], w_scale, out_scale);
    }
}

__kernel void norm_qkv_tq(__global const float* x, __global const float* norm,
                          __global const uint* cq, __global const uint* ck,
                          __global const uint* cv, __global const float* dq,
                          __global const float* dk, __global const float* dv,
                          __global float* y, const int K, const int Mq, const int Mk,
                          const int Mv, const float eps, const float out_q, const float out_k,
                          const float out_v, __local char* q, __local float* qs,
                          __local acc_t* wide, __local float* narrow, __local int* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int m = get_global_id(1);
    const int nb = K / 256;
    norm_quantize_q8_k_local(x, norm, K, eps, q, qs, wide, narrow, FLAT_ID, FLAT_SIZE);
    barrier(CLK_LOCAL_MEM_FENCE);
    __global const uint* row = 0;
    __global const float* dw = dq;
    float out_scale = out_q;
    if (m < Mq) {
        row = cq + (size_t)m * (K / 16);
        dw = dq + (size_t)m * nb;
    } else if (m < Mq + Mk) {
        row = ck + (size_t)(m - Mq) * (K / 16);
        dw = dk + (size_t)(m - Mq) * nb;
        out_scale = out_k;
    } else if (m < Mq + Mk + Mv) {
        row = cv + (size_t)(m - Mq - Mk) * (K / 16);
        dw = dv + (size_t)(m - Mq - Mk) * nb;
        out_scale = out_v;
    }
    const float out = tq_row_output(row, dw, q, qs, K, out_scale,
                                    scratch + get_local_id(1) * TILE_N * nb, lane, lanes);
    if (row && lane == 0) {
        y[m] = out;
    }
}

// ---- gate / up: y[j] = act(gate_j, up_j), act 0 relu2_mul, 1 silu_mul
float gated(const int act, const float gate, const float up) {
    return act == 0 ? relu2_mul_value(gate, up) : silu_mul_value(gate, up);
}

__kernel void norm_gate_up_i2s(__global const float* x, __global const float* norm,
                               __global const uint* cg, __global const uint* cu,
                               __global float* y, const int K, const int F, const int act,
                               const float eps, const float scale_g, const float scale_u,
                               const float out_g, const float out_u, __local char* q,
                               __local float* qs, __local acc_t* wide, __local float* narrow,
                               __local int* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int m = get_global_id(1);
    norm_quantize_i8_local(x, norm, K, eps, q, qs, wide, narrow, FLAT_ID, FLAT_SIZE);
    barrier(CLK_LOCAL_MEM_FENCE);
    const bool here = m < F;
    __local int* mine = scratch + get_local_id(1) * TILE_N * lanes;
    const int gate = i2s_row_dot(here ? cg + (size_t)m * (K / 16) : 0, q, K, mine, lane, lanes);
    const int up = i2s_row_dot(here ? cu + (size_t)m * (K / 16) : 0, q, K, mine, lane, lanes);
    if (here && lane == 0) {
        y[m] = gated(act, i2s_output(gate, qs[0], scale_g, out_g),
                     i2s_output(up, qs[0], scale_u, out_u));
    }
}

__kernel void norm_gate_up_tq(__global const float* x, __global const float* norm,
                              __global const uint* cg, __global const uint* cu,
                              __global const float* dg, __global const float* du,
                              __global float* y, const int K, const int F, const int act,
                              const float eps, const float out_g, const float out_u,
                              __local char* q, __local float* qs, __local acc_t* wide,
                              __local float* narrow, __local int* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int m = get_global_id(1);
    const int nb = K / 256;
    norm_quantize_q8_k_local(x, norm, K, eps, q, qs, wide, narrow, FLAT_ID, FLAT_SIZE);
    barrier(CLK_LOCAL_MEM_FENCE);
    const bool here = m < F;
    __local int* mine = scratch + get_local_id(1) * TILE_N * nb;
    const float gate = tq_row_output(here ? cg + (size_t)m * (K / 16) : 0, dg + (size_t)m * nb,
                                     q, qs, K, out_g, mine, lane, lanes);
    const float up = tq_row_output(here ? cu + (size_t)m * (K / 16) : 0, du + (size_t)m * nb,
                                   q, qs, K, out_u, mine, lane, lanes);
    if (here && lane == 0) {
        y[m] = gated(act, gate, up);
    }
}

// ---- y = h + W x on quantized x (one token): the matmul with the residual add as epilogue
__kernel void linear_add_i2s(__global const uint* codes, __global const char* q,
                             __global const float* act_scale, __global const float* h,
                             __global float* y, const int K, const int M, const float wscale,
                             const float out_scale, __local int* scratch) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int m = get_global_id(1);
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (m < M) {
        __global const uint* row = codes + (size_t)m * (K / 16);
        I2S_ROW_DOTS(row, q, K, 0, 1, acc, lane, lanes)
    }
    __local int* mine = scratch + get_local_id(1) * TILE_N * lanes;
    REDUCE_TILE_LANES(mine, acc, lane, lanes);
    if (m < M && lane == 0) {
        y[m] = h[m] + i2s_output(mine[0], act_scale[0], wscale, out_scale);
    }
}

__kernel void linear_add_tq(__global const uint* codes, __global const float* wscale,
                            __global const char* q, __global const float* act_d,
                            __global const float* h, __global float* y, const int K,
                            const int M, const float out_scale, __local int* block_sums) {
    const int lane = get_local_id(0);
    const int lanes = get_local_size(0);
    const int m = get_global_id(1);
    const int nb = K / 256;
    __local int* mine = block_sums + get_local_id(1) * TILE_N * nb;
    if (m < M) {
        __global const uint* row = codes + (size_t)m * (K / 16);
        TQ_ROW_SUMS(row, q, K, 0, 1, mine, nb, lane, lanes)
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (m < M && lane == 0) {
        y[m] = h[m] + block_sums_to_y(mine, nb, wscale + (size_t)m * nb, act_d, out_scale);
    }
}

// ---- RoPE + KV store + attention's split runs of one token at position step[0]: work-group
// h * splits + r (grid (H * splits, 1), as attention's; a run past the position exits) ropes
// query head h and its KV head's key, rounds key and value to f16 into local memory and runs
// split r with them for the current position (attend_run's fresh row): the group that stores
// the row (run 0 of the first head of each KV group) is not the only one reading it. Its
// parts go to attention.cl's attention_combine, as the attention op's. qkv: norm_qkv's output
// [H*D | Hkv*D | Hkv*D]; tables and scalars as attention's.
__kernel void rope_attention(__global const float* qkv, __global const angle_t* cos_table,
                             __global const angle_t* sin_table, __global half* cache_k,
                             __global half* cache_v, __global const int* step,
                             __global const int* table, __global float* scores,
                             __global float* parts, const int layer, const int n_ctx,
                             const int n_heads, const int n_kv_heads, const int head_dim,
                             const float score_scale, const int block, const int span,
                             __local float* scratch, __local float* q16,
                             __local float* fresh_k, __local float* fresh_v) {
    const int splits = (span + ATTENTION_SPLIT - 1) / ATTENTION_SPLIT;
    const int h = get_group_id(0) / splits;
    const int run = get_group_id(0) % splits;
    const int pos = step[0];
    if (run * ATTENTION_SPLIT > pos) {
        return;
    }
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const int group = n_heads / n_kv_heads;
    const int kv_head = h / group;
    const int width = n_kv_heads * head_dim;
    const int half_dim = head_dim / 2;
    __global const float* qh = qkv + (size_t)h * head_dim;
    __global const float* kh = qkv + (size_t)n_heads * head_dim + kv_head * head_dim;
    __global const float* vh = kh + width;
    for (int i = lid; i < half_dim; i += wg) {
        const size_t angle = (size_t)pos * half_dim + i;
        const angle_t c = cos_table[angle];
        const angle_t s = sin_table[angle];
        const float2 qr = rope_pair(qh[i], qh[i + half_dim], c, s);
        const float2 kr = rope_pair(kh[i], kh[i + half_dim], c, s);
        q16[i] = round_to_f16(qr.x);
        q16[i + half_dim] = round_to_f16(qr.y);
        fresh_k[i] = round_to_f16(kr.x);
        fresh_k[i + half_dim] = round_to_f16(kr.y);
    }
    for (int d = lid; d < head_dim; d += wg) {
        fresh_v[d] = round_to_f16(vh[d]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const size_t layer_base = (size_t)layer * n_ctx * width + kv_head * head_dim;
    if (h % group == 0 && run == 0) {
        const size_t dst = layer_base + cache_row(table, block, pos) * width;
        for (int d = lid; d < head_dim; d += wg) {
            vstore_half_rte(fresh_k[d], dst + d, cache_k);  // f16 values: stored exactly
            vstore_half_rte(fresh_v[d], dst + d, cache_v);
        }
    }
    attend_run(q16, cache_k, cache_v, table, block, layer_base, width, run * ATTENTION_SPLIT,
               pos, head_dim, score_scale, scores + (size_t)h * span,
               parts + (size_t)get_group_id(0) * PART(head_dim), scratch, lid, wg, 1, fresh_k,
               fresh_v);
}
