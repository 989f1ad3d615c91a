#version 450
#extension GL_GOOGLE_include_directive : require
// NEOX rotary embedding: pair (i, i + D/2) of each head of row t rotates by the angle of
// position step[t] (a device value: a recorded step replays with new positions, and rows of
// many sequences each sit at their own), read from cos/sin tables [positions, D/2] the host
// computed in float64.
// Built with USE_FP64 (rope_f64.spv, for devices with shaderFloat64) the tables and the rotation
// stay in double, as the reference computes them.
// Dispatch (ceil(H * D/2 / WG_SIZE), n).
#include "common.glsl"
#include "norm.glsl"

layout(local_size_x_id = 0) in;


layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer C { ANGLE cos_table[]; };
layout(std430, set = 0, binding = 2) readonly buffer Sn { ANGLE sin_table[]; };
layout(std430, set = 0, binding = 3) readonly buffer Step { int step[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int n_heads;
    int head_dim;
} pc;

void main() {
    const uint half_dim = uint(pc.head_dim) / 2u;
    const uint gid = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y;
    if (gid >= uint(pc.n_heads) * half_dim) {
        return;
    }
    const uint h = gid / half_dim;
    const uint i = gid % half_dim;
    const uint first = t * uint(pc.n_heads * pc.head_dim) + h * uint(pc.head_dim) + i;
    const uint angle = uint(step[t]) * half_dim + i;
    const vec2 r = rope_pair(x[first], x[first + half_dim], cos_table[angle], sin_table[angle]);
    y[first] = r.x;
    y[first + half_dim] = r.y;
}
