#version 450
#extension GL_GOOGLE_include_directive : require
// Causal attention over the f16 KV cache, split-K (attend.glsl): work-group (h * splits + r, t)
// of (H * splits, n), splits = ceil(span / ATT_SPLIT), runs split r of head h of row t: scores
// over its positions (none past step[t]: a run beyond it exits at once) times score_scale =
// float32(1/sqrt(D)) go to the scratch [n, H, span] (span > every position; positions are
// device values: a recorded step replays with new ones, and rows of many sequences each sit at
// their own), the run's record to parts [n, H, splits, D + 2]; attention_combine.comp merges
// them. Position p is read from its cache row through row t's block table (CACHE_ROW), keys in
// position order: a paged cache gives a contiguous one's bits. q is rounded to f16 first
// (ggml's F16 dot converts it; the contract says so).
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer KC { uint cache_k[]; };
layout(std430, set = 0, binding = 2) readonly buffer VC { uint cache_v[]; };
layout(std430, set = 0, binding = 3) readonly buffer Step { int step[]; };
layout(std430, set = 0, binding = 4) readonly buffer Table { int table[]; };
layout(std430, set = 0, binding = 5) buffer Sc { float scores[]; };
layout(std430, set = 0, binding = 6) writeonly buffer Parts { float parts[]; };
layout(push_constant) uniform Params {
    int layer;
    int n_ctx;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    float score_scale;
    int block;  // 0: no table
    int table_stride;  // row t's table starts at t * table_stride
    int span;
} pc;

#include "attend.glsl"

void main() {
    const uint splits = (uint(pc.span) + ATT_SPLIT - 1u) / ATT_SPLIT;
    const uint h = gl_WorkGroupID.x / splits;
    const uint run = gl_WorkGroupID.x % splits;
    const uint t = gl_WorkGroupID.y;
    const uint last = uint(step[t]);
    if (run * ATT_SPLIT > last) {
        return;
    }
    const uint lid = gl_LocalInvocationID.x;
    const uint D = uint(pc.head_dim);
    const uint width = uint(pc.n_kv_heads) * D;
    const uint base = t * uint(pc.table_stride);
    const uint block = uint(pc.block);
    const uint kv_head = h / uint(pc.n_heads / pc.n_kv_heads);
    const uint qh = t * uint(pc.n_heads) * D + h * D;
    const uint layer_base = uint(pc.layer) * uint(pc.n_ctx) * width + kv_head * D;
    const uint s0 = (t * uint(pc.n_heads) + h) * uint(pc.span);
    const uint part0 = (t * uint(pc.n_heads) * splits + gl_WorkGroupID.x) * ATT_PART(D);

    for (uint d = lid; d < D; d += WG_SIZE) {
        q16[d] = f16_to_f32(f32_to_f16_rte(q[qh + d]));
    }
    barrier();
    attend_run(layer_base, width, base, block, run * ATT_SPLIT, last, D, pc.score_scale, s0,
               part0);
}
