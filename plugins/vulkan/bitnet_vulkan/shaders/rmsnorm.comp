#version 450
#extension GL_GOOGLE_include_directive : require
// RMSNorm in ggml's order: sum of f32 squares (in double when built with USE_FP64 and the
// device has shaderFloat64), mean rounded to f32, scale = 1 / sqrt(mean + eps) in f32,
// y = (x * scale) * w. x [n, K], w [1, K]; one work-group per row.
#include "common.glsl"

layout(local_size_x_id = 0) in;

#ifdef USE_FP64
#define ACC double
#else
#define ACC float
#endif

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Wt { float weight[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    float eps;
} pc;

shared ACC red[WG_SIZE];

void main() {
    const uint t = gl_WorkGroupID.x;
    const uint lid = gl_LocalInvocationID.x;
    const uint K = uint(pc.K);
    const uint row = t * K;
    ACC ss = ACC(0);
    for (uint k = lid; k < K; k += WG_SIZE) {
        precise float square = x[row + k] * x[row + k];
        ss += ACC(square);
    }
    red[lid] = ss;
    TREE_REDUCE(red, lid, OP_ADD)
    const float mean = float(red[0] / ACC(K));
    const float scale = div_rn(1.0, sqrt_rn(mean + pc.eps));
    for (uint k = lid; k < K; k += WG_SIZE) {
        precise float v = (x[row + k] * scale) * weight[k];
        y[row + k] = v;
    }
}
