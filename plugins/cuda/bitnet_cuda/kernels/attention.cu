// attention: causal softmax attention over a device-side f16 KV cache.
//
//   kv_store   k, v f32 [n, Hkv * D] -> the cache rows of positions step[i] of `layer` in the
//              caches (f16 [n_layers, n_ctx, Hkv * D] each), rounded to nearest like the
//              reference
//   attention  q f32 [n, H * D] -> f32 [n, H * D]; row i (position step[i]) sees positions
//              0 .. step[i]; query head h reads kv head h / (H / Hkv). q is rounded to f16
//              before the q.K product, as ggml's F16 dot (and the contract) does
//
// Positions are read from device memory (a captured step replays at new positions; the rows
// of many sequences, attention_rows, each sit at their own), and position p of row i lives in
// the cache row of its block table (table + i * table_stride, see cache_row; block 0: no
// table). Keys are visited in position order whatever rows hold them, so a paged cache gives
// a contiguous one's bits. Arguments as bitnet.hal.device_runtime.KERNELS orders them.
// attention keeps its scores in registers (online softmax), so the table's `scores` scratch
// (and its `span`) go unused.
//
// Geometry: kv_store (D * Hkv / 2, n) items, one per pair of elements; attention grid (H, n),
// ATT_WARPS warps per block. Warp w takes keys w, w + ATT_WARPS, ...
// with an online (running max) softmax in f32; the warps' partial results are merged at the end.
// The reference subtracts the global max instead; the results agree to f32 rounding (the
// validation suite's tolerance). D <= ATT_MAX_DIM (the host checks). For long contexts with a
// single token (decode) only H blocks run: a split-K (flash-decoding) pass would use the GPU
// better; not done: on an H100 a 2B decode step is bound by launch overhead, not by this kernel.
#include "attention.cuh"

#define KV_THREADS 256

// One item per pair of elements of a row: grid (width / 2, n) items in blocks of KV_THREADS.
extern "C" __global__ void __launch_bounds__(KV_THREADS) kv_store(
    const float* __restrict__ k, const float* __restrict__ v, __half* __restrict__ k_cache,
    __half* __restrict__ v_cache, const int* __restrict__ step, const int* __restrict__ table,
    int layer, int n_ctx, int width, int block, int table_stride)
{
    const int c = 2 * (blockIdx.x * blockDim.x + threadIdx.x);
    const int i = blockIdx.y;
    if (c >= width) {
        return;
    }
    const size_t row = cache_row(table + (size_t)i * table_stride, block, step[i]);
    const size_t dst = ((size_t)layer * n_ctx + row) * width + c;
    const size_t src = (size_t)i * width + c;
    k_cache[dst] = __float2half_rn(k[src]);
    k_cache[dst + 1] = __float2half_rn(k[src + 1]);
    v_cache[dst] = __float2half_rn(v[src]);
    v_cache[dst + 1] = __float2half_rn(v[src + 1]);
}

// Block (h, i) of grid (H, n): query head h of row i of q, against `layer` of the caches up to
// position `last` through `table`; query head h reads KV head h / (H / Hkv).
__device__ __forceinline__ void attend_block(
    const float* __restrict__ q, const __half* __restrict__ k_cache,
    const __half* __restrict__ v_cache, const int* __restrict__ table, int block,
    float* __restrict__ out, int layer, int last, int n_heads, int n_kv_heads, int head_dim,
    int n_ctx, float score_scale)
{
    const int h = blockIdx.x;
    const int width = n_kv_heads * head_dim;
    const size_t q_off = ((size_t)blockIdx.y * n_heads + h) * head_dim;
    const size_t kv_off =
        (size_t)layer * n_ctx * width + (size_t)(h / (n_heads / n_kv_heads)) * head_dim;
    attend(q + q_off, k_cache + kv_off, v_cache + kv_off, table, block, out + q_off, last,
           head_dim, width, score_scale, nullptr, nullptr);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE) attention(
    const float* __restrict__ q, const __half* __restrict__ k_cache,
    const __half* __restrict__ v_cache, const int* __restrict__ step,
    const int* __restrict__ table, float* __restrict__ scores, float* __restrict__ out,
    int layer, int n_ctx, int n_heads, int n_kv_heads, int head_dim, float score_scale,
    int block, int table_stride, int span)
{
    const int i = blockIdx.y;
    attend_block(q, k_cache, v_cache, table + (size_t)i * table_stride, block, out, layer,
                 step[i], n_heads, n_kv_heads, head_dim, n_ctx, score_scale);
}
