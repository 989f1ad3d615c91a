#version 450
#extension GL_GOOGLE_include_directive : require
// Float-format matmul y [n, M] = W [M, K] x [n, K] (any summation order), W in its on-disk
// bytes (row_bytes per row, decoded per FMT). Work-groups as in matmul.glsl.
#include "common.glsl"
#include "matmul.glsl"

layout(std430, set = 0, binding = 0) readonly buffer W { uint w[]; };
layout(std430, set = 0, binding = 1) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int row_bytes;
    int K;
    int n;
    int M;
    float out_scale;
} pc;

#include "float_decode.glsl"

shared float red[ROWS * TILE_N * WG_SIZE];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint r = gl_LocalInvocationID.y;
    const uint m = matmul_row();
    const uint t0 = gl_WorkGroupID.y * TILE_N;
    const uint K = uint(pc.K);
    const uint n = uint(pc.n);
    const uint M = uint(pc.M);
    float acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0.0;
    }
    if (m < M) {
        const uint row_start = m * uint(pc.row_bytes);
        for (uint k = lane; k < K; k += WG_SIZE) {
            const float wk = decode(row_start, k);
            for (uint tt = 0u; tt < TILE_N; tt++) {
                if (t0 + tt < n) {
                    acc[tt] += wk * x[(t0 + tt) * K + k];
                }
            }
        }
    }
    const uint mine = r * TILE_N * WG_SIZE;
    for (uint tt = 0u; tt < TILE_N; tt++) {
        red[mine + tt * WG_SIZE + lane] = acc[tt];
    }
    barrier();
    for (uint stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            for (uint tt = 0u; tt < TILE_N; tt++) {
                red[mine + tt * WG_SIZE + lane] += red[mine + tt * WG_SIZE + lane + stride];
            }
        }
        barrier();
    }
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const float total = red[mine + lane * WG_SIZE];
        y[(t0 + lane) * M + m] = pc.out_scale != 1.0 ? total * pc.out_scale : total;
    }
}
