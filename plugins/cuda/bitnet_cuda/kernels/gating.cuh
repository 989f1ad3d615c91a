// The FFN gatings' arithmetic, shared by gating.cu and the fused gate/up kernels
// (decode_layer.cu). Same op order as the reference: (r * r) * up and (g / (1 + exp(-g))) * up,
// each rounded in f32.
#pragma once

#include "common.cuh"

__device__ __forceinline__ float relu2_mul_value(float gate, float up)
{
    const float r = fmaxf(gate, 0.0f);
    return __fmul_rn(__fmul_rn(r, r), up);
}

__device__ __forceinline__ float silu_mul_value(float gate, float up)
{
    // expf(-g) overflows to inf for g << 0, and g / inf = -0: the reference's limit too
    const float silu = __fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate)));
    return __fmul_rn(silu, up);
}
