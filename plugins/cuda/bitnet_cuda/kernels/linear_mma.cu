// linear_mma: the ternary GEMMs of linear_ternary.cu on int8 tensor cores, for prompts (sm_80+).
//
// Entry points linear_i2s_mma and linear_tq_mma take exactly linear_i2s's and linear_tq's buffers
// and scalars (bitnet.hal.device_runtime.KERNELS) and compute the same result bit for bit: the
// integer dots sum((code - 1) * q) are exact either way, and the float epilogues are the same
// functions (ternary.cuh) applied in the same order. The runtime offers them as the "mma"
// MatmulTile from 16 tokens on; GpuBackend sizes the grid from that tile.
//
// Geometry: a block of MMA_THREADS (4 warps) computes MMA_ROWS output rows x MMA_TOKENS tokens,
// grid (ceil(M / MMA_ROWS), ceil(n / MMA_TOKENS)); warp w owns rows 32 (w / 2) .. +31 and tokens
// 32 (w % 2) .. +31 of it: 2 x 4 tiles of mma.m16n8k32 (A = weights, rows x k; B = activations,
// k x tokens, which q's row-major [n, K] already is column by column). K is walked in chunks of
// MMA_CHUNK = 128 elements, one I2_S group (TQ's 256-blocks are two of them): each chunk the block
// unpacks its 64 rows' 2-bit codes to -1 / 0 / 1 bytes in shared memory (one 16-byte code vector
// a thread: ternary4, as the dp4a kernels) and copies its 64 tokens' int8 activations beside
// them; rows past M and tokens past n are zeros, so they add nothing. Shared rows are padded to
// MMA_STRIDE bytes (36 words): the 32 lanes of a fragment load (row g, word t) hit 32 different
// banks. I2_S accumulates the whole row in the s32 accumulators (|dot| <= 128 K: no overflow);
// TQ restarts them every 256-block and folds each block's sums into f32 in block order.
//
// Not tuned (no GPU was available when this was written): no cp.async double buffering, no
// ldmatrix; the tile was chosen for simplicity and an even split of the work.
#include "mma.cuh"
#include "ternary.cuh"

#define MMA_THREADS 128
#define MMA_ROWS 64
#define MMA_TOKENS 64
#define MMA_CHUNK 128
#define MMA_STRIDE (MMA_CHUNK + 16)
#define QK_K 256

// One warp's 32 x 32 accumulators: [16-row tile][8-token tile][C register].
typedef int WarpAcc[2][4][4];

// Stage K elements k0 .. k0 + 127 of the block's weight rows (m0 ..) and tokens (t0 ..).
// Codes: row r at byte r * K / 4 (I2_S on disk; TQ as device_layout interleaves it), 32 bytes a
// 128-element group; byte b of a group holds elements 32 g + b (g = 0..3) at shift 6 - 2 g.
__device__ __forceinline__ void stage_chunk(signed char (*sw)[MMA_STRIDE],
                                            signed char (*sq)[MMA_STRIDE],
                                            const uint4* __restrict__ w,
                                            const signed char* __restrict__ q, int K, int n, int M,
                                            int m0, int t0, int k0) {
    const int r = threadIdx.x >> 1;  // 2 threads a row, 16 code bytes each
    const int half = threadIdx.x & 1;
    const int row = m0 + r;
    uint4 pk = {0x55555555u, 0x55555555u, 0x55555555u, 0x55555555u};  // code 1: weight 0
    if (row < M) {
        pk = __ldg(w + (size_t)row * (K / 64) + k0 / 64 + half);
    }
#pragma unroll
    for (int g = 0; g < 4; ++g) {
        const int shift = 6 - 2 * g;
        int* dst = reinterpret_cast<int*>(&sw[r][32 * g + 16 * half]);
        dst[0] = ternary4((pk.x >> shift) & 0x03030303u);
        dst[1] = ternary4((pk.y >> shift) & 0x03030303u);
        dst[2] = ternary4((pk.z >> shift) & 0x03030303u);
        dst[3] = ternary4((pk.w >> shift) & 0x03030303u);
    }
    // activations: MMA_TOKENS x 128 bytes = 512 vectors, 4 a thread
#pragma unroll
    for (int i = 0; i < MMA_TOKENS * MMA_CHUNK / 16 / MMA_THREADS; ++i) {
        const int v = threadIdx.x + MMA_THREADS * i;
        const int tok_r = v >> 3;
        const int part = v & 7;
        int4 qv = {0, 0, 0, 0};
        if (t0 + tok_r < n) {
            qv = *reinterpret_cast<const int4*>(q + (size_t)(t0 + tok_r) * K + k0 + 16 * part);
        }
        *reinterpret_cast<int4*>(&sq[tok_r][16 * part]) = qv;
    }
}

// acc += this chunk's products (the warp's 2 x 4 tiles, 4 k-steps of 32).
__device__ __forceinline__ void multiply_chunk(WarpAcc& acc,
                                               const signed char (*sw)[MMA_STRIDE],
                                               const signed char (*sq)[MMA_STRIDE]) {
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int g = lane >> 2;
    const int t = lane & 3;
    const int wr = (warp >> 1) * 32;  // the warp's first row and token in the block tile
    const int wt = (warp & 1) * 32;
#pragma unroll
    for (int ks = 0; ks < MMA_CHUNK; ks += 32) {
        unsigned int a[2][4];
        unsigned int b[4][2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const signed char* lo = &sw[wr + 16 * i + g][ks + 4 * t];
            const signed char* hi = &sw[wr + 16 * i + g + 8][ks + 4 * t];
            a[i][0] = *reinterpret_cast<const unsigned int*>(lo);
            a[i][1] = *reinterpret_cast<const unsigned int*>(hi);
            a[i][2] = *reinterpret_cast<const unsigned int*>(lo + 16);
            a[i][3] = *reinterpret_cast<const unsigned int*>(hi + 16);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const signed char* col = &sq[wt + 8 * j + g][ks + 4 * t];
            b[j][0] = *reinterpret_cast<const unsigned int*>(col);
            b[j][1] = *reinterpret_cast<const unsigned int*>(col + 16);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                mma_s8_m16n8k32(acc[i][j], a[i], b[j]);
            }
        }
    }
}

// The output row and token of accumulator acc[i][j][c] of the calling thread (C/D layout).
__device__ __forceinline__ int acc_row(int m0, int i, int c) {
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    return m0 + ((threadIdx.x / WARP_SIZE) >> 1) * 32 + 16 * i + (lane >> 2) + 8 * (c >> 1);
}

__device__ __forceinline__ int acc_token(int t0, int j, int c) {
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    return t0 + ((threadIdx.x / WARP_SIZE) & 1) * 32 + 8 * j + 2 * (lane & 3) + (c & 1);
}

__device__ __forceinline__ void zero_acc(WarpAcc& acc) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                acc[i][j][c] = 0;
            }
        }
    }
}

// I2_S x per-token int8 (linear_i2s's arguments); K % 128 == 0.
extern "C" __global__ void __launch_bounds__(MMA_THREADS) linear_i2s_mma(
    const uint4* __restrict__ w, const signed char* __restrict__ q,
    const float* __restrict__ act_scale, float* __restrict__ y, int K, int n, int M,
    float w_scale, float out_scale)
{
    __shared__ __align__(16) signed char sw[MMA_ROWS][MMA_STRIDE];
    __shared__ __align__(16) signed char sq[MMA_TOKENS][MMA_STRIDE];
    const int m0 = blockIdx.x * MMA_ROWS;
    const int t0 = blockIdx.y * MMA_TOKENS;
    WarpAcc acc;
    zero_acc(acc);
    for (int k0 = 0; k0 < K; k0 += MMA_CHUNK) {
        stage_chunk(sw, sq, w, q, K, n, M, m0, t0, k0);
        __syncthreads();
        multiply_chunk(acc, sw, sq);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int row = acc_row(m0, i, c);
                const int tok = acc_token(t0, j, c);
                if (row < M && tok < n) {
                    y[(size_t)tok * M + row] = i2s_output(acc[i][j][c], act_scale[tok], w_scale,
                                                          out_scale);
                }
            }
        }
    }
}

// TQ2_0 / TQ1_0 codes (I2_S interleave, f32 block scales w_d [M, K/256]) x Q8_K (linear_tq's
// arguments): the integer sums of each 256-block, then acc += sumi * (d_w * d_y) block by block.
extern "C" __global__ void __launch_bounds__(MMA_THREADS) linear_tq_mma(
    const uint4* __restrict__ w, const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M, float out_scale)
{
    __shared__ __align__(16) signed char sw[MMA_ROWS][MMA_STRIDE];
    __shared__ __align__(16) signed char sq[MMA_TOKENS][MMA_STRIDE];
    const int m0 = blockIdx.x * MMA_ROWS;
    const int t0 = blockIdx.y * MMA_TOKENS;
    const int nblk = K / QK_K;
    float out[2][4][4] = {};  // zeros
    WarpAcc acc;
    for (int blk = 0; blk < nblk; ++blk) {
        zero_acc(acc);
        for (int k0 = blk * QK_K; k0 < (blk + 1) * QK_K; k0 += MMA_CHUNK) {
            stage_chunk(sw, sq, w, q, K, n, M, m0, t0, k0);
            __syncthreads();
            multiply_chunk(acc, sw, sq);
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    const int row = acc_row(m0, i, c);
                    const int tok = acc_token(t0, j, c);
                    if (row < M && tok < n) {
                        out[i][j][c] = tq_block_add(out[i][j][c], acc[i][j][c],
                                                    w_d[(size_t)row * nblk + blk],
                                                    act_d[(size_t)tok * nblk + blk]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int row = acc_row(m0, i, c);
                const int tok = acc_token(t0, j, c);
                if (row < M && tok < n) {
                    y[(size_t)tok * M + row] = apply_out_scale(out[i][j][c], out_scale);
                }
            }
        }
    }
}
