// rope: NEOX rotary embedding of f32 x [n, H * D] for positions pos .. pos + n - 1 -> new f32
// buffer. Pair (i, i + D/2) of each head turns by p * theta^(-2i/D); like the reference, the
// angle, its cos/sin and the rotation are computed in double and rounded to f32 once.
// Grid (H, n), ROPE_THREADS threads striding over the D/2 pairs. rope_rows: the same for n
// rows of n sequences, each at its own position.
#include "common.cuh"

#define ROPE_THREADS 64

__device__ __forceinline__ void rope_head(const float* __restrict__ x, float* __restrict__ y,
                                          size_t base, int head_dim, double p, double theta)
{
    const int half = head_dim / 2;
    for (int i = threadIdx.x; i < half; i += ROPE_THREADS) {
        const double inv_freq = pow(theta, -2.0 * (double)i / (double)head_dim);
        double s;
        double c;
        sincos(p * inv_freq, &s, &c);
        const double a = (double)x[base + i];
        const double b = (double)x[base + i + half];
        y[base + i] = (float)(a * c - b * s);
        y[base + i + half] = (float)(a * s + b * c);
    }
}

extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_neox(
    const float* __restrict__ x, float* __restrict__ y, int n_heads, int head_dim, int pos,
    double theta)
{
    const int token = blockIdx.y;
    const size_t base = ((size_t)token * n_heads + blockIdx.x) * head_dim;
    rope_head(x, y, base, head_dim, (double)(pos + token), theta);
}

// rope_rows: row r of x is one token of its own sequence, at position pos[r] (int32 [n]).
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_rows(
    const float* __restrict__ x, float* __restrict__ y, int n_heads, int head_dim,
    const int* __restrict__ pos, double theta)
{
    const int row = blockIdx.y;
    const size_t base = ((size_t)row * n_heads + blockIdx.x) * head_dim;
    rope_head(x, y, base, head_dim, (double)pos[row], theta);
}
