#version 450
#extension GL_GOOGLE_include_directive : require
// I2_S matmul on per-token int8 activations: y [n, M] = float32(float32(dot) / s_t) * wscale
// [* out_scale], dot = sum((code - 1) * q) exact. Codes uint8 [M, K/4] in the I2_S interleave
// (bitnet_vulkan.weights): word u of a row holds, per shift 6-2g, 4 consecutive elements
// 128*(u/8) + 32*g + 4*(u%8) + 0..3. Lanes stride over a row's words; int sums meet in shared.
#include "common.glsl"
#include "matmul.glsl"

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 2) readonly buffer S { float act_scale[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int n;
    int M;
    float wscale;
    float out_scale;
} pc;

shared int red[ROWS * TILE_N * WG_SIZE];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint r = gl_LocalInvocationID.y;
    const uint m = matmul_row();
    const uint t0 = gl_WorkGroupID.y * TILE_N;
    const uint K = uint(pc.K);
    const uint n = uint(pc.n);
    const uint M = uint(pc.M);
    const uint words = K / 16u;
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (m < M) {
        for (uint u = lane; u < words; u += WG_SIZE) {
            const uint word = codes[m * words + u];
            const uint base = (u / 8u) * 128u + (u % 8u) * 4u;
            for (int g = 0; g < 4; g++) {
                const uint w4 = ternary_packed(word, g);
                for (uint tt = 0u; tt < TILE_N; tt++) {
                    if (t0 + tt < n) {
                        const uint qi = ((t0 + tt) * K + base + 32u * uint(g)) / 4u;
                        acc[tt] += dot4_packed(w4, q[qi]);
                    }
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
        const uint t = t0 + lane;
        precise float v = div_rn(float(red[mine + lane * WG_SIZE]), act_scale[t]) * pc.wscale;
        if (pc.out_scale != 1.0) {
            v = v * pc.out_scale;
        }
        y[t * M + m] = v;
    }
}
