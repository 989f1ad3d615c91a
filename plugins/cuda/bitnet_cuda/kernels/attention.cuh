// The attention of one query head over the f16 KV cache, shared by attention.cu and the fused
// rope_attention (decode_layer.cu): the cache row of a position through a block table, one
// split run's online softmax and the merge of runs (see attention.cu).
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

// attention's positions per block: one split run (bitnet.hal.device_runtime.ATTENTION_SPLIT)
#define ATT_SPLIT 256
// a split run's record in the parts scratch: m, l, o[head_dim]
#define ATT_PART(head_dim) ((head_dim) + 2)

// Online-softmax partial results (m[i], l[i], o[i][d]: max, exp sum, unnormalized output) of
// `count` runs, merged: thread 0 of the block gets (m_all, total) and each d < head_dim
// (threads stride over d) the merged unnormalized output, written through put(m_all, total,
// d, o). Runs that saw no key hold m = -inf, l = 0 and weigh exp(-inf) = 0. One merge for the
// warps of a block and for the split runs of attention_combine.
template <class M, class L, class O, class Put>
__device__ __forceinline__ void merge_runs(M m, L l, O o, int count, int head_dim, Put put)
{
    float m_all = m(0);
    for (int w = 1; w < count; ++w) {
        m_all = fmaxf(m_all, m(w));
    }
    float total = 0.0f;
    for (int w = 0; w < count; ++w) {
        total = fmaf(l(w), expf(m(w) - m_all), total);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int w = 0; w < count; ++w) {
            acc = fmaf(o(w, d), expf(m(w) - m_all), acc);
        }
        put(m_all, total, d, acc);
    }
}

// One split run of one (query head, row): q_row [D] against positions first .. min(last,
// first + ATT_SPLIT - 1) of one KV head (k_head, v_head: that head's first element in cache
// row 0, rows `width` apart; position j in cache row cache_row(table, block, j)) -> part
// [ATT_PART(D)]: the run's softmax max, exp sum and unnormalized output (attention_combine
// merges the runs). Warp w takes positions first + w, first + w + ATT_WARPS, ... with an
// online softmax; the warps merge at the end (merge_runs). fresh_k / fresh_v (null in
// attention.cu): position `last`'s key and value rounded to f16 by the caller
// (rope_attention), read there instead of the cache row another block may still be writing;
// the same values, the same bits. first <= last (the caller exits runs past last).
__device__ __forceinline__ void attend_run(
    const float* __restrict__ q_row, const __half* __restrict__ k_head,
    const __half* __restrict__ v_head, const int* __restrict__ table, int block,
    float* __restrict__ part, int first, int last, int head_dim, int width, float score_scale,
    const __half* fresh_k, const __half* fresh_v)
{
    __shared__ float s_m[ATT_WARPS];
    __shared__ float s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_DIM];
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int warp = threadIdx.x / WARP_SIZE;
    const int end = min(last, first + ATT_SPLIT - 1);

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
    for (int j = first + warp; j <= end; j += ATT_WARPS) {
        const size_t row = cache_row(table, block, j) * width;
        const bool fresh = j == last && fresh_k != nullptr;
        const __half* kj = fresh ? fresh_k : k_head + row;
        float dot = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_PER_LANE; ++c) {
            const int d = lane + WARP_SIZE * c;
            if (d < head_dim) {
                dot = fmaf(qr[c], __half2float(kj[d]), dot);
            }
        }
        const float score = __fmul_rn(warp_sum_float(dot), score_scale);
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
    merge_runs([&](int w) { return s_m[w]; }, [&](int w) { return s_l[w]; },
               [&](int w, int d) { return s_acc[w][d]; }, ATT_WARPS, head_dim,
               [&](float m_all, float total, int d, float o) {
                   if (d == 0) {
                       part[0] = m_all;
                       part[1] = total;
                   }
                   part[2 + d] = o;
               });
}
