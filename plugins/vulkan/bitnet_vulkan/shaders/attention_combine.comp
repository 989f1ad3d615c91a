#version 450
#extension GL_GOOGLE_include_directive : require
// attention's split runs merged (attend.glsl): work-group (h, t) of (H, n) takes the records
// (m, l, o[D]) of runs 0 .. step[t] / ATT_SPLIT of head h of row t in parts [n, H, splits,
// D + 2] and weighs run r by l_r * exp(m_r - the largest m) / their sum -> out [n, H*D].
// The attention op and decode_layer's rope_attention both end here.
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer Step { int step[]; };
layout(std430, set = 0, binding = 1) readonly buffer Parts { float parts[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform Params {
    int n_heads;
    int head_dim;
    int span;
} pc;

void main() {
    const uint h = gl_WorkGroupID.x;
    const uint t = gl_WorkGroupID.y;
    const uint D = uint(pc.head_dim);
    const uint splits = (uint(pc.span) + ATT_SPLIT - 1u) / ATT_SPLIT;
    const uint runs = uint(step[t]) / ATT_SPLIT + 1u;
    const uint stride = D + 2u;
    const uint p0 = (t * uint(pc.n_heads) + h) * splits * stride;
    float m_all = parts[p0];
    for (uint r = 1u; r < runs; r++) {
        m_all = max(m_all, parts[p0 + r * stride]);
    }
    precise float total = 0.0;
    for (uint r = 0u; r < runs; r++) {
        total += parts[p0 + r * stride + 1u] * exp(parts[p0 + r * stride] - m_all);
    }
    for (uint d = gl_LocalInvocationID.x; d < D; d += WG_SIZE) {
        precise float acc = 0.0;
        for (uint r = 0u; r < runs; r++) {
            const float weight = parts[p0 + r * stride + 1u] * exp(parts[p0 + r * stride] - m_all)
                / total;
            acc += parts[p0 + r * stride + 2u + d] * weight;
        }
        outv[(t * uint(pc.n_heads) + h) * D + d] = acc;
    }
}
