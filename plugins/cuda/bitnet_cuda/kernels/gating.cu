// relu2_mul and silu_mul: the FFN gating, f32 gate [n, F], up [n, F] -> new f32 [n, F].
// Elementwise over count = n * F values; (count, 1) items in blocks of ELEM_THREADS.
// The arithmetic is gating.cuh's (shared with the fused gate/up kernels).
#include "gating.cuh"

#define ELEM_THREADS 256

extern "C" __global__ void __launch_bounds__(ELEM_THREADS) relu2_mul(
    const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ y,
    int count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        y[i] = relu2_mul_value(gate[i], up[i]);
    }
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS) silu_mul(
    const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ y,
    int count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        y[i] = silu_mul_value(gate[i], up[i]);
    }
}
