// decode_layer: one decode token's transformer block in seven launches (GpuBackend.decode_layer,
// bitnet.hal.device_runtime.FUSED_KERNELS), the bits of the op-by-op kernels: each step here
// calls the device functions those kernels use (norm.cuh, quantize.cuh, ternary_rows.cuh,
// rope.cuh, attention.cuh, gating.cuh), with explicit rounding intrinsics (no FMA contraction).
//
//   norm_qkv_{i2s,tq}        rmsnorm + quantization of x in every block (prologue: d is small,
//                            its int8 row fits shared memory), then q / k / v as one matmul
//   rope_attention           RoPE of q and k, the KV store and attention's split runs; a block
//                            per head and run (attention.cu's attention_combine follows)
//   rmsnorm_quantize_{i8,q8_k}  the sub-norm and the quantization of its output
//   linear_add_{i2s,tq}      a matmul with the residual add as its epilogue
//   norm_gate_up_{i2s,tq}    the prologue, then gate and up rows together, gated (relu2 / silu)
//
// Matmul geometry as linear_ternary.cu: one warp per output row, blockDim.x / 32 rows a block,
// one token (the TN = 1 path). A prologue of 128 threads keeps rmsnorm's reduction tree
// (norm.cuh), and max reductions pick the same element in any order, so the int8 row equals the
// rmsnorm + quantize kernels' output.
#include "attention.cuh"
#include "gating.cuh"
#include "norm.cuh"
#include "quantize.cuh"
#include "rope.cuh"
#include "ternary_rows.cuh"

#define FUSED_ROWS 8  // the most rows (warps) a matmul block holds (__launch_bounds__)
#define FUSED_MAX_K 16384  // the widest prologue row (the runtime's fused_max_width)

// The largest |y(k)| over k < K, in every thread (s.red: NORM_WARPS floats). fmaxf from 0:
// quantize_per_token_i8's order-free reduction.
template <class Value>
__device__ __forceinline__ float block_amax(Value y, int K, NormScratch& s)
{
    float amax = 0.0f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        amax = fmaxf(amax, fabsf(y(k)));
    }
    amax = warp_max_float(amax);
    if ((threadIdx.x & (WARP_SIZE - 1)) == 0) {
        s.red[threadIdx.x / WARP_SIZE] = amax;
    }
    __syncthreads();
    float m = s.red[0];
    for (int w = 1; w < (int)(blockDim.x / WARP_SIZE); ++w) {
        m = fmaxf(m, s.red[w]);
    }
    __syncthreads();
    return m;
}

// rmsnorm(x, w) [K] quantized per token (I2_S): q [K] int8 (global or shared), *scale.
// Valid after a barrier.
__device__ __forceinline__ void norm_quantize_i8(const float* __restrict__ x,
                                                 const float* __restrict__ w, int K, float eps,
                                                 signed char* q, float* scale, NormScratch& s)
{
    const float r = rms_scale(x, K, eps, s);
    auto y = [&](int k) { return normed(x[k], r, w[k]); };
    const float s8 = i8_scale(block_amax(y, K, s));
    if (threadIdx.x == 0) {
        *scale = s8;
    }
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        q[k] = i8_value(y(k), s8);
    }
}

// rmsnorm(x, w) [K] quantized to Q8_K (TQ): q [K] int8, d [K/256]; a warp per 256-block.
// Valid after a barrier.
__device__ __forceinline__ void norm_quantize_q8_k(const float* __restrict__ x,
                                                   const float* __restrict__ w, int K, float eps,
                                                   signed char* q, float* d, NormScratch& s)
{
    const float r = rms_scale(x, K, eps, s);
    auto y = [&](int k) { return normed(x[k], r, w[k]); };
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    for (int b = threadIdx.x / WARP_SIZE; b < K / QK_K; b += blockDim.x / WARP_SIZE) {
        const int base = b * QK_K;
        float a = -1.0f;
        int idx = 0;
        for (int j = lane; j < QK_K; j += WARP_SIZE) {
            amax_pick(a, idx, fabsf(y(base + j)), j);
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float oa = __shfl_xor_sync(FULL_MASK, a, offset);
            const int oi = __shfl_xor_sync(FULL_MASK, idx, offset);
            amax_pick(a, idx, oa, oi);
        }
        const float maxv = y(base + idx);  // signed: the element itself
        if (maxv != 0.0f) {
            const float iscale = q8k_iscale(maxv);
            for (int j = lane; j < QK_K; j += WARP_SIZE) {
                q[base + j] = q8k_value(iscale, y(base + j));
            }
            if (lane == 0) {
                d[b] = q8k_d(iscale);
            }
        } else {
            for (int j = lane; j < QK_K; j += WARP_SIZE) {
                q[base + j] = 0;  // an all-zero block: d = 0, q = 0
            }
            if (lane == 0) {
                d[b] = 0.0f;
            }
        }
    }
}

// The prologue's int8 row and its scales in shared memory (16-byte aligned rows).
struct Prologue {
    int4 q[FUSED_MAX_K / 16];
    float scales[FUSED_MAX_K / QK_K];
    NormScratch norm;
};

__device__ __forceinline__ const signed char* prologue_q(const Prologue& p)
{
    return reinterpret_cast<const signed char*>(p.q);
}

// ---------------------------------------------------------------------------------------------
// q / k / v: rows 0..Mq-1 of y from wq, then Mk rows from wk, then Mv from wv

extern "C" __global__ void __launch_bounds__(FUSED_ROWS * WARP_SIZE) norm_qkv_i2s(
    const float* __restrict__ x, const float* __restrict__ norm, const uint4* __restrict__ wq,
    const uint4* __restrict__ wk, const uint4* __restrict__ wv, float* __restrict__ y, int K,
    int Mq, int Mk, int Mv, float eps, float scale_q, float scale_k, float scale_v,
    float out_q, float out_k, float out_v)
{
    __shared__ Prologue p;
    norm_quantize_i8(x, norm, K, eps, reinterpret_cast<signed char*>(p.q), p.scales, p.norm);
    __syncthreads();
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= Mq + Mk + Mv) {
        return;
    }
    const uint4* w = wq;
    int r = row;
    float w_scale = scale_q, out_scale = out_q;
    if (r >= Mq) {
        r -= Mq;
        w = wk, w_scale = scale_k, out_scale = out_k;
        if (r >= Mk) {
            r -= Mk;
            w = wv, w_scale = scale_v, out_scale = out_v;
        }
    }
    int dot[1];
    i2s_dots<1>(w + (size_t)r * (K / 64), prologue_q(p), K, 0, 1, lane, dot);
    if (lane == 0) {
        y[row] = i2s_output(dot[0], p.scales[0], w_scale, out_scale);
    }
}

extern "C" __global__ void __launch_bounds__(FUSED_ROWS * WARP_SIZE) norm_qkv_tq(
    const float* __restrict__ x, const float* __restrict__ norm, const uint4* __restrict__ wq,
    const uint4* __restrict__ wk, const uint4* __restrict__ wv, const float* __restrict__ dq,
    const float* __restrict__ dk, const float* __restrict__ dv, float* __restrict__ y, int K,
    int Mq, int Mk, int Mv, float eps, float out_q, float out_k, float out_v)
{
    __shared__ Prologue p;
    norm_quantize_q8_k(x, norm, K, eps, reinterpret_cast<signed char*>(p.q), p.scales, p.norm);
    __syncthreads();
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= Mq + Mk + Mv) {
        return;
    }
    const uint4* w = wq;
    const float* wd = dq;
    int r = row;
    float out_scale = out_q;
    if (r >= Mq) {
        r -= Mq;
        w = wk, wd = dk, out_scale = out_k;
        if (r >= Mk) {
            r -= Mk;
            w = wv, wd = dv, out_scale = out_v;
        }
    }
    const int nblk = K / QK_K;
    float acc[1];
    tq_sums<1>(w + (size_t)r * nblk * 4, wd + (size_t)r * nblk, prologue_q(p), p.scales, K, 0,
               1, lane, acc);
    if (lane == 0) {
        y[row] = apply_out_scale(acc[0], out_scale);
    }
}

// ---------------------------------------------------------------------------------------------
// gate / up: y[j] = act(gate_j, up_j), act 0 relu2_mul, 1 silu_mul

__device__ __forceinline__ float gated(int act, float gate, float up)
{
    return act == 0 ? relu2_mul_value(gate, up) : silu_mul_value(gate, up);
}

extern "C" __global__ void __launch_bounds__(FUSED_ROWS * WARP_SIZE) norm_gate_up_i2s(
    const float* __restrict__ x, const float* __restrict__ norm, const uint4* __restrict__ wg,
    const uint4* __restrict__ wu, float* __restrict__ y, int K, int F, int act, float eps,
    float scale_g, float scale_u, float out_g, float out_u)
{
    __shared__ Prologue p;
    norm_quantize_i8(x, norm, K, eps, reinterpret_cast<signed char*>(p.q), p.scales, p.norm);
    __syncthreads();
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= F) {
        return;
    }
    int gate[1], up[1];
    i2s_dots<1>(wg + (size_t)row * (K / 64), prologue_q(p), K, 0, 1, lane, gate);
    i2s_dots<1>(wu + (size_t)row * (K / 64), prologue_q(p), K, 0, 1, lane, up);
    if (lane == 0) {
        y[row] = gated(act, i2s_output(gate[0], p.scales[0], scale_g, out_g),
                       i2s_output(up[0], p.scales[0], scale_u, out_u));
    }
}

extern "C" __global__ void __launch_bounds__(FUSED_ROWS * WARP_SIZE) norm_gate_up_tq(
    const float* __restrict__ x, const float* __restrict__ norm, const uint4* __restrict__ wg,
    const uint4* __restrict__ wu, const float* __restrict__ dg, const float* __restrict__ du,
    float* __restrict__ y, int K, int F, int act, float eps, float out_g, float out_u)
{
    __shared__ Prologue p;
    norm_quantize_q8_k(x, norm, K, eps, reinterpret_cast<signed char*>(p.q), p.scales, p.norm);
    __syncthreads();
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= F) {
        return;
    }
    const int nblk = K / QK_K;
    float gate[1], up[1];
    tq_sums<1>(wg + (size_t)row * nblk * 4, dg + (size_t)row * nblk, prologue_q(p), p.scales, K,
               0, 1, lane, gate);
    tq_sums<1>(wu + (size_t)row * nblk * 4, du + (size_t)row * nblk, prologue_q(p), p.scales, K,
               0, 1, lane, up);
    if (lane == 0) {
        y[row] = gated(act, apply_out_scale(gate[0], out_g), apply_out_scale(up[0], out_u));
    }
}

// ---------------------------------------------------------------------------------------------
// sub-norm + quantization: grid (rows, 1), NORM_THREADS threads; x f32 [n, K], w [K]

extern "C" __global__ void __launch_bounds__(NORM_THREADS) rmsnorm_quantize_i8(
    const float* __restrict__ x, const float* __restrict__ w, signed char* __restrict__ q,
    float* __restrict__ scale, int K, float eps)
{
    __shared__ NormScratch s;
    const int row = blockIdx.x;
    norm_quantize_i8(x + (size_t)row * K, w, K, eps, q + (size_t)row * K, scale + row, s);
}

extern "C" __global__ void __launch_bounds__(NORM_THREADS) rmsnorm_quantize_q8_k(
    const float* __restrict__ x, const float* __restrict__ w, signed char* __restrict__ q,
    float* __restrict__ d, int K, float eps)
{
    __shared__ NormScratch s;
    const int row = blockIdx.x;
    norm_quantize_q8_k(x + (size_t)row * K, w, K, eps, q + (size_t)row * K,
                       d + (size_t)row * (K / QK_K), s);
}

// ---------------------------------------------------------------------------------------------
// y = h + W x on quantized x (one token): the matmul with the residual add as its epilogue

extern "C" __global__ void __launch_bounds__(FUSED_ROWS * WARP_SIZE) linear_add_i2s(
    const uint4* __restrict__ w, const signed char* __restrict__ q,
    const float* __restrict__ act_scale, const float* __restrict__ h, float* __restrict__ y,
    int K, int M, float w_scale, float out_scale)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= M) {
        return;
    }
    int dot[1];
    i2s_dots<1>(w + (size_t)row * (K / 64), q, K, 0, 1, lane, dot);
    if (lane == 0) {
        y[row] = __fadd_rn(h[row], i2s_output(dot[0], act_scale[0], w_scale, out_scale));
    }
}

extern "C" __global__ void __launch_bounds__(FUSED_ROWS * WARP_SIZE) linear_add_tq(
    const uint4* __restrict__ w, const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, const float* __restrict__ h, float* __restrict__ y, int K,
    int M, float out_scale)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= M) {
        return;
    }
    const int nblk = K / QK_K;
    float acc[1];
    tq_sums<1>(w + (size_t)row * nblk * 4, w_d + (size_t)row * nblk, q, act_d, K, 0, 1, lane,
               acc);
    if (lane == 0) {
        y[row] = __fadd_rn(h[row], apply_out_scale(acc[0], out_scale));
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE + KV store + attention's split runs of one token at position step[0]: block
// h * splits + s (grid (H * splits, 1), ATT_WARPS warps; a run past the position exits) ropes
// query head h and its KV head's key, rounds key and value to f16 in shared memory and runs
// split s with them for the current position (fresh_k / fresh_v): the block that stores the
// row (run 0 of the first head of each KV group) is not the only one reading it. Its parts go
// to attention.cu's attention_combine, as the attention op's. qkv: norm_qkv's output
// [H*D | Hkv*D | Hkv*D]; tables and scalars as attention.cu's.

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE) rope_attention(
    const float* __restrict__ qkv, const double* __restrict__ cos_table,
    const double* __restrict__ sin_table, __half* __restrict__ k_cache,
    __half* __restrict__ v_cache, const int* __restrict__ step, const int* __restrict__ table,
    float* __restrict__ scores, float* __restrict__ parts, int layer, int n_ctx, int n_heads,
    int n_kv_heads, int head_dim, float score_scale, int block, int span)
{
    __shared__ float s_q[ATT_MAX_DIM];
    __shared__ __half s_k[ATT_MAX_DIM];
    __shared__ __half s_v[ATT_MAX_DIM];
    const int splits = (span + ATT_SPLIT - 1) / ATT_SPLIT;
    const int h = blockIdx.x / splits;
    const int run = blockIdx.x % splits;
    const int pos = step[0];
    if (run * ATT_SPLIT > pos) {
        return;
    }
    const int group = n_heads / n_kv_heads;
    const int kv_head = h / group;
    const int width = n_kv_heads * head_dim;
    const int half = head_dim / 2;
    const float* q = qkv + (size_t)h * head_dim;
    const float* k = qkv + (size_t)n_heads * head_dim + (size_t)kv_head * head_dim;
    const float* v = k + width;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const size_t angle = (size_t)pos * half + i;
        const double c = cos_table[angle];
        const double s = sin_table[angle];
        rope_pair(q[i], q[i + half], c, s, s_q[i], s_q[i + half]);
        float k0, k1;
        rope_pair(k[i], k[i + half], c, s, k0, k1);
        s_k[i] = __float2half_rn(k0);
        s_k[i + half] = __float2half_rn(k1);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        s_v[d] = __float2half_rn(v[d]);
    }
    __syncthreads();
    const size_t kv_off = (size_t)layer * n_ctx * width + (size_t)kv_head * head_dim;
    if (h % group == 0 && run == 0) {
        const size_t dst = kv_off + cache_row(table, block, pos) * width;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            k_cache[dst + d] = s_k[d];
            v_cache[dst + d] = s_v[d];
        }
    }
    attend_run(s_q, k_cache + kv_off, v_cache + kv_off, table, block,
               parts + (size_t)blockIdx.x * ATT_PART(head_dim), run * ATT_SPLIT, pos, head_dim,
               width, score_scale, s_k, s_v);
}
