#version 450
#extension GL_GOOGLE_include_directive : require
// Round k, v [n, width] to f16 (nearest-even, in integers) into the cache row of position
// step[t] of `layer` for each row t (through its block table: CACHE_ROW); the caches are f16
// [n_layers, n_ctx, width] packed 2 per word, width even. One invocation per word: dispatch
// (ceil(width / 2 / WG_SIZE), n). Positions are device values: a recorded step replays with
// new ones, and rows of many sequences each sit at their own.
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer Kin { float k_in[]; };
layout(std430, set = 0, binding = 1) readonly buffer Vin { float v_in[]; };
layout(std430, set = 0, binding = 2) buffer KC { uint cache_k[]; };
layout(std430, set = 0, binding = 3) buffer VC { uint cache_v[]; };
layout(std430, set = 0, binding = 4) readonly buffer Step { int step[]; };
layout(std430, set = 0, binding = 5) readonly buffer Table { int table[]; };
layout(push_constant) uniform Params {
    int layer;
    int n_ctx;
    int width;
    int block;  // 0: no table
    int table_stride;  // row t's table starts at t * table_stride
} pc;

void main() {
    const uint j = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y;
    const uint width = uint(pc.width);
    if (j >= width / 2u) {
        return;
    }
    const uint src = t * width + 2u * j;
    const uint row = CACHE_ROW(table, t * uint(pc.table_stride), uint(pc.block), uint(step[t]));
    const uint dst = ((uint(pc.layer) * uint(pc.n_ctx) + row) * width) / 2u + j;
    cache_k[dst] = f32_to_f16_rte(k_in[src]) | (f32_to_f16_rte(k_in[src + 1u]) << 16);
    cache_v[dst] = f32_to_f16_rte(v_in[src]) | (f32_to_f16_rte(v_in[src + 1u]) << 16);
}
