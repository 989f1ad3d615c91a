// linear_float: float-format weight [M, K] times f32 x [n, K] -> f32 [n, M] (the output head,
// and float checkpoints run without ternarizing). linear_float_<fmt> (F32 / F16 / BF16 / Q8_0,
// on-disk rows): dequantized weights times f32 x, any summation order (the contract allows it).
// linear_q6_k: llama.cpp's integer Q6_K x Q8_K dot on activations from linear_ternary.cu's
// quantize_q8_k. Arguments as bitnet.hal.device_runtime.KERNELS orders them.
//
// Geometry as linear_ternary.cu: one warp per output row, blockDim.x / 32 rows per block, grid
// (ceil(M / rows), ceil(n / TILE_N)); TN = 1 for one token (gemv), else GEMM_TOKENS (each
// weight read serves TN tokens). When K % 8 == 0 each lane reads 8 consecutive weights per
// step (one 16-byte load for f16), else one weight per lane per step.
#include "float_weights.cuh"

#define ROWS_PER_BLOCK 8
#define GEMM_TOKENS 8
#define QK_K 256

template <class W, int TN>
__device__ __forceinline__ void linear_float_rows(const W wt, const float* __restrict__ x,
                                                  float out_scale, float* __restrict__ y,
                                                  int M, int K, int n)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    const int t0 = blockIdx.y * TN;
    if (row >= M) {
        return;
    }
    const size_t rbase = (size_t)row * K;
    float acc[TN] = {};  // zeros
    if ((K & 7) == 0) {
        for (int k = lane * 8; k < K; k += WARP_SIZE * 8) {
            float wv[8];
            wt.load8(rbase + k, wv);
#pragma unroll
            for (int t = 0; t < TN; ++t) {
                if (t0 + t < n) {
                    const float* xt = x + (size_t)(t0 + t) * K + k;
                    const float4 a = *reinterpret_cast<const float4*>(xt);
                    const float4 b = *reinterpret_cast<const float4*>(xt + 4);
                    float s = acc[t];
                    s = fmaf(wv[0], a.x, s);
                    s = fmaf(wv[1], a.y, s);
                    s = fmaf(wv[2], a.z, s);
                    s = fmaf(wv[3], a.w, s);
                    s = fmaf(wv[4], b.x, s);
                    s = fmaf(wv[5], b.y, s);
                    s = fmaf(wv[6], b.z, s);
                    s = fmaf(wv[7], b.w, s);
                    acc[t] = s;
                }
            }
        }
    } else {
        for (int k = lane; k < K; k += WARP_SIZE) {
            const float wv = wt.load1(rbase + k);
#pragma unroll
            for (int t = 0; t < TN; ++t) {
                if (t0 + t < n) {
                    acc[t] = fmaf(wv, x[(size_t)(t0 + t) * K + k], acc[t]);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        acc[t] = warp_sum_float(acc[t]);
    }
    store_row<TN>(acc, lane, row, t0, n, M, out_scale, y);
}

// One entry point per format: linear_float_<fmt> (w, x, out, row_bytes, K, n, M, scale).
#define LINEAR_FLOAT_ENTRY(NAME, W, WTYPE)                                                     \
    extern "C" __global__ void __launch_bounds__(ROWS_PER_BLOCK * WARP_SIZE) NAME(              \
        const WTYPE* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,         \
        int row_bytes, int K, int n, int M, float out_scale)                                   \
    {                                                                                          \
        const W wt{w};                                                                         \
        if (n == 1) {                                                                          \
            linear_float_rows<W, 1>(wt, x, out_scale, y, M, K, n);                             \
        } else {                                                                               \
            linear_float_rows<W, GEMM_TOKENS>(wt, x, out_scale, y, M, K, n);                   \
        }                                                                                      \
    }

LINEAR_FLOAT_ENTRY(linear_float_f32, F32Weights, float)
LINEAR_FLOAT_ENTRY(linear_float_f16, F16Weights, unsigned short)
LINEAR_FLOAT_ENTRY(linear_float_bf16, BF16Weights, unsigned short)
LINEAR_FLOAT_ENTRY(linear_float_q8_0, Q80Weights, unsigned char)

// ---------------------------------------------------------------------------------------------
// Q6_K (bitnet.hal.device_layout.split_q6_k_ints): codes int8 [M, K] in
// -32..31, sub-block scales int8 [M, K/16], block scales f32 w_d [M, K/256]; activations Q8_K
// (q int8 [n, K], act_d f32 [n, K/256]). Per 256-block b the exact integer isum_b = sum_j sc_j *
// sum_{16-element sub-block j} q6 * q8 (|isum_b| < 2^31), then acc += f32(isum_b) * (d_w * d_y)
// block by block in f32, as the reference (hal KernelBackend.linear_float).
//
// One 16-byte code vector is one sub-block: lane u of a step reads it, meets 16 activations
// with four __dp4a and scales by its sub-scale; lanes 16j .. 16j+15 hold block j of the step
// (two blocks per step), summed by four xor shuffles.

template <int TN>
__device__ __forceinline__ void linear_q6k_rows(
    const int4* __restrict__ w, const signed char* __restrict__ w_sub,
    const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M, float out_scale)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    const int t0 = blockIdx.y * TN;
    if (row >= M) {
        return;  // the whole warp leaves together: no shuffle is left waiting
    }
    const int nblk = K / QK_K;
    const int nvec = K / 16;  // 16-byte code vectors (= sub-blocks) per row
    const int4* wrow = w + (size_t)row * nvec;
    const signed char* srow = w_sub + (size_t)row * nvec;
    const float* drow = w_d + (size_t)row * nblk;
    float acc[TN] = {};  // zeros
    for (int u0 = 0; u0 < nvec; u0 += WARP_SIZE) {
        const int u = u0 + lane;
        int part[TN] = {};  // zeros
        if (u < nvec) {
            const int4 wv = __ldg(wrow + u);
            const int sc = __ldg(srow + u);
#pragma unroll
            for (int t = 0; t < TN; ++t) {
                if (t0 + t < n) {
                    const int4 qv =
                        *reinterpret_cast<const int4*>(q + (size_t)(t0 + t) * K + 16 * u);
                    int s = __dp4a(wv.x, qv.x, 0);
                    s = __dp4a(wv.y, qv.y, s);
                    s = __dp4a(wv.z, qv.z, s);
                    s = __dp4a(wv.w, qv.w, s);
                    part[t] = sc * s;
                }
            }
        }
#pragma unroll
        for (int t = 0; t < TN; ++t) {
            part[t] += __shfl_xor_sync(FULL_MASK, part[t], 1);
            part[t] += __shfl_xor_sync(FULL_MASK, part[t], 2);
            part[t] += __shfl_xor_sync(FULL_MASK, part[t], 4);
            part[t] += __shfl_xor_sync(FULL_MASK, part[t], 8);
        }
        // the step's blocks one by one, in block order; each op rounded in f32 (no FMA)
        for (int j = 0; j < WARP_SIZE / 16; ++j) {
            const int b = u0 / 16 + j;
            if (b >= nblk) {
                break;  // uniform across the warp
            }
            const float dw = drow[b];
#pragma unroll
            for (int t = 0; t < TN; ++t) {
                const int isum = __shfl_sync(FULL_MASK, part[t], 16 * j);
                const int tok = t0 + t;
                if (tok < n) {
                    acc[t] = q8k_block_add(acc[t], isum, dw, act_d[(size_t)tok * nblk + b]);
                }
            }
        }
    }
    store_row<TN>(acc, lane, row, t0, n, M, out_scale, y);
}

extern "C" __global__ void __launch_bounds__(ROWS_PER_BLOCK * WARP_SIZE) linear_q6_k(
    const int4* __restrict__ w, const signed char* __restrict__ w_sub,
    const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M, float out_scale)
{
    if (n == 1) {
        linear_q6k_rows<1>(w, w_sub, w_d, q, act_d, y, K, n, M, out_scale);
    } else {
        linear_q6k_rows<GEMM_TOKENS>(w, w_sub, w_d, q, act_d, y, K, n, M, out_scale);
    }
}
