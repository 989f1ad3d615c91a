// NEOX rotary embedding. x [n, H*D]; pair (i, i + D/2) of each head of row t rotates by the
// angle of position step[t] (a device value: a recorded step replays with new positions, and
// rows of many sequences each sit at their own) and index i, read from cos/sin tables
// [positions, D/2] that the host
// computed in float64 once per (theta, D). Where the device has cl_khr_fp64 the tables and the
// rotation stay in double, as the reference computes them. Global size (H * D/2, n).
// (angle_t and rope_pair: common.cl, shared with the fused rope_attention)

__kernel void rope(__global const float* x, const int n_heads, const int head_dim,
                   __global const angle_t* cos_table, __global const angle_t* sin_table,
                   __global const int* step, __global float* y) {
    const int half_dim = head_dim / 2;
    const int gid = get_global_id(0);
    const int t = get_global_id(1);
    if (gid >= n_heads * half_dim) {
        return;
    }
    const int h = gid / half_dim;
    const int i = gid % half_dim;
    const size_t first = (size_t)t * n_heads * head_dim + h * head_dim + i;
    const size_t angle = (size_t)step[t] * half_dim + i;
    const float2 r = rope_pair(x[first], x[first + half_dim], cos_table[angle],
                               sin_table[angle]);
    y[first] = r.x;
    y[first + half_dim] = r.y;
}
