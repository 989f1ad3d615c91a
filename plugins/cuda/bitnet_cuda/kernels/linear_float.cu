// linear_float: float-format weight [M, K] times f32 x [n, K] -> f32 [n, M] (the output head,
// and float checkpoints run without ternarizing). Any summation order is allowed by the contract.
//
// Geometry as linear_ternary.cu: one warp per output row, ROWS_PER_BLOCK rows per block, grid
// (ceil(M / ROWS_PER_BLOCK), ceil(n / TN)); TN = 1 (gemv) or GEMM_TOKENS (gemm: each weight read
// serves TN tokens). When K % 8 == 0 each lane reads 8 consecutive weights per step (one 16-byte
// load for f16), else one weight per lane per step.
#include "float_weights.cuh"

#define ROWS_PER_BLOCK 8
#define GEMM_TOKENS 8

template <class W, int TN>
__device__ __forceinline__ void linear_float_rows(const W wt, const float* __restrict__ x,
                                                  float out_scale, float* __restrict__ y,
                                                  int M, int K, int n)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / WARP_SIZE;
    const int t0 = blockIdx.y * TN;
    if (row >= M) {
        return;
    }
    const size_t rbase = (size_t)row * K;
    float acc[TN];
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        acc[t] = 0.0f;
    }
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
    if (lane != 0) {
        return;
    }
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        if (t0 + t < n) {
            float yv = acc[t];
            if (out_scale != 1.0f) {
                yv = __fmul_rn(yv, out_scale);
            }
            y[(size_t)(t0 + t) * M + row] = yv;
        }
    }
}

// One gemv and one gemm entry point per device layout.
#define LINEAR_FLOAT_ENTRY(NAME, TN, W, PARAMS, INIT)                                          \
    extern "C" __global__ void __launch_bounds__(ROWS_PER_BLOCK * WARP_SIZE) NAME(              \
        PARAMS, const float* __restrict__ x, float out_scale, float* __restrict__ y, int M,      \
        int K, int n)                                                                          \
    {                                                                                          \
        const W wt = INIT;                                                                     \
        linear_float_rows<W, TN>(wt, x, out_scale, y, M, K, n);                                \
    }

#define F32_PARAMS const float* __restrict__ w
#define F16_PARAMS const unsigned short* __restrict__ w
#define I8G_PARAMS const signed char* __restrict__ w, const float* __restrict__ scale, int group

LINEAR_FLOAT_ENTRY(linear_f32_gemv, 1, F32Weights, F32_PARAMS, {w})
LINEAR_FLOAT_ENTRY(linear_f32_gemm, GEMM_TOKENS, F32Weights, F32_PARAMS, {w})
LINEAR_FLOAT_ENTRY(linear_f16_gemv, 1, F16Weights, F16_PARAMS, {w})
LINEAR_FLOAT_ENTRY(linear_f16_gemm, GEMM_TOKENS, F16Weights, F16_PARAMS, {w})
LINEAR_FLOAT_ENTRY(linear_bf16_gemv, 1, BF16Weights, F16_PARAMS, {w})
LINEAR_FLOAT_ENTRY(linear_bf16_gemm, GEMM_TOKENS, BF16Weights, F16_PARAMS, {w})
LINEAR_FLOAT_ENTRY(linear_i8g_gemv, 1, I8GWeights, I8G_PARAMS, (I8GWeights{w, scale, group}))
LINEAR_FLOAT_ENTRY(linear_i8g_gemm, GEMM_TOKENS, I8GWeights, I8G_PARAMS,
                   (I8GWeights{w, scale, group}))
