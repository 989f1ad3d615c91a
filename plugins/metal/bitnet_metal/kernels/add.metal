// add: elementwise a + b (the residual connections), one thread per element.
// WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

kernel void add(device const float* a [[buffer(0)]],
                device const float* b [[buffer(1)]],
                device float* y [[buffer(2)]],
                constant int& count [[buffer(3)]],
                uint i [[thread_position_in_grid]])
{
    if (int(i) < count) {
        y[i] = a[i] + b[i];
    }
}
