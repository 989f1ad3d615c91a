// Elementwise ops over flat f32 arrays of `count` elements (global size >= count).

__kernel void add(__global const float* a, __global const float* b, const int count,
                  __global float* y) {
    const int i = get_global_id(0);
    if (i < count) {
        y[i] = a[i] + b[i];
    }
}

// BitNet b1.58 gating: max(gate, 0)^2 * up.
__kernel void relu2_mul(__global const float* gate, __global const float* up, const int count,
                        __global float* y) {
    const int i = get_global_id(0);
    if (i < count) {
        const float r = fmax(gate[i], 0.0f);
        y[i] = r * r * up[i];
    }
}

// Arch `bitnet` gating: gate * sigmoid(gate) * up.
__kernel void silu_mul(__global const float* gate, __global const float* up, const int count,
                       __global float* y) {
    const int i = get_global_id(0);
    if (i < count) {
        const float g = gate[i];
        y[i] = g / (1.0f + exp(-g)) * up[i];
    }
}
