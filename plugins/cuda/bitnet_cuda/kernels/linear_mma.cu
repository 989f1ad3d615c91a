// linear_mma: the integer GEMMs of linear_ternary.cu and linear_float.cu (Q6_K) on int8 tensor
// cores, for prompts and wide batches (sm_80+).
//
// Entry points linear_i2s_mma, linear_tq_mma and linear_q6_k_mma take exactly linear_i2s's,
// linear_tq's and linear_q6_k's buffers and scalars (bitnet.hal.device_runtime.KERNELS) and
// compute the same result bit for bit: the integer dots are exact either way, and the float
// epilogues are the same functions (ternary.cuh's i2s_output, common.cuh's q8k_block_add and
// apply_out_scale) applied in the same order. The runtime offers them as the "mma" MatmulTile
// from 16 tokens on; GpuBackend sizes the grid from that tile.
//
// Geometry: a block of MMA_THREADS (4 warps) computes MMA_ROWS output rows x MMA_TOKENS tokens,
// grid (ceil(M / MMA_ROWS), ceil(n / MMA_TOKENS)); warp w owns rows 32 (w / 2) .. +31 and tokens
// 32 (w % 2) .. +31 of it: 2 x 4 tiles of mma.m16n8k32 (A = weights, rows x k; B = activations,
// k x tokens, which q's row-major [n, K] already is column by column). K is walked in chunks of
// MMA_CHUNK = 128 elements, one I2_S group (a 256-block is two of them): each chunk the block
// stages its 64 rows' weights as int8 in shared memory (ternary: 2-bit codes unpacked to
// -1 / 0 / 1 bytes, one 16-byte code vector a thread, ternary4 as the dp4a kernels; Q6_K: its
// int8 codes and sub-block scales as stored) and its 64 tokens' int8 activations beside them;
// rows past M and tokens past n are zeros, so they add nothing. Shared rows are padded to
// MMA_STRIDE bytes (36 words): the 32 lanes of a fragment load (row g, word t) hit 32 different
// banks. I2_S accumulates the whole row in the s32 accumulators (|dot| <= 128 K: no overflow);
// TQ and Q6_K restart them every 256-block and fold each block's sums into f32 in block order.
// Q6_K scales each 16-element sub-block's dot by its own integer sub-scale, so a k32 step runs
// two mma with the other half of B zeroed (b[1] = 0, then b[0] = 0: the layout keeps k 0..15 in
// b[0] and k 16..31 in b[1]) and adds sc_lo * lo + sc_hi * hi: the same exact isum_b as the dp4a
// kernel (|isum_b| < 2^31), at half the tensor-core rate (the head's K is short).
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

// One warp's 32 x 32 accumulators: [16-row tile][8-token tile][C register].
typedef int WarpAcc[2][4][4];

// The block's int8 tiles of one chunk: weights [MMA_ROWS][k], activations [MMA_TOKENS][k].
struct ChunkTiles {
    signed char (*w)[MMA_STRIDE];
    signed char (*q)[MMA_STRIDE];
};

// Elements k0 .. k0 + 127 of rows r0 .. r0 + 63 of an int8 matrix [rows, K] into a tile (zeros
// from row ``limit`` on): 512 vectors, 4 a thread. Activations (tokens) and Q6_K codes (rows).
static_assert(MMA_ROWS == MMA_TOKENS, "one staging loop serves both tiles");
__device__ __forceinline__ void stage_int8_rows(signed char (*tile)[MMA_STRIDE],
                                                const signed char* __restrict__ src, int K,
                                                int limit, int r0, int k0) {
#pragma unroll
    for (int i = 0; i < MMA_ROWS * MMA_CHUNK / 16 / MMA_THREADS; ++i) {
        const int v = threadIdx.x + MMA_THREADS * i;
        const int r = v >> 3;
        const int part = v & 7;
        int4 value = {0, 0, 0, 0};
        if (r0 + r < limit) {
            value = __ldg(reinterpret_cast<const int4*>(src + (size_t)(r0 + r) * K + k0) + part);
        }
        *reinterpret_cast<int4*>(&tile[r][16 * part]) = value;
    }
}

// The A fragments (2 row tiles) and B fragments (4 token tiles) of k-step ks (PTX layout,
// mma.cuh) for the calling lane of its warp's 32 x 32 part.
struct Fragments {
    unsigned int a[2][4];
    unsigned int b[4][2];
};

__device__ __forceinline__ int warp_row0() { return ((threadIdx.x / WARP_SIZE) >> 1) * 32; }
__device__ __forceinline__ int warp_token0() { return ((threadIdx.x / WARP_SIZE) & 1) * 32; }

__device__ __forceinline__ Fragments load_fragments(const ChunkTiles& s, int ks) {
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int g = lane >> 2;
    const int t = lane & 3;
    Fragments f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const signed char* lo = &s.w[warp_row0() + 16 * i + g][ks + 4 * t];
        const signed char* hi = &s.w[warp_row0() + 16 * i + g + 8][ks + 4 * t];
        f.a[i][0] = *reinterpret_cast<const unsigned int*>(lo);
        f.a[i][1] = *reinterpret_cast<const unsigned int*>(hi);
        f.a[i][2] = *reinterpret_cast<const unsigned int*>(lo + 16);
        f.a[i][3] = *reinterpret_cast<const unsigned int*>(hi + 16);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const signed char* col = &s.q[warp_token0() + 8 * j + g][ks + 4 * t];
        f.b[j][0] = *reinterpret_cast<const unsigned int*>(col);
        f.b[j][1] = *reinterpret_cast<const unsigned int*>(col + 16);
    }
    return f;
}

// Ternary codes (I2_S on disk; TQ as device_layout interleaves them): row r at byte r * K / 4,
// 32 bytes a 128-element group; byte b of a group holds elements 32 g + b (g = 0..3) at shift
// 6 - 2 g. One chunk is one group: 64 rows x 2 vectors, one 16-byte vector a thread.
struct TernaryWeights {
    const uint4* __restrict__ w;

    __device__ __forceinline__ void stage(const ChunkTiles& s, int K, int M, int m0,
                                          int k0) const {
        const int r = threadIdx.x >> 1;
        const int half = threadIdx.x & 1;
        uint4 pk = {0x55555555u, 0x55555555u, 0x55555555u, 0x55555555u};  // code 1: weight 0
        if (m0 + r < M) {
            pk = __ldg(w + (size_t)(m0 + r) * (K / 64) + k0 / 64 + half);
        }
#pragma unroll
        for (int g = 0; g < 4; ++g) {
            const int shift = 6 - 2 * g;
            int4 v;
            v.x = ternary4((pk.x >> shift) & 0x03030303u);
            v.y = ternary4((pk.y >> shift) & 0x03030303u);
            v.z = ternary4((pk.z >> shift) & 0x03030303u);
            v.w = ternary4((pk.w >> shift) & 0x03030303u);
            *reinterpret_cast<int4*>(&s.w[r][32 * g + 16 * half]) = v;
        }
    }

    // acc += the chunk's products: 4 k-steps x 2 x 4 tiles.
    __device__ __forceinline__ void multiply(const ChunkTiles& s, WarpAcc& acc) const {
#pragma unroll
        for (int ks = 0; ks < MMA_CHUNK; ks += 32) {
            const Fragments f = load_fragments(s, ks);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    mma_s8_m16n8k32(acc[i][j], f.a[i], f.b[j]);
                }
            }
        }
    }
};

// Q6_K split (bitnet.hal.device_layout.split_q6_k_ints): codes int8 [M, K] in -32..31,
// sub-block scales int8 [M, K/16]. A chunk: 64 rows x 128 codes (4 vectors a thread) and
// 64 x 8 sub-scales (4 a thread, one 32-bit word), the scales in `sub` (shared).
struct Q6KWeights {
    const int4* __restrict__ w;
    const signed char* __restrict__ w_sub;
    signed char (*sub)[MMA_CHUNK / 16];

    __device__ __forceinline__ void stage(const ChunkTiles& s, int K, int M, int m0,
                                          int k0) const {
        stage_int8_rows(s.w, reinterpret_cast<const signed char*>(w), K, M, m0, k0);
        const int r = threadIdx.x >> 1;
        const int half = threadIdx.x & 1;
        int sc = 0;
        if (m0 + r < M) {  // 4 sub-scales: a 4-byte aligned word (K / 16 % 8 == 0)
            sc = __ldg(reinterpret_cast<const int*>(w_sub + ((size_t)(m0 + r) * K + k0) / 16) +
                       half);
        }
        *reinterpret_cast<int*>(&sub[r][4 * half]) = sc;
    }

    // acc += sum over the chunk's sub-blocks of sc * (16-element dot): per k32 step, one mma on
    // k 0..15 (b[1] zeroed) and one on k 16..31 (b[0] zeroed), each scaled by its sub-scale.
    __device__ __forceinline__ void multiply(const ChunkTiles& s, WarpAcc& acc) const {
        const int g = (threadIdx.x & (WARP_SIZE - 1)) >> 2;
#pragma unroll 1  // unrolled, the k-steps' fragments and scales took 223 registers on sm_80
        for (int ks = 0; ks < MMA_CHUNK; ks += 32) {
            const Fragments f = load_fragments(s, ks);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = warp_row0() + 16 * i + g;  // C rows r (c 0, 1) and r + 8 (c 2, 3)
                const int sc[4] = {sub[r][ks / 16], sub[r][ks / 16 + 1], sub[r + 8][ks / 16],
                                   sub[r + 8][ks / 16 + 1]};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const unsigned int b_lo[2] = {f.b[j][0], 0u};
                    const unsigned int b_hi[2] = {0u, f.b[j][1]};
                    int lo[4] = {0, 0, 0, 0};
                    int hi[4] = {0, 0, 0, 0};
                    mma_s8_m16n8k32(lo, f.a[i], b_lo);
                    mma_s8_m16n8k32(hi, f.a[i], b_hi);
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        acc[i][j][c] += sc[2 * (c >> 1)] * lo[c] + sc[2 * (c >> 1) + 1] * hi[c];
                    }
                }
            }
        }
    }
};

// The output row and token of accumulator acc[i][j][c] of the calling thread (C/D layout).
__device__ __forceinline__ int acc_row(int m0, int i, int c) {
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    return m0 + warp_row0() + 16 * i + (lane >> 2) + 8 * (c >> 1);
}

__device__ __forceinline__ int acc_token(int t0, int j, int c) {
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    return t0 + warp_token0() + 8 * j + 2 * (lane & 3) + (c & 1);
}

// f(i, j, c) for each accumulator acc[i][j][c] of the calling thread.
template <class F>
__device__ __forceinline__ void each_acc(F f) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                f(i, j, c);
            }
        }
    }
}

// f(i, j, c, row, token) for each accumulator whose output row is below M and token below n.
template <class F>
__device__ __forceinline__ void each_output(int m0, int t0, int M, int n, F f) {
    each_acc([&](int i, int j, int c) {
        const int row = acc_row(m0, i, c);
        const int tok = acc_token(t0, j, c);
        if (row < M && tok < n) {
            f(i, j, c, row, tok);
        }
    });
}

__device__ __forceinline__ void zero_acc(WarpAcc& acc) {
    each_acc([&](int i, int j, int c) { acc[i][j][c] = 0; });
}

// acc += the products of K elements k_begin .. k_end - 1 (whole chunks), staged chunk by chunk.
template <class W>
__device__ __forceinline__ void accumulate(const W& weights, const ChunkTiles& s,
                                           const signed char* __restrict__ q, WarpAcc& acc,
                                           int K, int n, int M, int m0, int t0, int k_begin,
                                           int k_end) {
    for (int k0 = k_begin; k0 < k_end; k0 += MMA_CHUNK) {
        weights.stage(s, K, M, m0, k0);
        stage_int8_rows(s.q, q, K, n, t0, k0);
        __syncthreads();
        weights.multiply(s, acc);
        __syncthreads();  // the tiles are rewritten next chunk
    }
}

// A K-quant x Q8_K GEMM (TQ, Q6_K): per 256-block b the exact integer sums, then
// out += f32(sum_b) * (d_w_b * d_y_b) block by block (q8k_block_add); y = out (* out_scale).
template <class W>
__device__ __forceinline__ void blockwise_gemm(const W& weights, const ChunkTiles& s,
                                               const float* __restrict__ w_d,
                                               const signed char* __restrict__ q,
                                               const float* __restrict__ act_d,
                                               float* __restrict__ y, int K, int n, int M,
                                               float out_scale) {
    const int m0 = blockIdx.x * MMA_ROWS;
    const int t0 = blockIdx.y * MMA_TOKENS;
    const int nblk = K / QK_K;
    float out[2][4][4] = {};  // zeros
    WarpAcc acc;
    for (int blk = 0; blk < nblk; ++blk) {
        zero_acc(acc);
        accumulate(weights, s, q, acc, K, n, M, m0, t0, blk * QK_K, (blk + 1) * QK_K);
        each_output(m0, t0, M, n, [&](int i, int j, int c, int row, int tok) {
            out[i][j][c] = q8k_block_add(out[i][j][c], acc[i][j][c],
                                         w_d[(size_t)row * nblk + blk],
                                         act_d[(size_t)tok * nblk + blk]);
        });
    }
    each_output(m0, t0, M, n, [&](int i, int j, int c, int row, int tok) {
        y[(size_t)tok * M + row] = apply_out_scale(out[i][j][c], out_scale);
    });
}

// I2_S x per-token int8 (linear_i2s's arguments); K % 128 == 0.
extern "C" __global__ void __launch_bounds__(MMA_THREADS) linear_i2s_mma(
    const uint4* __restrict__ w, const signed char* __restrict__ q,
    const float* __restrict__ act_scale, float* __restrict__ y, int K, int n, int M,
    float w_scale, float out_scale)
{
    __shared__ __align__(16) signed char sw[MMA_ROWS][MMA_STRIDE];
    __shared__ __align__(16) signed char sq[MMA_TOKENS][MMA_STRIDE];
    const ChunkTiles s{sw, sq};
    const int m0 = blockIdx.x * MMA_ROWS;
    const int t0 = blockIdx.y * MMA_TOKENS;
    WarpAcc acc;
    zero_acc(acc);
    accumulate(TernaryWeights{w}, s, q, acc, K, n, M, m0, t0, 0, K);
    each_output(m0, t0, M, n, [&](int i, int j, int c, int row, int tok) {
        y[(size_t)tok * M + row] = i2s_output(acc[i][j][c], act_scale[tok], w_scale, out_scale);
    });
}

// TQ2_0 / TQ1_0 codes (I2_S interleave, f32 block scales w_d [M, K/256]) x Q8_K (linear_tq's
// arguments).
extern "C" __global__ void __launch_bounds__(MMA_THREADS) linear_tq_mma(
    const uint4* __restrict__ w, const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M, float out_scale)
{
    __shared__ __align__(16) signed char sw[MMA_ROWS][MMA_STRIDE];
    __shared__ __align__(16) signed char sq[MMA_TOKENS][MMA_STRIDE];
    blockwise_gemm(TernaryWeights{w}, ChunkTiles{sw, sq}, w_d, q, act_d, y, K, n, M,
                   out_scale);
}

// Q6_K x Q8_K (linear_q6_k's arguments; f32 block scales w_d [M, K/256]).
extern "C" __global__ void __launch_bounds__(MMA_THREADS) linear_q6_k_mma(
    const int4* __restrict__ w, const signed char* __restrict__ w_sub,
    const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M, float out_scale)
{
    __shared__ __align__(16) signed char sw[MMA_ROWS][MMA_STRIDE];
    __shared__ __align__(16) signed char sq[MMA_TOKENS][MMA_STRIDE];
    __shared__ __align__(16) signed char ssub[MMA_ROWS][MMA_CHUNK / 16];
    blockwise_gemm(Q6KWeights{w, w_sub, ssub}, ChunkTiles{sw, sq}, w_d, q, act_d, y, K, n, M,
                   out_scale);
}
