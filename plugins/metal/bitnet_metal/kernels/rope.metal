// rope: NEOX rotation of pairs (i, i + D/2) of each head of row t by the angle of position
// step[t] and index i, read from the cos / sin tables [positions, D/2] the host computed once
// per (theta, D) (bitnet.hal.rope_tables; f32 here: Metal has no double, so the rotation can
// differ from the reference's float64 in the last ulp). Positions are device values: a
// recorded step replays at new ones, and the rows of many sequences each sit at their own.
// KERNELS order: x, cos, sin, step, out, then n_heads, head_dim. Grid (H * D/2, n) items.
// WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

kernel void rope(device const float* x [[buffer(0)]],
                 device const float* cos_table [[buffer(1)]],
                 device const float* sin_table [[buffer(2)]],
                 device const int* step [[buffer(3)]],
                 device float* y [[buffer(4)]],
                 constant int& n_heads [[buffer(5)]],
                 constant int& head_dim [[buffer(6)]],
                 uint2 gid [[thread_position_in_grid]])
{
    const int half_dim = head_dim / 2;
    const int pair = int(gid.x);
    const int t = int(gid.y);
    if (pair >= n_heads * half_dim) {
        return;
    }
    const int h = pair / half_dim;
    const int i = pair % half_dim;
    const ulong first = (ulong)t * n_heads * head_dim + h * head_dim + i;
    const ulong angle = (ulong)step[t] * half_dim + i;
    const float c = cos_table[angle];
    const float s = sin_table[angle];
    const float a = x[first];
    const float b = x[first + half_dim];
    y[first] = a * c - b * s;
    y[first + half_dim] = a * s + b * c;
}
