// rmsnorm: y = (x * (1 / sqrt(mean(x^2) + eps))) * weight, one threadgroup of 256 per row.
// Metal has no double: squares are summed in f32 here (the reference sums in float64), so the
// result can differ in the last ulps. WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

kernel void rmsnorm(device const float* x [[buffer(0)]],
                    device const float* weight [[buffer(1)]],
                    device float* y [[buffer(2)]],
                    constant int& K [[buffer(3)]],
                    constant float& eps [[buffer(4)]],
                    uint row [[threadgroup_position_in_grid]],
                    uint tid [[thread_position_in_threadgroup]],
                    uint lane [[thread_index_in_simdgroup]],
                    uint sg [[simdgroup_index_in_threadgroup]])
{
    threadgroup float tg_sum[8];
    device const float* xr = x + (ulong)row * K;
    float sum = 0.0f;
    for (int k = tid; k < K; k += 256) {
        sum += xr[k] * xr[k];
    }
    sum = simd_sum(sum);
    if (lane == 0) {
        tg_sum[sg] = sum;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float total = 0.0f;
    for (int w = 0; w < 8; ++w) {
        total += tg_sum[w];
    }
    const float scale = 1.0f / sqrt(total / float(K) + eps);
    for (int k = tid; k < K; k += 256) {
        y[(ulong)row * K + k] = (xr[k] * scale) * weight[k];
    }
}
