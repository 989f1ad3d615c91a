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

// Sum of every thread's v over a block of NWARPS full warps (NWARPS * 32 threads); the result
// is valid in thread 0 only. s_sum: NWARPS shared ints. Exact (integers): order does not matter.
template <int NWARPS>
__device__ __forceinline__ int block_sum_int(int v, int* s_sum) {
    v = warp_sum_int(v);
    if ((threadIdx.x & (WARP_SIZE - 1)) == 0) {
        s_sum[threadIdx.x / WARP_SIZE] = v;
    }
    __syncthreads();
    int total = 0;
    if (threadIdx.x == 0) {
        for (int w = 0; w < NWARPS; ++w) {
            total += s_sum[w];
        }
    }
    return total;
}

// A matmul output times out_scale, unless that is 1 (one f32 multiply, as the reference).
__device__ __forceinline__ float apply_out_scale(float y, float out_scale) {
    return out_scale != 1.0f ? __fmul_rn(y, out_scale) : y;
}

// One 256-block of a K-quant x Q8_K dot (llama.cpp; TQ2_0 / TQ1_0 and Q6_K), block by block
// in block order: acc += f32(sumi_b) * (d_w_b * d_y_b), each op rounded in f32 (no FMA
// contraction), as the reference. Shared by the dp4a and the tensor-core kernels.
__device__ __forceinline__ float q8k_block_add(float acc, int sumi, float d_w, float d_y) {
    return __fadd_rn(acc, __fmul_rn((float)sumi, __fmul_rn(d_w, d_y)));
}

// The matmul epilogue of one output row: lane 0 of the row's warp stores y[t0 + t, row] =
// acc[t] (times out_scale unless that is 1: one f32 multiply, as the reference) for each of the
// TN tokens below n. y f32 [n, M].
template <int TN>
__device__ __forceinline__ void store_row(const float (&acc)[TN], int lane, int row, int t0,
                                          int n, int M, float out_scale, float* __restrict__ y) {
    if (lane != 0) {
        return;
    }
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        const int tok = t0 + t;
        if (tok < n) {
            y[(size_t)tok * M + row] = apply_out_scale(acc[t], out_scale);
        }
    }
}

// bf16 bits -> f32: exact (bf16 is the top half of an f32).
__device__ __forceinline__ float bf16_bits_to_float(unsigned short bits) {
    return __uint_as_float(((unsigned int)bits) << 16);
}

// f16 bits -> f32: exact.
__device__ __forceinline__ float f16_bits_to_float(unsigned short bits) {
    return __half2float(__ushort_as_half(bits));
}
