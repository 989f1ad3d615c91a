#version 450
#extension GL_GOOGLE_include_directive : require
// out [n, K] f32 = rows ids [n] of a float-format table (decoded per FMT). Dispatch
// (ceil(K / WG_SIZE), n).
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer W { uint w[]; };
layout(std430, set = 0, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform Params {
    int row_bytes;
    int K;
} pc;

#include "float_decode.glsl"

void main() {
    const uint k = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y;
    if (k < uint(pc.K)) {
        outv[t * uint(pc.K) + k] = decode(uint(ids[t]) * uint(pc.row_bytes), k);
    }
}
