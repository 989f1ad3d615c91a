// relu2_mul and silu_mul: the FFN gating, f32 gate [n, F], up [n, F] -> new f32 [n, F].
// Elementwise over count = n * F values; (count, 1) items in blocks of ELEM_THREADS.
// Same op order as the reference: (r * r) * up and (g / (1 + exp(-g))) * up, each rounded in f32.
#include "common.cuh"

#define ELEM_THREADS 256

extern "C" __global__ void __launch_bounds__(ELEM_THREADS) relu2_mul(
    const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ y,
    int count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        const float r = fmaxf(gate[i], 0.0f);
        y[i] = __fmul_rn(__fmul_rn(r, r), up[i]);
    }
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS) silu_mul(
    const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ y,
    int count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        const float g = gate[i];
        // expf(-g) overflows to inf for g << 0, and g / inf = -0: the reference's limit too
        const float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
        y[i] = __fmul_rn(silu, up[i]);
    }
}
