// rmsnorm: f32 x [n, K], f32 weight [K] -> f32 [n, K], in ggml's order (the reference's):
// f32 squares summed in double, mean rounded to f32, scale = 1 / sqrt(mean + eps) in f32,
// y = (x * scale) * weight. Only the order of the double additions differs from the reference;
// it is norm.cuh's fixed tree, which the fused decode-layer kernels share.
// Grid n (one block per row), NORM_THREADS threads.
#include "norm.cuh"

extern "C" __global__ void __launch_bounds__(NORM_THREADS) rmsnorm(
    const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ y, int K,
    float eps)
{
    __shared__ NormScratch s;
    const int row = blockIdx.x;
    const float* xr = x + (size_t)row * K;
    float* yr = y + (size_t)row * K;
    const float scale = rms_scale(xr, K, eps, s);
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        yr[k] = normed(xr[k], scale, weight[k]);
    }
}
