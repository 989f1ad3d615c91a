#version 450
#extension GL_GOOGLE_include_directive : require
// RMSNorm in ggml's order (norm.glsl's RMS_SCALE: f32 squares summed in double when built with
// USE_FP64 and the device has shaderFloat64, by FIXED_REDUCE's tree, which the fused
// decode-layer shaders share), y = (x * scale) * w. x [n, K], w [1, K]; one work-group per row.
#include "common.glsl"
#include "norm.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Wt { float weight[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    float eps;
} pc;

shared ACC wide[REDUCE_LANES];

void main() {
    const uint t = gl_WorkGroupID.x;
    const uint lid = gl_LocalInvocationID.x;
    const uint K = uint(pc.K);
    const uint row = t * K;
    float scale;
    RMS_SCALE(scale, wide, x, row, K, pc.eps, lid, WG_SIZE)
    for (uint k = lid; k < K; k += WG_SIZE) {
        y[row + k] = normed(x[row + k], scale, weight[k]);
    }
}
