#version 450
#extension GL_GOOGLE_include_directive : require
// Causal attention over the f16 KV cache. Work-group (head h, token t): scores over cached
// positions 0 .. pos+t times score_scale = float32(1/sqrt(D)) go to the scratch [n, H, span]
// (span = pos + n; pos = step[0], a device value: a recorded step replays with new positions);
// then a max-subtracted softmax and the probability-weighted sum of V.
// q is rounded to f16 first (ggml's F16 dot converts it; the contract says so).
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer KC { uint cache_k[]; };
layout(std430, set = 0, binding = 2) readonly buffer VC { uint cache_v[]; };
layout(std430, set = 0, binding = 3) readonly buffer Step { int step[]; };
layout(std430, set = 0, binding = 4) buffer Sc { float scores[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform Params {
    int layer;
    int n_ctx;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    float score_scale;
} pc;

#define MAX_HEAD_DIM 512  // the host checks

shared float red[WG_SIZE];
shared float q16[MAX_HEAD_DIM];

float cached(uint element, bool is_key) {
    const uint word = is_key ? cache_k[element >> 1] : cache_v[element >> 1];
    return f16_to_f32((element & 1u) != 0u ? (word >> 16) : (word & 0xFFFFu));
}

void main() {
    const uint h = gl_WorkGroupID.x;
    const uint t = gl_WorkGroupID.y;
    const uint lid = gl_LocalInvocationID.x;
    const uint D = uint(pc.head_dim);
    const uint width = uint(pc.n_kv_heads) * D;
    const uint pos = uint(step[0]);
    const uint span = pos + gl_NumWorkGroups.y;
    const uint last = pos + t;
    const uint kv_head = h / uint(pc.n_heads / pc.n_kv_heads);
    const uint qh = t * uint(pc.n_heads) * D + h * D;
    const uint layer_base = uint(pc.layer) * uint(pc.n_ctx) * width + kv_head * D;
    const uint s0 = (t * uint(pc.n_heads) + h) * span;

    for (uint d = lid; d < D; d += WG_SIZE) {
        q16[d] = f16_to_f32(f32_to_f16_rte(q[qh + d]));
    }
    barrier();

    float local_max = -1.0 / 0.0;
    for (uint p = lid; p <= last; p += WG_SIZE) {
        const uint row = layer_base + p * width;
        float dot = 0.0;
        for (uint d = 0u; d < D; d++) {
            dot += q16[d] * cached(row + d, true);
        }
        const float score = dot * pc.score_scale;
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
        float acc = 0.0;
        for (uint p = 0u; p <= last; p++) {
            acc += scores[s0 + p] * cached(layer_base + p * width + d, false);
        }
        outv[qh + d] = acc;
    }
}
