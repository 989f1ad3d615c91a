// RMSNorm's scale and the normalized value, shared by the rmsnorm kernel and the fused
// decode-layer kernels (decode_layer.cu): one reduction tree whatever the block size, so a
// matmul prologue of 128 threads gives the rmsnorm kernel's (256 threads) bits.
//
// The tree: NORM_THREADS virtual lanes; lane v sums the f32 squares of elements v, v + 256, ...
// in double, in order; each virtual warp of 32 lanes adds its lanes by the xor butterfly
// (warp_sum_double); thread 0 adds the 8 warp sums in order. A block of 32 * w threads (w
// dividing 8) runs virtual warps warp, warp + w, ... one after another: the same additions.
// Then ggml's order: mean rounded to f32, scale = 1 / sqrt(mean + eps) in f32,
// y = (x * scale) * weight.
#pragma once

#include "common.cuh"

#define NORM_THREADS 256
#define NORM_WARPS (NORM_THREADS / WARP_SIZE)

// What rms_scale needs in shared memory.
struct NormScratch {
    double sum[NORM_WARPS];
    float red[NORM_WARPS];  // other block reductions of the fused kernels (block_amax)
    float scale;
};

// 1 / sqrt(mean(x^2) + eps) of the K values at x, in every thread of the block. Ends with a
// barrier (s may be reused after it).
__device__ __forceinline__ float rms_scale(const float* __restrict__ x, int K, float eps,
                                           NormScratch& s)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    for (int vw = threadIdx.x / WARP_SIZE; vw < NORM_WARPS; vw += blockDim.x / WARP_SIZE) {
        double sum = 0.0;
        for (int k = vw * WARP_SIZE + lane; k < K; k += NORM_THREADS) {
            const float v = x[k];
            sum += (double)__fmul_rn(v, v);
        }
        sum = warp_sum_double(sum);
        if (lane == 0) {
            s.sum[vw] = sum;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < NORM_WARPS; ++w) {
            total += s.sum[w];
        }
        const float mean = (float)(total / (double)K);
        s.scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    }
    __syncthreads();
    const float scale = s.scale;
    __syncthreads();
    return scale;
}

// One normalized element: (x * scale) * weight, each product rounded in f32.
__device__ __forceinline__ float normed(float x, float scale, float weight)
{
    return __fmul_rn(__fmul_rn(x, scale), weight);
}
