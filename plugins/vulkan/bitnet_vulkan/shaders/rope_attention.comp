#version 450
#extension GL_GOOGLE_include_directive : require
// RoPE + KV store + attention's split runs of one token at position step[0]
// (GpuBackend.decode_layer): work-group h * splits + r (dispatch (H * splits, 1), as
// attention.comp's; a run past the position exits) ropes query head h and its KV head's key
// (norm.glsl's rope_pair), rounds key and value to f16 into shared memory, stores them when it
// is run 0 of the first head of its KV group, and runs split r with them for the current
// position (attend.glsl's FRESH_ROW): the group that stores the row is not the only one
// reading it. Its parts go to attention_combine.comp, as attention.comp's.
// qkv: norm_qkv's output [H*D | Hkv*D | Hkv*D]; tables and scalars as attention.comp's.
#include "common.glsl"
#include "norm.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer QKV { float qkv[]; };
layout(std430, set = 0, binding = 1) readonly buffer C { ANGLE cos_table[]; };
layout(std430, set = 0, binding = 2) readonly buffer Sn { ANGLE sin_table[]; };
layout(std430, set = 0, binding = 3) buffer KC { uint cache_k[]; };
layout(std430, set = 0, binding = 4) buffer VC { uint cache_v[]; };
layout(std430, set = 0, binding = 5) readonly buffer Step { int step[]; };
layout(std430, set = 0, binding = 6) readonly buffer Table { int table[]; };
layout(std430, set = 0, binding = 7) buffer Sc { float scores[]; };
layout(std430, set = 0, binding = 8) writeonly buffer Parts { float parts[]; };
layout(push_constant) uniform Params {
    int layer;
    int n_ctx;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    float score_scale;
    int block;  // 0: no table
    int span;
} pc;

#define FRESH_ROW
#include "attend.glsl"

float f16_rounded(float x) {
    return f16_to_f32(f32_to_f16_rte(x));
}

void main() {
    const uint splits = (uint(pc.span) + ATT_SPLIT - 1u) / ATT_SPLIT;
    const uint h = gl_WorkGroupID.x / splits;
    const uint run = gl_WorkGroupID.x % splits;
    const uint pos = uint(step[0]);
    if (run * ATT_SPLIT > pos) {
        return;
    }
    const uint lid = gl_LocalInvocationID.x;
    const uint D = uint(pc.head_dim);
    const uint half_dim = D / 2u;
    const uint group = uint(pc.n_heads / pc.n_kv_heads);
    const uint kv_head = h / group;
    const uint width = uint(pc.n_kv_heads) * D;
    const uint block = uint(pc.block);
    const uint qh = h * D;
    const uint kh = uint(pc.n_heads) * D + kv_head * D;
    const uint vh = kh + width;
    for (uint i = lid; i < half_dim; i += WG_SIZE) {
        const uint angle = pos * half_dim + i;
        const vec2 qr = rope_pair(qkv[qh + i], qkv[qh + i + half_dim], cos_table[angle],
                                  sin_table[angle]);
        const vec2 kr = rope_pair(qkv[kh + i], qkv[kh + i + half_dim], cos_table[angle],
                                  sin_table[angle]);
        q16[i] = f16_rounded(qr.x);
        q16[i + half_dim] = f16_rounded(qr.y);
        fresh_k[i] = f16_rounded(kr.x);
        fresh_k[i + half_dim] = f16_rounded(kr.y);
    }
    for (uint d = lid; d < D; d += WG_SIZE) {
        fresh_v[d] = f16_rounded(qkv[vh + d]);
    }
    barrier();
    const uint layer_base = uint(pc.layer) * uint(pc.n_ctx) * width + kv_head * D;
    if (h % group == 0u && run == 0u) {  // f16 values: their f16 bits are exact
        const uint dst = (layer_base + CACHE_ROW(table, 0u, block, pos) * width) / 2u;
        for (uint j = lid; j < half_dim; j += WG_SIZE) {
            cache_k[dst + j] = f32_to_f16_rte(fresh_k[2u * j])
                | (f32_to_f16_rte(fresh_k[2u * j + 1u]) << 16);
            cache_v[dst + j] = f32_to_f16_rte(fresh_v[2u * j])
                | (f32_to_f16_rte(fresh_v[2u * j + 1u]) << 16);
        }
    }
    attend_run(layer_base, width, 0u, block, run * ATT_SPLIT, pos, D, pc.score_scale,
               h * uint(pc.span), gl_WorkGroupID.x * ATT_PART(D));
}
