#version 450
#extension GL_GOOGLE_include_directive : require
// Elementwise ops over `count` f32 values; OP is specialization constant 1:
// 0 add (a + b), 1 relu2_mul (max(a, 0)^2 * b), 2 silu_mul (a * sigmoid(a) * b).
#include "common.glsl"
#include "norm.glsl"

layout(local_size_x_id = 0) in;

layout(constant_id = 1) const int OP = 0;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params { int count; } pc;

void main() {
    const uint i = gl_GlobalInvocationID.x;
    if (i >= uint(pc.count)) {
        return;
    }
    if (OP == 0) {
        y[i] = a[i] + b[i];
    } else if (OP == 1) {
        y[i] = relu2_mul_value(a[i], b[i]);
    } else {
        y[i] = silu_mul_value(a[i], b[i]);
    }
}
