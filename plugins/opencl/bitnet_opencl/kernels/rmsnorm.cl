// RMSNorm in ggml's order: sum of f32 squares (in double where the device has cl_khr_fp64),
// mean rounded to f32, scale = 1 / sqrt(mean + eps) in f32, y = (x * scale) * w.
// x [n, K], w [1, K]; one work-group per row.
#ifdef USE_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
#else
typedef float acc_t;
#endif

__kernel void rmsnorm(__global const float* x, __global const float* w, const int K,
                      const float eps, __global float* y, __local acc_t* scratch) {
    const int t = get_group_id(0);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    __global const float* row = x + (size_t)t * K;
    acc_t ss = 0;
    for (int k = lid; k < K; k += wg) {
        const float square = row[k] * row[k];
        ss += (acc_t)square;
    }
    REDUCE(scratch, ss, lid, wg, OP_ADD);
    const float mean = (float)(scratch[0] / (acc_t)K);
    const float scale = div_rn(1.0f, sqrt_rn(mean + eps));
    for (int k = lid; k < K; k += wg) {
        y[(size_t)t * K + k] = (row[k] * scale) * w[k];
    }
}
