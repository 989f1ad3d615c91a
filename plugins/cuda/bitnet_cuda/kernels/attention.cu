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
// (and its `span`) go unused but for the split count.
//
// Split-K (flash-decoding): the positions fall in runs of ATT_SPLIT; attention's grid is
// (H * splits, n) with splits = ceil(span / ATT_SPLIT) (a recording's span is the cache's whole
// reach, so the grid never depends on the position); block (h * splits + s, i) takes run s of
// row i's positions (a run past step[i] exits at once), ATT_WARPS warps, warp w the keys
// w, w + ATT_WARPS, ... of the run with an online (running max) softmax in f32, merged into
// the run's (max, exp sum, unnormalized output) in `parts` [n, H, splits, D + 2].
// attention_combine, grid (H, n), merges the runs of each head (merge_runs, the warps' merge)
// and divides once. The split length is a constant: the bits do not depend on the device.
// The fused rope_attention (decode_layer.cu) runs the same runs, then the same combine.
// The reference subtracts the global max instead; the results agree to f32 rounding (the
// validation suite's tolerance). D <= ATT_MAX_DIM (the host checks).
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

// Block (h * splits + s, i) of grid (H * splits, n): run s of query head h of row i of q,
// against `layer` of the caches up to position step[i] through `table`; query head h reads KV
// head h / (H / Hkv).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE) attention(
    const float* __restrict__ q, const __half* __restrict__ k_cache,
    const __half* __restrict__ v_cache, const int* __restrict__ step,
    const int* __restrict__ table, float* __restrict__ scores, float* __restrict__ parts,
    int layer, int n_ctx, int n_heads, int n_kv_heads, int head_dim, float score_scale,
    int block, int table_stride, int span)
{
    const int splits = (span + ATT_SPLIT - 1) / ATT_SPLIT;
    const int h = blockIdx.x / splits;
    const int s = blockIdx.x % splits;
    const int i = blockIdx.y;
    const int last = step[i];
    if (s * ATT_SPLIT > last) {
        return;
    }
    const int width = n_kv_heads * head_dim;
    const size_t q_off = ((size_t)i * n_heads + h) * head_dim;
    const size_t kv_off =
        (size_t)layer * n_ctx * width + (size_t)(h / (n_heads / n_kv_heads)) * head_dim;
    attend_run(q + q_off, k_cache + kv_off, v_cache + kv_off, table + (size_t)i * table_stride,
               block, parts + ((size_t)i * n_heads * splits + blockIdx.x) * ATT_PART(head_dim),
               s * ATT_SPLIT, last, head_dim, width, score_scale, nullptr, nullptr);
}

// Block (h, i) of grid (H, n): the runs 0 .. step[i] / ATT_SPLIT of head h of row i merged
// -> out [n, H * D].
extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE) attention_combine(
    const int* __restrict__ step, const float* __restrict__ parts, float* __restrict__ out,
    int n_heads, int head_dim, int span)
{
    const int splits = (span + ATT_SPLIT - 1) / ATT_SPLIT;
    const int h = blockIdx.x;
    const int i = blockIdx.y;
    const int stride = ATT_PART(head_dim);
    const float* p = parts + ((size_t)i * n_heads + h) * splits * stride;
    float* o = out + ((size_t)i * n_heads + h) * head_dim;
    merge_runs([&](int r) { return p[r * stride]; }, [&](int r) { return p[r * stride + 1]; },
               [&](int r, int d) { return p[r * stride + 2 + d]; }, step[i] / ATT_SPLIT + 1,
               head_dim, [&](float, float total, int d, float acc) { o[d] = acc / total; });
}
