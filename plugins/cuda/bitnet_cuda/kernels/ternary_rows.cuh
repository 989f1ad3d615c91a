// One output row of a ternary matmul, for TN tokens: the integer dots that linear_ternary.cu's
// matmuls and the fused decode-layer kernels (decode_layer.cu) share; their float epilogues are
// ternary.cuh's i2s_output and common.cuh's q8k_block_add (the tensor-core kernels' too).
//
// Weight codes stay 2-bit on the device; four codes at a time become int8 lanes of a 32-bit word
// ((word >> shift) & 0x03030303), turned into -1 / 0 / 1 bytes by a borrow-free byte subtract
// (ternary4), and meet four int8 activations in one __dp4a: sum((code - 1) * q), exact integers.
// One warp per row: lanes stride over the row's 16-byte code vectors. Activations q may sit in
// global or shared memory (16-byte aligned rows K bytes apart).
#pragma once

#include "quantize.cuh"
#include "ternary.cuh"  // ternary4, i2s_output (shared with linear_mma.cu)

// Bytes 0..15 of `pk` are bytes b0 .. b0+15 of a 32-byte group that serves 128 elements; byte b
// holds elements 32*g + b (g = 0..3), the I2_S interleave: g = 0 in bits 7:6 (shift 6 - 2g).
// `qt` points at activation element (group base + b0), 16-byte aligned. Adds sum((code-1) * q).
__device__ __forceinline__ int dot_codes16(const uint4 pk, const signed char* __restrict__ qt,
                                           int acc)
{
#pragma unroll
    for (int g = 0; g < 4; ++g) {
        const int shift = 6 - 2 * g;
        const int4 qv = *reinterpret_cast<const int4*>(qt + 32 * g);
        acc = __dp4a(ternary4((pk.x >> shift) & 0x03030303u), qv.x, acc);
        acc = __dp4a(ternary4((pk.y >> shift) & 0x03030303u), qv.y, acc);
        acc = __dp4a(ternary4((pk.z >> shift) & 0x03030303u), qv.z, acc);
        acc = __dp4a(ternary4((pk.w >> shift) & 0x03030303u), qv.w, acc);
    }
    return acc;
}

// I2_S (codes of row r at byte r*K/4; K % 128 == 0): acc[t] = the exact dot of row `wrow` with
// token t0 + t (t0 + t < n), in every lane of the warp.
template <int TN>
__device__ __forceinline__ void i2s_dots(const uint4* __restrict__ wrow,
                                         const signed char* __restrict__ q, int K, int t0, int n,
                                         int lane, int (&acc)[TN])
{
    const int nvec = K / 64;  // 16-byte vectors per row, 64 codes each
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        acc[t] = 0;
    }
    for (int u = lane; u < nvec; u += WARP_SIZE) {
        const uint4 pk = __ldg(wrow + u);
        const int base = (u >> 1) * 128 + (u & 1) * 16;  // 128-element group, byte offset in it
#pragma unroll
        for (int t = 0; t < TN; ++t) {
            if (t0 + t < n) {
                acc[t] = dot_codes16(pk, q + (size_t)(t0 + t) * K + base, acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        acc[t] = warp_sum_int(acc[t]);
    }
}

// TQ2_0 codes (TQ1_0 is repacked to them at load) in the I2_S interleave: per row, K/256 blocks
// of 64 code bytes, f32 block scales drow [K/256]. acc[t] = sum_b float(sumi_b) * (d_w_b *
// d_y_b) for token t0 + t, block by block in f32 as the reference (no FMA contraction), in
// every lane; act_d f32 [n, K/256].
template <int TN>
__device__ __forceinline__ void tq_sums(const uint4* __restrict__ wrow,
                                        const float* __restrict__ drow,
                                        const signed char* __restrict__ q,
                                        const float* __restrict__ act_d, int K, int t0, int n,
                                        int lane, float (&acc)[TN])
{
    const int nblk = K / QK_K;
    const int nvec = nblk * 4;  // four 16-byte vectors per 256-block
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        acc[t] = 0.0f;
    }
    // 32 lanes x 16 bytes = 8 blocks per step; lanes 4j .. 4j+3 share block j of the step
    for (int u0 = 0; u0 < nvec; u0 += WARP_SIZE) {
        const int u = u0 + lane;
        int part[TN] = {};  // zeros
        if (u < nvec) {
            const uint4 pk = __ldg(wrow + u);
            // block u/4; bytes 0..31 serve elements 0..127, bytes 32..63 elements 128..255
            const int base = (u >> 2) * QK_K + ((u >> 1) & 1) * 128 + (u & 1) * 16;
#pragma unroll
            for (int t = 0; t < TN; ++t) {
                if (t0 + t < n) {
                    part[t] = dot_codes16(pk, q + (size_t)(t0 + t) * K + base, 0);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < TN; ++t) {
            part[t] += __shfl_xor_sync(FULL_MASK, part[t], 1);
            part[t] += __shfl_xor_sync(FULL_MASK, part[t], 2);
        }
        // combine the step's blocks one by one, in block order, as the reference does:
        // acc += float(sumi_b) * (d_w_b * d_y_b), each op rounded in f32 (no FMA contraction)
        for (int j = 0; j < WARP_SIZE / 4; ++j) {
            const int b = u0 / 4 + j;
            if (b >= nblk) {
                break;  // uniform across the warp
            }
            const float dw = drow[b];
#pragma unroll
            for (int t = 0; t < TN; ++t) {
                const int raw = __shfl_sync(FULL_MASK, part[t], 4 * j);
                const int tok = t0 + t;
                if (tok < n) {
                    acc[t] = q8k_block_add(acc[t], raw, dw, act_d[(size_t)tok * nblk + b]);
                }
            }
        }
    }
}
