// Causal attention over an f16 KV cache [n_layers, n_ctx, Hkv*D] (K and V alike).

// Round k, v [n, width] to f16 (nearest-even) into cache rows pos .. pos+n-1 of `layer`.
// One work item per pair of elements (width is even): global size (width / 2, n).
// pos = step[0] (a device value: a recorded step replays with new positions).
__kernel void kv_store(__global const float* k, __global const float* v,
                       __global half* cache_k, __global half* cache_v,
                       __global const int* step, const int layer, const int n_ctx,
                       const int width) {
    const int pos = step[0];
    const int j = 2 * get_global_id(0);
    const int t = get_global_id(1);
    if (j >= width) {
        return;
    }
    const size_t dst = ((size_t)layer * n_ctx + pos + t) * width + j;
    const size_t src = (size_t)t * width + j;
    vstore_half_rte(k[src], dst, cache_k);
    vstore_half_rte(k[src + 1], dst + 1, cache_k);
    vstore_half_rte(v[src], dst, cache_v);
    vstore_half_rte(v[src + 1], dst + 1, cache_v);
}

// One work-group per (head h, token t): scores over cached positions 0 .. pos+t, times
// score_scale = float32(1 / sqrt(D)), go to the global scratch [n, H, span] (span = pos + n);
// then a max-subtracted softmax and the weighted sum of V. q is rounded to f16 first (ggml's
// F16 dot converts it; the contract says so). q [n, H*D] f32 -> out [n, H*D] f32.
__kernel void attention(__global const float* q, __global const half* cache_k,
                        __global const half* cache_v, __global const int* step,
                        const int layer, const int n_ctx, const int n_heads,
                        const int n_kv_heads, const int head_dim, const float score_scale,
                        __global float* scores, __global float* out,
                        __local float* scratch, __local float* q16) {
    const int pos = step[0];  // a device value: a recorded step replays with new positions
    const int h = get_group_id(0);
    const int t = get_group_id(1);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const int width = n_kv_heads * head_dim;
    const int span = pos + (int)get_num_groups(1);
    const int last = pos + t;
    const int kv_head = h / (n_heads / n_kv_heads);
    __global const float* qh = q + (size_t)t * n_heads * head_dim + h * head_dim;
    const size_t layer_base = (size_t)layer * n_ctx * width + kv_head * head_dim;
    __global float* s = scores + ((size_t)t * n_heads + h) * span;

    for (int d = lid; d < head_dim; d += wg) {
        q16[d] = round_to_f16(qh[d]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float local_max = -INFINITY;
    for (int p = lid; p <= last; p += wg) {
        const size_t row = layer_base + (size_t)p * width;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; d++) {
            dot += q16[d] * vload_half(row + d, cache_k);
        }
        const float score = dot * score_scale;
        s[p] = score;
        local_max = fmax(local_max, score);
    }
    REDUCE(scratch, local_max, lid, wg, OP_MAX);
    const float max_score = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);

    float local_sum = 0.0f;
    for (int p = lid; p <= last; p += wg) {
        const float e = exp(s[p] - max_score);
        s[p] = e;
        local_sum += e;
    }
    REDUCE(scratch, local_sum, lid, wg, OP_ADD);
    const float total = scratch[0];
    for (int p = lid; p <= last; p += wg) {
        s[p] = s[p] / total;  // the probabilities, normalized once
    }
    barrier(CLK_GLOBAL_MEM_FENCE);  // every work-item reads all of s below

    for (int d = lid; d < head_dim; d += wg) {
        float acc = 0.0f;
        for (int p = 0; p <= last; p++) {
            acc += s[p] * vload_half(layer_base + (size_t)p * width + d, cache_v);
        }
        out[(size_t)t * n_heads * head_dim + h * head_dim + d] = acc;
    }
}
