#version 450
#extension GL_GOOGLE_include_directive : require
// Per-token int8 activations (bitnet.cpp, I2_S): x [n, K] f32 -> q [n, K] int8 (4 per word),
// s [n] f32 = float32(127 / max(1e-5, max|x|)). One work-group per token.
#include "common.glsl"

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
    // 1e-5 as f32 is just below 1e-5, so "m > 1e-5" is the reference's float64 "m >= 1e-5";
    // the double-rounded 127/m equals the correctly rounded f32 quotient.
    const float scale = m > 1e-5 ? div_rn(127.0, m) : 12700000.0;
    for (uint w = lid; w < K / 4u; w += WG_SIZE) {
        uint packed = 0u;
        for (uint i = 0u; i < 4u; i++) {
            precise float v = x[row + 4u * w + i] * scale;
            int qi = int(clamp(roundEven(v), -128.0, 127.0));
            packed |= (uint(qi) & 0xFFu) << (8u * i);
        }
        q[row / 4u + w] = packed;
    }
    if (lid == 0u) {
        s[t] = scale;
    }
}
