// Shared device helpers for the bitnet-cuda kernels (sm_75 and newer).
//
// Every kernel file includes this header; the PTX build hashes it together with the .cu sources,
// so a change here marks every shipped PTX file stale.
#pragma once

#include <cuda_fp16.h>

#define FULL_MASK 0xffffffffu
#define WARP_SIZE 32

// Sum over the 32 lanes of a warp; every lane gets the result. Exact for integers.
__device__ __forceinline__ int warp_sum_int(int v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_sum_float(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

__device__ __forceinline__ double warp_sum_double(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_max_float(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}

// bf16 bits -> f32: exact (bf16 is the top half of an f32).
__device__ __forceinline__ float bf16_bits_to_float(unsigned short bits) {
    return __uint_as_float(((unsigned int)bits) << 16);
}

// f16 bits -> f32: exact.
__device__ __forceinline__ float f16_bits_to_float(unsigned short bits) {
    return __half2float(__ushort_as_half(bits));
}
