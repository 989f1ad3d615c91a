// attention over a device-side f16 KV cache ([n_layers, n_ctx, Hkv * D] each), as bitnet-cuda:
// kv_store writes row t at the cache row of position step[t]; attention runs one threadgroup of
// ATT_SIMDGROUPS x 32 threads per (head, row t, split run of ATT_SPLIT positions), each SIMD
// group an online softmax over every ATT_SIMDGROUPS-th position of the run, merged at the end;
// attention_combine merges the runs. Position p of row t lives in
// cache row table[t * table_stride + p / block] * block + p % block (block 0: no table, row p;
// bitnet.hal.kv_blocks). q is rounded to half before q.K (the contract). head_dim <= 256.
// Arguments in the KERNELS order (buffers, then scalars); attention's scores scratch (and span)
// go unused, as in bitnet-cuda. WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

#define ATT_SIMDGROUPS 8
#define ATT_MAX_DIM 256
#define ATT_PER_LANE (ATT_MAX_DIM / 32)
#define ATT_SPLIT 256  // positions a run: bitnet.hal.device_runtime.ATTENTION_SPLIT

static inline ulong cache_row(device const int* table, int block, int p)
{
    return block == 0 ? (ulong)p : (ulong)table[p / block] * block + p % block;
}

// one thread per pair of elements: grid (width / 2, n) items
kernel void kv_store(device const float* k [[buffer(0)]],
                     device const float* v [[buffer(1)]],
                     device half* k_cache [[buffer(2)]],
                     device half* v_cache [[buffer(3)]],
                     device const int* step [[buffer(4)]],
                     device const int* table [[buffer(5)]],
                     constant int& layer [[buffer(6)]],
                     constant int& n_ctx [[buffer(7)]],
                     constant int& width [[buffer(8)]],
                     constant int& block [[buffer(9)]],
                     constant int& table_stride [[buffer(10)]],
                     uint2 gid [[thread_position_in_grid]])
{
    const int c = 2 * int(gid.x);
    const int t = int(gid.y);
    if (c >= width) {
        return;
    }
    const ulong row = cache_row(table + (ulong)t * table_stride, block, step[t]);
    const ulong dst = ((ulong)layer * n_ctx + row) * width + c;
    const ulong src = (ulong)t * width + c;
    k_cache[dst] = half(k[src]);
    k_cache[dst + 1] = half(k[src + 1]);
    v_cache[dst] = half(v[src]);
    v_cache[dst + 1] = half(v[src + 1]);
}

// Split-K (flash-decoding), as bitnet-cuda: threadgroup (h * splits + s, i) of
// (H * splits, n), splits = ceil(span / ATT_SPLIT), takes run s of row i's positions (a run
// past step[i] exits), merges its SIMD groups' online softmax and writes the run's (max, exp
// sum, unnormalized output) to parts [n, H, splits, D + 2]; attention_combine (H, n) merges a
// head's runs the same way (each weighed by exp(its max - the largest)) and divides once.
kernel void attention(device const float* q [[buffer(0)]],
                      device const half* k_cache [[buffer(1)]],
                      device const half* v_cache [[buffer(2)]],
                      device const int* step [[buffer(3)]],
                      device const int* table [[buffer(4)]],
                      device float* scores [[buffer(5)]],
                      device float* parts [[buffer(6)]],
                      constant int& layer [[buffer(7)]],
                      constant int& n_ctx [[buffer(8)]],
                      constant int& n_heads [[buffer(9)]],
                      constant int& n_kv_heads [[buffer(10)]],
                      constant int& head_dim [[buffer(11)]],
                      constant float& score_scale [[buffer(12)]],
                      constant int& block [[buffer(13)]],
                      constant int& table_stride [[buffer(14)]],
                      constant int& span [[buffer(15)]],
                      uint2 group [[threadgroup_position_in_grid]],
                      uint tid [[thread_position_in_threadgroup]],
                      uint lane [[thread_index_in_simdgroup]],
                      uint sg [[simdgroup_index_in_threadgroup]])
{
    threadgroup float tg_m[ATT_SIMDGROUPS];
    threadgroup float tg_l[ATT_SIMDGROUPS];
    threadgroup float tg_acc[ATT_SIMDGROUPS][ATT_MAX_DIM];
    const int splits = (span + ATT_SPLIT - 1) / ATT_SPLIT;
    const int h = int(group.x) / splits;
    const int run = int(group.x) % splits;
    const int i = int(group.y);
    const int last = step[i];
    if (run * ATT_SPLIT > last) {
        return;
    }
    const int first = run * ATT_SPLIT;
    const int end = min(last, first + ATT_SPLIT - 1);
    const int kv_head = h / (n_heads / n_kv_heads);
    const int width = n_kv_heads * head_dim;
    const ulong q_off = ((ulong)i * n_heads + h) * head_dim;
    const ulong kv_off = (ulong)layer * n_ctx * width + (ulong)kv_head * head_dim;
    device const int* rows = table + (ulong)i * table_stride;
    device float* part = parts + ((ulong)i * n_heads * splits + group.x) * (head_dim + 2);
    float qr[ATT_PER_LANE];
    float acc[ATT_PER_LANE];
    for (int c = 0; c < ATT_PER_LANE; ++c) {
        const int d = int(lane) + 32 * c;
        qr[c] = d < head_dim ? float(half(q[q_off + d])) : 0.0f;
        acc[c] = 0.0f;
    }
    float m = -INFINITY;
    float l = 0.0f;
    for (int j = first + int(sg); j <= end; j += ATT_SIMDGROUPS) {
        const ulong row = kv_off + cache_row(rows, block, j) * width;
        float dot = 0.0f;
        for (int c = 0; c < ATT_PER_LANE; ++c) {
            const int d = int(lane) + 32 * c;
            if (d < head_dim) {
                dot += qr[c] * float(k_cache[row + d]);
            }
        }
        const float score = simd_sum(dot) * score_scale;
        const float m_new = max(m, score);
        const float correction = exp(m - m_new);
        const float p = exp(score - m_new);
        l = l * correction + p;
        for (int c = 0; c < ATT_PER_LANE; ++c) {
            const int d = int(lane) + 32 * c;
            if (d < head_dim) {
                acc[c] = acc[c] * correction + p * float(v_cache[row + d]);
            }
        }
        m = m_new;
    }
    if (lane == 0) {
        tg_m[sg] = m;
        tg_l[sg] = l;
    }
    for (int c = 0; c < ATT_PER_LANE; ++c) {
        const int d = int(lane) + 32 * c;
        if (d < head_dim) {
            tg_acc[sg][d] = acc[c];
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float m_all = tg_m[0];
    for (int w = 1; w < ATT_SIMDGROUPS; ++w) {
        m_all = max(m_all, tg_m[w]);
    }
    float total = 0.0f;
    for (int w = 0; w < ATT_SIMDGROUPS; ++w) {
        total += tg_l[w] * exp(tg_m[w] - m_all);
    }
    if (tid == 0) {
        part[0] = m_all;
        part[1] = total;
    }
    for (int d = int(tid); d < head_dim; d += ATT_SIMDGROUPS * 32) {
        float o = 0.0f;
        for (int w = 0; w < ATT_SIMDGROUPS; ++w) {
            o += tg_acc[w][d] * exp(tg_m[w] - m_all);
        }
        part[2 + d] = o;
    }
}

// Threadgroup (h, i) of (H, n): runs 0 .. step[i] / ATT_SPLIT of head h of row i merged and
// divided once -> out [n, H * D].
kernel void attention_combine(device const int* step [[buffer(0)]],
                              device const float* parts [[buffer(1)]],
                              device float* out [[buffer(2)]],
                              constant int& n_heads [[buffer(3)]],
                              constant int& head_dim [[buffer(4)]],
                              constant int& span [[buffer(5)]],
                              uint2 group [[threadgroup_position_in_grid]],
                              uint tid [[thread_position_in_threadgroup]],
                              uint threads [[threads_per_threadgroup]])
{
    const int splits = (span + ATT_SPLIT - 1) / ATT_SPLIT;
    const int h = int(group.x);
    const int i = int(group.y);
    const int stride = head_dim + 2;
    device const float* p = parts + ((ulong)i * n_heads + h) * splits * stride;
    device float* o = out + ((ulong)i * n_heads + h) * head_dim;
    const int runs = step[i] / ATT_SPLIT + 1;
    float m_all = p[0];
    for (int r = 1; r < runs; ++r) {
        m_all = max(m_all, p[r * stride]);
    }
    float total = 0.0f;
    for (int r = 0; r < runs; ++r) {
        total += p[r * stride + 1] * exp(p[r * stride] - m_all);
    }
    for (int d = int(tid); d < head_dim; d += int(threads)) {
        float acc = 0.0f;
        for (int r = 0; r < runs; ++r) {
            acc += p[r * stride + 2 + d] * exp(p[r * stride] - m_all);
        }
        o[d] = acc / total;
    }
}
