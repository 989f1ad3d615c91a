// rmsnorm: f32 x [n, K], f32 weight [K] -> f32 [n, K], in ggml's order (the reference's):
// f32 squares summed in double, mean rounded to f32, scale = 1 / sqrt(mean + eps) in f32,
// y = (x * scale) * weight. Only the order of the double additions differs from the reference.
// Grid n (one block per row), NORM_THREADS threads.
#include "common.cuh"

#define NORM_THREADS 256

extern "C" __global__ void __launch_bounds__(NORM_THREADS) rmsnorm(
    const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ y, int K,
    float eps)
{
    __shared__ double s_sum[NORM_THREADS / WARP_SIZE];
    __shared__ float s_scale;
    const int row = blockIdx.x;
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int warp = threadIdx.x / WARP_SIZE;
    const float* xr = x + (size_t)row * K;
    float* yr = y + (size_t)row * K;

    double sum = 0.0;
    for (int k = threadIdx.x; k < K; k += NORM_THREADS) {
        const float v = xr[k];
        sum += (double)__fmul_rn(v, v);
    }
    sum = warp_sum_double(sum);
    if (lane == 0) {
        s_sum[warp] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < NORM_THREADS / WARP_SIZE; ++w) {
            total += s_sum[w];
        }
        const float mean = (float)(total / (double)K);
        s_scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    }
    __syncthreads();
    const float scale = s_scale;
    for (int k = threadIdx.x; k < K; k += NORM_THREADS) {
        yr[k] = __fmul_rn(__fmul_rn(xr[k], scale), weight[k]);
    }
}
