// One work-group's attention of one query head, shared by attention.comp and the fused
// rope_attention.comp: q16 [D] (shared, already rounded to f16) against positions 0 .. last of
// one KV head (cache rows from layer_base, `width` apart, through the block table at `base`),
// scores into scores[s0 ..] (> last entries), a max-subtracted softmax and the weighted sum of
// V into outv[out0 ..]. The includer declares the buffers cache_k, cache_v (f16 pairs in
// uints), table, scores and outv. With FRESH_ROW defined (rope_attention), position last's key
// and value, rounded to f16, come from fresh_k / fresh_v (shared) instead of the cache row
// another work-group may still be writing: the same values, the same bits. The dot products
// are `precise` (no contraction) so both shaders round them alike.

#define MAX_HEAD_DIM 512  // the host checks

shared float red[WG_SIZE];
shared float q16[MAX_HEAD_DIM];
#ifdef FRESH_ROW
shared float fresh_k[MAX_HEAD_DIM];
shared float fresh_v[MAX_HEAD_DIM];
#endif

float cached(uint element, bool is_key) {
    const uint word = is_key ? cache_k[element >> 1] : cache_v[element >> 1];
    return f16_to_f32((element & 1u) != 0u ? (word >> 16) : (word & 0xFFFFu));
}

// position p's key (is_key) or value element d, from the cache row `row` (or the fresh row)
float kv_at(uint row, uint p, uint last, uint d, bool is_key) {
#ifdef FRESH_ROW
    if (p == last) {
        return is_key ? fresh_k[d] : fresh_v[d];
    }
#endif
    return cached(row + d, is_key);
}

void attend(uint layer_base, uint width, uint base, uint block, uint last, uint D,
            float score_scale, uint s0, uint out0) {
    const uint lid = gl_LocalInvocationID.x;
    float local_max = -1.0 / 0.0;
    for (uint p = lid; p <= last; p += WG_SIZE) {
        const uint row = layer_base + CACHE_ROW(table, base, block, p) * width;
        precise float dot = 0.0;
        for (uint d = 0u; d < D; d++) {
            dot += q16[d] * kv_at(row, p, last, d, true);
        }
        const float score = dot * score_scale;
        scores[s0 + p] = score;
        local_max = max(local_max, score);
    }
    red[lid] = local_max;
    TREE_REDUCE(red, lid, OP_MAX)
    const float max_score = red[0];
    barrier();

    float local_sum = 0.0;
    for (uint p = lid; p <= last; p += WG_SIZE) {
        const float e = exp(scores[s0 + p] - max_score);
        scores[s0 + p] = e;
        local_sum += e;
    }
    red[lid] = local_sum;
    TREE_REDUCE(red, lid, OP_ADD)
    const float total = red[0];
    for (uint p = lid; p <= last; p += WG_SIZE) {
        scores[s0 + p] = scores[s0 + p] / total;  // the probabilities, normalized once
    }
    memoryBarrierBuffer();  // every invocation reads all of this head's probabilities below
    barrier();

    for (uint d = lid; d < D; d += WG_SIZE) {
        precise float acc = 0.0;
        for (uint p = 0u; p <= last; p++) {
            const uint row = layer_base + CACHE_ROW(table, base, block, p) * width;
            acc += scores[s0 + p] * kv_at(row, p, last, d, false);
        }
        outv[out0 + d] = acc;
    }
}
