#version 450
#extension GL_GOOGLE_include_directive : require
// Q8_K activations (llama.cpp, TQ1_0/TQ2_0): work-group (b, t) quantizes 256-block b of token t.
// q [n, K] int8 (4 per word), d [n, K/256] = 1 / (-127 / amax), amax the signed element of
// largest magnitude, the first one on ties; an all-zero block gives d = 0 and q = 0.
#include "common.glsl"
#include "norm.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 2) writeonly buffer D { float d[]; };
layout(push_constant) uniform Params { int K; } pc;

shared float best_abs[WG_SIZE];
shared uint best_idx[WG_SIZE];

void main() {
    const uint b = gl_WorkGroupID.x;
    const uint t = gl_WorkGroupID.y;
    const uint lid = gl_LocalInvocationID.x;
    const uint K = uint(pc.K);
    const uint nb = K / 256u;
    const uint base = t * K + b * 256u;
    float a = -1.0;
    uint idx = 0u;
    for (uint j = lid; j < 256u; j += WG_SIZE) {
        float v = abs(x[base + j]);
        if (v > a) {
            a = v;
            idx = j;
        }
    }
    best_abs[lid] = a;
    best_idx[lid] = idx;
    barrier();
    for (uint stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            float other = best_abs[lid + stride];
            uint other_idx = best_idx[lid + stride];
            if (other > best_abs[lid] || (other == best_abs[lid] && other_idx < best_idx[lid])) {
                best_abs[lid] = other;
                best_idx[lid] = other_idx;
            }
        }
        barrier();
    }
    const float amax = x[base + best_idx[0]];
    const float iscale = amax == 0.0 ? 0.0 : q8k_iscale(amax);
    for (uint w = lid; w < 64u; w += WG_SIZE) {
        const uint e = base + 4u * w;
        q[base / 4u + w] = pack4(q8k_value(iscale, x[e]), q8k_value(iscale, x[e + 1u]),
                                 q8k_value(iscale, x[e + 2u]), q8k_value(iscale, x[e + 3u]));
    }
    if (lid == 0u) {
        d[t * nb + b] = amax == 0.0 ? 0.0 : q8k_d(iscale);
    }
}
