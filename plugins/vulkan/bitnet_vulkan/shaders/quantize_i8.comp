#version 450
#extension GL_GOOGLE_include_directive : require
// Per-token int8 activations (bitnet.cpp, I2_S): x [n, K] f32 -> q [n, K] int8 (4 per word),
// s [n] f32 = float32(127 / max(1e-5, max|x|)). One work-group per token.
#include "common.glsl"
#include "norm.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 2) writeonly buffer S { float s[]; };
layout(push_constant) uniform Params { int K; } pc;

shared float red[WG_SIZE];

void main() {
    const uint t = gl_WorkGroupID.x;
    const uint lid = gl_LocalInvocationID.x;
    const uint K = uint(pc.K);
    const uint row = t * K;
    float m = 0.0;
    for (uint k = lid; k < K; k += WG_SIZE) {
        m = max(m, abs(x[row + k]));
    }
    red[lid] = m;
    TREE_REDUCE(red, lid, OP_MAX)
    m = red[0];
    const float scale = i8_scale(m);
    for (uint w = lid; w < K / 4u; w += WG_SIZE) {
        const uint e = row + 4u * w;
        q[row / 4u + w] = pack4(i8_value(x[e], scale), i8_value(x[e + 1u], scale),
                                i8_value(x[e + 2u], scale), i8_value(x[e + 3u], scale));
    }
    if (lid == 0u) {
        s[t] = scale;
    }
}
