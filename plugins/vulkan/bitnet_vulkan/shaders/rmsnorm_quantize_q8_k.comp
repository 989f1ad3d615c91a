#version 450
#extension GL_GOOGLE_include_directive : require
// A sub-norm and the Q8_K quantization of its output (TQ), one work-group per row:
// x [n, K] f32, w [K] -> q [n, K] int8 (4 per word), d [n, K/256] (GpuBackend.decode_layer).
#include "common.glsl"
#include "norm.glsl"
#include "fused.glsl"

layout(local_size_x_id = 0) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Wt { float weight[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 3) writeonly buffer D { float d[]; };
layout(push_constant) uniform Params {
    int K;
    float eps;
} pc;

void main() {
    const uint t = gl_WorkGroupID.x;
    const uint K = uint(pc.K);
    NORM_QUANTIZE_Q8K(x, t * K, weight, K, pc.eps, q, t * K / 4u, d, t * (K / 256u),
                      gl_LocalInvocationID.x, WG_SIZE)
}
