#version 450
#extension GL_GOOGLE_include_directive : require
// out [n, K] f32 = rows ids [n] of a Q6_K table, exactly dequantized: (d * sc) * q, the two f32
// roundings of ggml's dequantize_row_q6_K (d * sc, an f16 times an int8, is exact). The table is
// split as for linear_q6k.comp: codes int8 [V, K] and sub-scales int8 [V, K/16], 4 per word,
// block scales f32 [V, K/256]. Dispatch (ceil(K / WG_SIZE), n).
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer SC { uint sub[]; };
layout(std430, set = 0, binding = 2) readonly buffer DW { float wscale[]; };
layout(std430, set = 0, binding = 3) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform Params { int K; } pc;

void main() {
    const uint k = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y;
    const uint K = uint(pc.K);
    if (k < K) {
        const uint row = uint(ids[t]);
        const uint e = row * K + k;
        const uint s = row * (K / 16u) + k / 16u;
        const float d = wscale[row * (K / 256u) + k / 256u];
        const int sc = sbyte(sub[s / 4u], int(s % 4u));
        const int qv = sbyte(codes[e / 4u], int(e % 4u));
        precise float v = (d * float(sc)) * float(qv);
        outv[t * K + k] = v;
    }
}
