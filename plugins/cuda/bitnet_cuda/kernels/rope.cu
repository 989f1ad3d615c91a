// rope: NEOX rotary embedding of f32 x [n, H * D] -> new f32 buffer. Pair (i, i + D/2) of each
// head of row t turns by the angle of position step[t] and index i, read from cos / sin tables
// [positions, D/2] in double that the host computed once per (theta, D) as the reference does
// (bitnet.hal.rope_tables); the rotation is rope.cuh's (in double, rounded to f32 once).
// Positions are read from device memory, so a captured step replays at new positions and the
// rows of many sequences (attention_rows) each sit at their own.
// Grid: (H * D/2, n) items, one per pair, in blocks of ROPE_THREADS.
#include "rope.cuh"

#define ROPE_THREADS 256

extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope(
    const float* __restrict__ x, const double* __restrict__ cos_table,
    const double* __restrict__ sin_table, const int* __restrict__ step, float* __restrict__ y,
    int n_heads, int head_dim)
{
    const int half = head_dim / 2;
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    const int t = blockIdx.y;
    if (gid >= n_heads * half) {
        return;
    }
    const int h = gid / half;
    const int i = gid % half;
    const size_t first = ((size_t)t * n_heads + h) * head_dim + i;
    const size_t angle = (size_t)step[t] * half + i;
    rope_pair(x[first], x[first + half], cos_table[angle], sin_table[angle], y[first],
              y[first + half]);
}
