// Ternary weight codes and I2_S's float epilogue, shared by the dp4a kernels
// (linear_ternary.cu) and the tensor-core ones (linear_mma.cu): both finish the same exact
// integer dots with the same f32 operations in the same order (TQ's: common.cuh's
// q8k_block_add), so they agree bit for bit (and with the reference, bitnet.formats).
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
