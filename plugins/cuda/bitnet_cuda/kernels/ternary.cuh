// Ternary weight codes and the float epilogues of the ternary matmuls, shared by the dp4a
// kernels (linear_ternary.cu) and the tensor-core ones (linear_mma.cu): both finish the same
// exact integer dots with these same f32 operations in the same order, so they agree bit for
// bit (and with the reference, bitnet.formats).
#pragma once

#include "common.cuh"

// Four codes 0..2 (bytes of w) -> four signed bytes code - 1: the high bit of each byte set
// first, so the subtraction borrows across no byte boundary.
__device__ __forceinline__ int ternary4(unsigned int w) {
    return (int)(((w | 0x80808080u) - 0x01010101u) ^ 0x80808080u);
}

// I2_S (bitnet.cpp): y = (f32(dot) / act_scale) * w_scale, then * out_scale unless that is 1.
__device__ __forceinline__ float i2s_output(int dot, float act_scale, float w_scale,
                                            float out_scale) {
    return apply_out_scale(__fmul_rn(__fdiv_rn((float)dot, act_scale), w_scale), out_scale);
}

// TQ2_0 / TQ1_0 x Q8_K (llama.cpp), block by block in block order:
// acc += f32(sumi_b) * (d_w_b * d_y_b), each op rounded in f32 (no FMA contraction).
__device__ __forceinline__ float tq_block_add(float acc, int sumi, float d_w, float d_y) {
    return __fadd_rn(acc, __fmul_rn((float)sumi, __fmul_rn(d_w, d_y)));
}
