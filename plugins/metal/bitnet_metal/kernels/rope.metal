// rope: NEOX rotation of pairs (i, i + D/2) by p * theta^(-2i/D). Grid (H, n) threadgroups.
// Metal has no double: angles are f32 here (the reference uses float64), which drifts for large
// positions; a port for long contexts should reduce p * inv_freq modulo 2*pi in two f32 parts.
// WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

kernel void rope_neox(device const float* x [[buffer(0)]],
                      device float* y [[buffer(1)]],
                      constant int& n_heads [[buffer(2)]],
                      constant int& head_dim [[buffer(3)]],
                      constant int& pos [[buffer(4)]],
                      constant float& theta [[buffer(5)]],
                      uint2 group [[threadgroup_position_in_grid]],
                      uint tid [[thread_position_in_threadgroup]],
                      uint threads [[threads_per_threadgroup]])
{
    const int half_dim = head_dim / 2;
    const ulong base = ((ulong)group.y * n_heads + group.x) * head_dim;
    const float p = float(pos + int(group.y));
    for (int i = int(tid); i < half_dim; i += int(threads)) {
        const float angle = p * pow(theta, -2.0f * float(i) / float(head_dim));
        const float c = precise::cos(angle);
        const float s = precise::sin(angle);
        const float a = x[base + i];
        const float b = x[base + i + half_dim];
        y[base + i] = a * c - b * s;
        y[base + i + half_dim] = a * s + b * c;
    }
}
