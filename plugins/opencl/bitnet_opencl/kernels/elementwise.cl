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
        y[i] = relu2_mul_value(gate[i], up[i]);
    }
}

// Arch `bitnet` gating: gate * sigmoid(gate) * up.
__kernel void silu_mul(__global const float* gate, __global const float* up, const int count,
                       __global float* y) {
    const int i = get_global_id(0);
    if (i < count) {
        y[i] = silu_mul_value(gate[i], up[i]);
    }
}
