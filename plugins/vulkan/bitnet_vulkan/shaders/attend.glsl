// One work-group's split run of one query head, shared by attention.comp and the fused
// rope_attention.comp (split-K, flash-decoding): q16 [D] (shared, already rounded to f16)
// against positions first .. min(last, first + ATT_SPLIT - 1) of one KV head (cache rows from
// layer_base, `width` apart, through the block table at `base`), scores into
// scores[s0 + position], then the run's max, the sum of exp(score - max) and the
// probability-weighted sum of V (normalized within the run, once) into parts[part0 ..] (m, l,
// o[D]: ATT_PART(D) floats); attention_combine.comp merges a head's runs. The split length is
// a constant (common.glsl's ATT_SPLIT), so the bits do not depend on the work-group count; a
// context of one run gives a single-pass softmax's bits (its weight is l / l = 1). The includer declares the buffers cache_k,
// cache_v (f16 pairs in uints), table, scores and parts. With FRESH_ROW defined
// (rope_attention), position last's key and value, rounded to f16, come from fresh_k /
// fresh_v (shared) instead of the cache row another work-group may still be writing: the
// same values, the same bits. The dot products are `precise` (no contraction) so both
// shaders round them alike. first <= last (the caller exits runs past last).

#define MAX_HEAD_DIM 512  // the host checks
#define ATT_PART(D) ((D) + 2u)

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

void attend_run(uint layer_base, uint width, uint base, uint block, uint first, uint last,
                uint D, float score_scale, uint s0, uint part0) {
    const uint lid = gl_LocalInvocationID.x;
    const uint end = min(last, first + ATT_SPLIT - 1u);
    float local_max = -1.0 / 0.0;
    for (uint p = first + lid; p <= end; p += WG_SIZE) {
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
    for (uint p = first + lid; p <= end; p += WG_SIZE) {
        const float e = exp(scores[s0 + p] - max_score);
        scores[s0 + p] = e;
        local_sum += e;
    }
    red[lid] = local_sum;
    TREE_REDUCE(red, lid, OP_ADD)
    const float total = red[0];
    for (uint p = first + lid; p <= end; p += WG_SIZE) {
        scores[s0 + p] = scores[s0 + p] / total;  // the run's probabilities, normalized once
    }
    memoryBarrierBuffer();  // every invocation reads all of the run's probabilities below
    barrier();

    for (uint d = lid; d < D; d += WG_SIZE) {
        precise float acc = 0.0;
        for (uint p = first; p <= end; p++) {
            const uint row = layer_base + CACHE_ROW(table, base, block, p) * width;
            acc += scores[s0 + p] * kv_at(row, p, last, d, false);
        }
        parts[part0 + 2u + d] = acc;
    }
    if (lid == 0u) {
        parts[part0] = max_score;
        parts[part0 + 1u] = total;
    }
}
