// The activation quantizers' arithmetic (bit-exact with bitnet.formats.activations), shared by
// linear_ternary.cu's quantize kernels and the fused decode-layer kernels (decode_layer.cu).
#pragma once

#include "common.cuh"

#define QK_K 256

// Per-token int8 (bitnet.cpp): s = float32(127 / max(1e-5, amax)), the floor and the divide in
// float64, rounded to f32 once.
__device__ __forceinline__ float i8_scale(float amax)
{
    const double md = fmax(1e-5, (double)amax);
    return (float)(127.0 / md);
}

// One element: f32 product, round half to even, clip to int8.
__device__ __forceinline__ signed char i8_value(float x, float s)
{
    float v = rintf(__fmul_rn(x, s));
    v = fminf(fmaxf(v, -128.0f), 127.0f);
    return (signed char)(int)v;
}

// (|x|, index) reduction step of Q8_K's amax: the larger |x| wins; on a tie the lower index
// (the first found). A total order, so any reduction tree picks the same element.
__device__ __forceinline__ void amax_pick(float& a, int& idx, float other_a, int other_idx)
{
    if (other_a > a || (other_a == a && other_idx < idx)) {
        a = other_a;
        idx = other_idx;
    }
}

// Q8_K (llama.cpp) of one 256-block whose signed element of largest |x| is maxv != 0:
// iscale = -127 / maxv, q = min(127, rint(iscale * x)), d = 1 / iscale.
__device__ __forceinline__ float q8k_iscale(float maxv)
{
    return __fdiv_rn(-127.0f, maxv);
}

__device__ __forceinline__ signed char q8k_value(float iscale, float x)
{
    return (signed char)min(127, (int)rintf(__fmul_rn(iscale, x)));
}

__device__ __forceinline__ float q8k_d(float iscale)
{
    return __fdiv_rn(1.0f, iscale);
}
