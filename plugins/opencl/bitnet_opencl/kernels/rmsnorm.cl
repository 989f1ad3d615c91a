// RMSNorm in ggml's order (common.cl's rms_scale: f32 squares summed in acc_t, double where the
// device has cl_khr_fp64, by FIXED_REDUCE's tree, which the fused decode-layer kernels share),
// y = (x * scale) * w. x [n, K], w [1, K]; one work-group per row.

__kernel void rmsnorm(__global const float* x, __global const float* w, const int K,
                      const float eps, __global float* y, __local acc_t* scratch) {
    const int t = get_group_id(0);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    __global const float* row = x + (size_t)t * K;
    const float scale = rms_scale(row, K, eps, scratch, lid, wg);
    for (int k = lid; k < K; k += wg) {
        y[(size_t)t * K + k] = normed(row[k], scale, w[k]);
    }
}
