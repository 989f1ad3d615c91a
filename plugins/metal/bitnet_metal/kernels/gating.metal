// relu2_mul and silu_mul: elementwise FFN gating, one thread per element (grid = count threads).
// WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

kernel void relu2_mul(device const float* gate [[buffer(0)]],
                      device const float* up [[buffer(1)]],
                      device float* y [[buffer(2)]],
                      constant int& count [[buffer(3)]],
                      uint i [[thread_position_in_grid]])
{
    if (int(i) < count) {
        const float r = max(gate[i], 0.0f);
        y[i] = (r * r) * up[i];
    }
}

kernel void silu_mul(device const float* gate [[buffer(0)]],
                     device const float* up [[buffer(1)]],
                     device float* y [[buffer(2)]],
                     constant int& count [[buffer(3)]],
                     uint i [[thread_position_in_grid]])
{
    if (int(i) < count) {
        const float g = gate[i];
        y[i] = (g / (1.0f + precise::exp(-g))) * up[i];
    }
}
