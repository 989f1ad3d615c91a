// NEOX rotation of one pair (a, b) by the f64 table entries (c, s), shared by rope.cu and the
// fused rope_attention (decode_layer.cu): computed in double without contraction (the
// reference's float64 a*c - b*s), rounded to f32 once.
#pragma once

#include "common.cuh"

__device__ __forceinline__ void rope_pair(float a, float b, double c, double s, float& out_a,
                                          float& out_b)
{
    const double da = (double)a;
    const double db = (double)b;
    out_a = (float)__dsub_rn(__dmul_rn(da, c), __dmul_rn(db, s));
    out_b = (float)__dadd_rn(__dmul_rn(da, s), __dmul_rn(db, c));
}
