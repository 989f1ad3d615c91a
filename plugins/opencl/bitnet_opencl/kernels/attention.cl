// Causal attention over an f16 KV cache [n_layers, n_ctx, Hkv*D] (K and V alike).
//
// Row t of the inputs sits at position step[t] (a device value: a recorded step replays with
// new positions; attention_rows' rows are many sequences). Its positions live in cache rows
// through a block table: table + t * table_stride (stride 0: one table for every row), see
// cache_row; block 0 means no table.

// The cache row of position p through a block table (bitnet.hal.kv_blocks):
// table[p / block] * block + p % block; block 0: row p.
inline size_t cache_row(__global const int* table, const int block, const int p) {
    if (block == 0) {
        return (size_t)p;
    }
    return (size_t)table[p / block] * block + p % block;
}

// Round k, v [n, width] to f16 (nearest-even) into the cache rows of positions step[t] of
// `layer`. One work item per pair of elements (width is even): global size (width / 2, n).
__kernel void kv_store(__global const float* k, __global const float* v,
                       __global half* cache_k, __global half* cache_v,
                       __global const int* step, __global const int* table, const int layer,
                       const int n_ctx, const int width, const int block,
                       const int table_stride) {
    const int j = 2 * get_global_id(0);
    const int t = get_global_id(1);
    if (j >= width) {
        return;
    }
    const size_t row = cache_row(table + (size_t)t * table_stride, block, step[t]);
    const size_t dst = ((size_t)layer * n_ctx + row) * width + j;
    const size_t src = (size_t)t * width + j;
    vstore_half_rte(k[src], dst, cache_k);
    vstore_half_rte(k[src + 1], dst + 1, cache_k);
    vstore_half_rte(v[src], dst, cache_v);
    vstore_half_rte(v[src + 1], dst + 1, cache_v);
}

// Split-K (flash-decoding): positions fall in runs of ATTENTION_SPLIT (a build option, from
// bitnet.hal.device_runtime); a work-group attends one run of one (query head, row) and leaves
// the run's softmax max, exp sum and output (normalized within the run) in `parts` (m, l,
// o[D]: PART(D) floats); attention_combine merges a head's runs. The split length is a
// constant, so the bits do not depend on the work-group count or size; a context of one run
// gives the bits of a single-pass softmax (its weight is l / l = 1).
#define PART(head_dim) ((head_dim) + 2)

// One work-group's run of one query head: q16 [D] (local, already rounded to f16) against
// positions first .. min(last, first + ATTENTION_SPLIT - 1) of one KV head (cache rows from
// layer_base, `width` apart, through `rows`), scores in s (global, indexed by position), then
// the run's max, the sum of exp(score - max) and the probability-weighted sum of V (the
// probabilities normalized within the run, once) into part.
// fresh (rope_attention): position last's key and value, rounded to f16, come from fresh_k /
// fresh_v (local) instead of the cache row another work-group may still be writing; the same
// values, the same bits. scratch: REDUCE_LANES floats. The exp sum takes FIXED_REDUCE's tree:
// any work-group size gives the same bits. first <= last (the caller exits runs past last).
void attend_run(__local const float* q16, __global const half* cache_k,
                __global const half* cache_v, __global const int* rows, const int block,
                const size_t layer_base, const int width, const int first, const int last,
                const int head_dim, const float score_scale, __global float* s,
                __global float* part, __local float* scratch, const int lid, const int wg,
                const int fresh, __local const float* fresh_k, __local const float* fresh_v) {
    const int end = min(last, first + ATTENTION_SPLIT - 1);
    float local_max = -INFINITY;
    for (int p = first + lid; p <= end; p += wg) {
        const size_t row = layer_base + cache_row(rows, block, p) * width;
        float dot = 0.0f;
        if (fresh && p == last) {
            for (int d = 0; d < head_dim; d++) {
                dot += q16[d] * fresh_k[d];
            }
        } else {
            for (int d = 0; d < head_dim; d++) {
                dot += q16[d] * vload_half(row + d, cache_k);
            }
        }
        const float score = dot * score_scale;
        s[p] = score;
        local_max = fmax(local_max, score);
    }
    REDUCE(scratch, local_max, lid, wg, OP_MAX);
    const float max_score = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);  // every work-item reads all of s
    FIXED_REDUCE(scratch, float, 0.0f, end - first + 1, p_, exp(s[first + p_] - max_score),
                 OP_ADD, lid, wg);
    const float total = scratch[0];
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int p = first + lid; p <= end; p += wg) {
        s[p] = exp(s[p] - max_score) / total;  // the run's probabilities, normalized once
    }
    barrier(CLK_GLOBAL_MEM_FENCE);  // every work-item reads all of the run's probabilities

    for (int d = lid; d < head_dim; d += wg) {
        float acc = 0.0f;
        for (int p = first; p <= end; p++) {
            const float value = fresh && p == last
                ? fresh_v[d]
                : vload_half(layer_base + cache_row(rows, block, p) * width + d, cache_v);
            acc += s[p] * value;
        }
        part[2 + d] = acc;
    }
    if (lid == 0) {
        part[0] = max_score;
        part[1] = total;
    }
}

// Work-group (h * splits + r, t) of grid (H * splits, n), splits = ceil(span /
// ATTENTION_SPLIT): run r of query head h of row t, whose positions are 0 .. step[t] (a run
// past it exits at once). Scores times score_scale = float32(1 / sqrt(D)) go to the global
// scratch [n, H, span] (span > every position), the run's record to parts [n, H, splits,
// PART(D)]. q is rounded to f16 first (ggml's F16 dot converts it; the contract says so).
// q [n, H*D] f32. Keys are visited by position, whatever rows hold them: a paged cache gives
// the bits of a contiguous one.
__kernel void attention(__global const float* q, __global const half* cache_k,
                        __global const half* cache_v, __global const int* step,
                        __global const int* table, const int layer, const int n_ctx,
                        const int n_heads, const int n_kv_heads, const int head_dim,
                        const float score_scale, const int block, const int table_stride,
                        const int span, __global float* scores, __global float* parts,
                        __local float* scratch, __local float* q16) {
    const int splits = (span + ATTENTION_SPLIT - 1) / ATTENTION_SPLIT;
    const int h = get_group_id(0) / splits;
    const int run = get_group_id(0) % splits;
    const int t = get_group_id(1);
    const int last = step[t];
    if (run * ATTENTION_SPLIT > last) {
        return;
    }
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const int width = n_kv_heads * head_dim;
    const int kv_head = h / (n_heads / n_kv_heads);
    __global const float* qh = q + (size_t)t * n_heads * head_dim + h * head_dim;

    for (int d = lid; d < head_dim; d += wg) {
        q16[d] = round_to_f16(qh[d]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    attend_run(q16, cache_k, cache_v, table + (size_t)t * table_stride, block,
               (size_t)layer * n_ctx * width + kv_head * head_dim, width,
               run * ATTENTION_SPLIT, last, head_dim, score_scale,
               scores + ((size_t)t * n_heads + h) * span,
               parts + ((size_t)t * n_heads * splits + get_group_id(0)) * PART(head_dim),
               scratch, lid, wg, 0, q16, q16);
}

// Work-group (h, t) of grid (H, n): the runs 0 .. step[t] / ATTENTION_SPLIT of head h of row t
// merged, run r weighing l_r * exp(m_r - the largest m) / their sum -> out [n, H*D] f32.
__kernel void attention_combine(__global const int* step, __global const float* parts,
                                const int n_heads, const int head_dim, const int span,
                                __global float* out) {
    const int splits = (span + ATTENTION_SPLIT - 1) / ATTENTION_SPLIT;
    const int h = get_group_id(0);
    const int t = get_group_id(1);
    const int runs = step[t] / ATTENTION_SPLIT + 1;
    const int stride = PART(head_dim);
    __global const float* p = parts + ((size_t)t * n_heads + h) * splits * stride;
    float m_all = p[0];
    for (int r = 1; r < runs; r++) {
        m_all = fmax(m_all, p[r * stride]);
    }
    float total = 0.0f;
    for (int r = 0; r < runs; r++) {
        total += p[r * stride + 1] * exp(p[r * stride] - m_all);
    }
    for (int d = get_local_id(0); d < head_dim; d += get_local_size(0)) {
        float acc = 0.0f;
        for (int r = 0; r < runs; r++) {
            const float weight = p[r * stride + 1] * exp(p[r * stride] - m_all) / total;
            acc += p[r * stride + 2 + d] * weight;
        }
        out[((size_t)t * n_heads + h) * head_dim + d] = acc;
    }
}
