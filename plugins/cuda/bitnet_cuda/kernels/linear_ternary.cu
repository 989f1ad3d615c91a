// linear_ternary: ternary weights [M, K] times f32 activations [n, K] -> f32 [n, M].
//
// Two activation quantizers (bit-exact with bitnet.formats.activations) and two matmul families,
// with the buffers and scalars of bitnet.hal.device_runtime.KERNELS in its order:
//   quantize_per_token_i8 + linear_i2s   I2_S, bitnet.cpp semantics
//   quantize_q8_k         + linear_tq    TQ2_0 and TQ1_0 (as I2_S-interleaved codes with f32
//                                        block scales, bitnet.hal.device_layout), llama.cpp's
//
// The row dots and epilogues are ternary_rows.cuh's, the quantizers' element arithmetic
// quantize.cuh's: the fused decode-layer kernels (decode_layer.cu) share both.
//
// Geometry (the table's MATMUL grid): one warp per output row, blockDim.x / 32 rows per block,
// grid (ceil(M / rows), ceil(n / TILE_N)); a tile of one token (decode) runs the TN = 1 path.
// Why a warp per row rather than a tiled GEMV: BitNet rows are short (K = 2560..6912 -> 640..1728
// bytes of codes), so 32 lanes reading 16 bytes each cover a row in 1-4 coalesced steps, and M =
// 2560..6912 rows give hundreds of blocks to hide memory latency; no shared memory or block barrier
// is needed. The GEMM variant keeps the same shape but lets each warp carry TN = GEMM_TOKENS
// tokens, so every weight vector read from DRAM is reused TN times; the TN activation rows (TN * K
// bytes) are shared by the block's warps through L1. On sm_80+ prompts of 16 tokens or more run
// linear_mma.cu's int8 tensor-core tiles instead (the same integer dots and epilogues).
#include "quantize.cuh"
#include "ternary_rows.cuh"

#define QUANT_THREADS 256
#define ROWS_PER_BLOCK 8  // the most rows a block holds (__launch_bounds__)
#define GEMM_TOKENS 8  // TILE_N: tokens a matmul work-group carries

// ---------------------------------------------------------------------------------------------
// activation quantizers

// Per-token absmax int8 (bitnet.cpp quantize_row_i8_s). Grid n, block QUANT_THREADS.
// x f32 [n, K] -> q int8 [n, K], scale f32 [n] (= 127 / max|x|).
extern "C" __global__ void __launch_bounds__(QUANT_THREADS) quantize_per_token_i8(
    const float* __restrict__ x, signed char* __restrict__ q, float* __restrict__ scale, int K)
{
    __shared__ float s_max[QUANT_THREADS / WARP_SIZE];
    __shared__ float s_scale;
    const int row = blockIdx.x;
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int warp = threadIdx.x / WARP_SIZE;
    const float* xr = x + (size_t)row * K;
    signed char* qr = q + (size_t)row * K;

    float amax = 0.0f;
    for (int k = threadIdx.x; k < K; k += QUANT_THREADS) {
        amax = fmaxf(amax, fabsf(xr[k]));
    }
    amax = warp_max_float(amax);
    if (lane == 0) {
        s_max[warp] = amax;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = s_max[0];
        for (int w = 1; w < QUANT_THREADS / WARP_SIZE; ++w) {
            m = fmaxf(m, s_max[w]);
        }
        s_scale = i8_scale(m);
        scale[row] = s_scale;
    }
    __syncthreads();

    const float s = s_scale;
    for (int k = threadIdx.x; k < K; k += QUANT_THREADS) {
        qr[k] = i8_value(xr[k], s);
    }
}

// ggml Q8_K. Grid (K / 256, n), block 256: one thread per element of one block.
// x f32 [n, K] -> q int8 [n, K], d f32 [n, K/256].
extern "C" __global__ void __launch_bounds__(QK_K) quantize_q8_k(
    const float* __restrict__ x, signed char* __restrict__ q, float* __restrict__ d, int K)
{
    __shared__ float s_a[QK_K / WARP_SIZE];
    __shared__ int s_i[QK_K / WARP_SIZE];
    __shared__ float s_max;
    const int blk = blockIdx.x;
    const int row = blockIdx.y;
    const int nblk = K / QK_K;
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int warp = threadIdx.x / WARP_SIZE;
    const size_t base = (size_t)row * K + (size_t)blk * QK_K;
    const float v = x[base + threadIdx.x];

    float a = fabsf(v);
    int idx = threadIdx.x;
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float oa = __shfl_xor_sync(FULL_MASK, a, offset);
        const int oi = __shfl_xor_sync(FULL_MASK, idx, offset);
        amax_pick(a, idx, oa, oi);
    }
    if (lane == 0) {
        s_a[warp] = a;
        s_i[warp] = idx;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < QK_K / WARP_SIZE; ++w) {
            amax_pick(a, idx, s_a[w], s_i[w]);
        }
        s_max = x[base + idx];  // signed: the element itself
    }
    __syncthreads();

    const float maxv = s_max;
    int qi = 0;
    if (maxv != 0.0f) {
        const float iscale = q8k_iscale(maxv);
        qi = q8k_value(iscale, v);
        if (threadIdx.x == 0) {
            d[(size_t)row * nblk + blk] = q8k_d(iscale);
        }
    } else if (threadIdx.x == 0) {
        d[(size_t)row * nblk + blk] = 0.0f;  // an all-zero block: d = 0, q = 0
    }
    q[base + threadIdx.x] = (signed char)qi;
}

// ---------------------------------------------------------------------------------------------
// I2_S: codes in the on-disk layout (row r at byte r*K/4; K % 128 == 0), one f32 tensor scale

template <int TN>
__device__ __forceinline__ void linear_i2s_rows(
    const uint4* __restrict__ w, const signed char* __restrict__ q,
    const float* __restrict__ act_scale, float* __restrict__ y, int K, int n, int M,
    float w_scale, float out_scale)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    const int t0 = blockIdx.y * TN;
    if (row >= M) {
        return;  // the whole warp leaves together: no shuffle or barrier is left waiting
    }
    int acc[TN];
    i2s_dots<TN>(w + (size_t)row * (K / 64), q, K, t0, n, lane, acc);
    if (lane != 0) {
        return;
    }
#pragma unroll
    for (int t = 0; t < TN; ++t) {
        const int tok = t0 + t;
        if (tok < n) {
            y[(size_t)tok * M + row] = i2s_output(acc[t], act_scale[tok], w_scale, out_scale);
        }
    }
}

extern "C" __global__ void __launch_bounds__(ROWS_PER_BLOCK * WARP_SIZE) linear_i2s(
    const uint4* __restrict__ w, const signed char* __restrict__ q,
    const float* __restrict__ act_scale, float* __restrict__ y, int K, int n, int M,
    float w_scale, float out_scale)
{
    if (n == 1) {
        linear_i2s_rows<1>(w, q, act_scale, y, K, n, M, w_scale, out_scale);
    } else {
        linear_i2s_rows<GEMM_TOKENS>(w, q, act_scale, y, K, n, M, w_scale, out_scale);
    }
}

// ---------------------------------------------------------------------------------------------
// TQ2_0 codes (TQ1_0 is repacked to them at load) in the I2_S interleave: per row, K/256 blocks
// of 64 code bytes (the on-disk qs with their fields reversed), f32 block scales w_d [M, K/256].

template <int TN>
__device__ __forceinline__ void linear_tq_rows(
    const uint4* __restrict__ w, const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M,
    float out_scale)
{
    const int lane = threadIdx.x & (WARP_SIZE - 1);
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    const int t0 = blockIdx.y * TN;
    if (row >= M) {
        return;
    }
    const int nblk = K / QK_K;
    float acc[TN];
    tq_sums<TN>(w + (size_t)row * nblk * 4, w_d + (size_t)row * nblk, q, act_d, K, t0, n, lane,
                acc);
    store_row<TN>(acc, lane, row, t0, n, M, out_scale, y);
}

extern "C" __global__ void __launch_bounds__(ROWS_PER_BLOCK * WARP_SIZE) linear_tq(
    const uint4* __restrict__ w, const float* __restrict__ w_d, const signed char* __restrict__ q,
    const float* __restrict__ act_d, float* __restrict__ y, int K, int n, int M, float out_scale)
{
    if (n == 1) {
        linear_tq_rows<1>(w, w_d, q, act_d, y, K, n, M, out_scale);
    } else {
        linear_tq_rows<GEMM_TOKENS>(w, w_d, q, act_d, y, K, n, M, out_scale);
    }
}
