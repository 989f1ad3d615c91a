// The attention of one query head over the f16 KV cache, shared by attention.cu and the fused
// rope_attention (decode_layer.cu): the cache row of a position through a block table, and
// one block's online softmax (see attention.cu).
#pragma once

#include "common.cuh"

#define ATT_WARPS 8
#define ATT_MAX_DIM 256
#define ATT_PER_LANE (ATT_MAX_DIM / WARP_SIZE)

// The cache row of position p through a block table (bitnet.hal.kv_blocks):
// table[p / block] * block + p % block; block 0: no table, row p.
__device__ __forceinline__ size_t cache_row(const int* __restrict__ table, int block, int p)
{
    return block == 0 ? (size_t)p : (size_t)table[p / block] * block + p % block;
}

// One (query head, row) block: q_row [D] against positions 0 .. last of one KV head (k_head,
// v_head: that head's first element in cache row 0, rows `width` apart; position j in cache
// row cache_row(table, block, j)) -> out_row [D]. fresh_k / fresh_v (null in attention.cu):
// position `last`'s key and value rounded to f16 by the caller (rope_attention), read there
// instead of the cache row another block may still be writing; the same values, the same bits.
__device__ __forceinline__ void attend(
    const float* __restrict__ q_row, const __half* __restrict__ k_head,
    const __half* __restrict__ v_head, const int* __restrict__ table, int block,
    float* __restrict__ out_row, int last, int head_dim, int width, float score_scale,
    const __half* fresh_k, const __half* fresh_v)
{
    __shared__ float s_m[ATT_WARPS];
    __shared__ float s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_DIM];
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int warp = threadIdx.x / WARP_SIZE;

    float qr[ATT_PER_LANE];
    float acc[ATT_PER_LANE];
#pragma unroll
    for (int c = 0; c < ATT_PER_LANE; ++c) {
        const int d = lane + WARP_SIZE * c;
        qr[c] = d < head_dim ? __half2float(__float2half_rn(q_row[d])) : 0.0f;
        acc[c] = 0.0f;
    }
    float m = -INFINITY;  // running max of this warp's scores
    float l = 0.0f;       // running sum of exp(score - m)
    for (int j = warp; j <= last; j += ATT_WARPS) {
        const size_t row = cache_row(table, block, j) * width;
        const bool fresh = j == last && fresh_k != nullptr;
        const __half* kj = fresh ? fresh_k : k_head + row;
        float part = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; ++c) {
            const int d = lane + WARP_SIZE * c;
            if (d < head_dim) {
                part = fmaf(qr[c], __half2float(kj[d]), part);
            }
        }
        const float score = __fmul_rn(warp_sum_float(part), score_scale);
        const float m_new = fmaxf(m, score);
        const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
        const float p = expf(score - m_new);
        l = fmaf(l, correction, p);
        const __half* vj = fresh ? fresh_v : v_head + row;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; ++c) {
            const int d = lane + WARP_SIZE * c;
            if (d < head_dim) {
                acc[c] = fmaf(acc[c], correction, p * __half2float(vj[d]));
            }
        }
        m = m_new;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int c = 0; c < ATT_PER_LANE; ++c) {
        const int d = lane + WARP_SIZE * c;
        if (d < head_dim) {
            s_acc[warp][d] = acc[c];
        }
    }
    __syncthreads();
    // merge: warps that saw no key hold m = -inf, l = 0 and weigh exp(-inf) = 0
    float m_all = s_m[0];
    for (int w = 1; w < ATT_WARPS; ++w) {
        m_all = fmaxf(m_all, s_m[w]);
    }
    for (int d = threadIdx.x; d < head_dim; d += ATT_WARPS * WARP_SIZE) {
        float total = 0.0f;
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; ++w) {
            const float e = expf(s_m[w] - m_all);
            total = fmaf(s_l[w], e, total);
            o = fmaf(s_acc[w][d], e, o);
        }
        out_row[d] = o / total;
    }
}

