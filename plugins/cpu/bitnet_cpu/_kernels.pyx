# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin Cython layer over the C kernels: shape checks happen in Python (backend.py); every call
here releases the GIL for the whole kernel."""

from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t, uint64_t

cdef extern from "bitnet_cpu.h" nogil:
    ctypedef struct bn_kernels:
        const char *name
        int tile_tokens
        int row_group
        int q6_k_grouped
        void (*ternary_tile)(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                             int nt, int32_t *sums) noexcept nogil
    const bn_kernels *bn_kernels_get(const char *name)
    int t2_has_code3(const uint8_t *data, size_t n)
    int release_pages(const void *addr, size_t len)
    int advise_hugepages(const void *addr, size_t len)
    int keep_freed_heap(size_t mmap_below, size_t trim_above)
    void t2_to_rows16(const uint8_t *t2, int M, int K, uint8_t *out, int nthreads)
    void tq2_0_repack(const uint8_t *src, int M, int K, uint8_t *codes, float *d, int nthreads)
    void tq1_0_repack(const uint8_t *src, int M, int K, uint8_t *codes, float *d, int nthreads)
    void q6_k_to_groups16(const uint8_t *src, int M, int K, uint8_t *out, int nthreads)
    void q6_k_group_row(const uint8_t *groups, int K, int row, uint8_t *out)
    void act_quantize_per_token_i8(const float *x, int n, int K, int8_t *q, float *s,
                                   int32_t *asum)
    void act_quantize_q8_k(const float *x, int n, int K, int8_t *q, float *d, int32_t *bsum)
    int linear_ternary(const bn_kernels *kt, int fmt, const uint8_t *codes, const float *scales,
                       int M, int K, const float *x, int n, float *y, float out_scale,
                       int nthreads)
    int linear_float(const bn_kernels *kt, int fmt, const uint8_t *w, size_t row_bytes, int M,
                     int K, const float *x, int n, float *y, float out_scale, int nthreads)
    int dequantize_row(int fmt, const uint8_t *row, int K, float *out)
    void rmsnorm_f32(const float *x, const float *w, int n, int K, float eps, float *y,
                     int nthreads)
    void rope_neox_f32(float *x, int n, int n_heads, int head_dim, int pos, double theta)
    void relu2_mul_f32(const float *g, const float *u, size_t count, float *y, int nthreads)
    void silu_mul_f32(const float *g, const float *u, size_t count, float *y, int nthreads)
    void add_f32(const float *a, const float *b, size_t count, float *y, int nthreads)
    enum: BN_KV_BLOCK
    int attention_f16kv(const bn_kernels *kt, const float *q, const float *k, const float *v,
                        uint16_t *kcache, uint16_t *vcache, const int32_t *table, int n, int pos,
                        int n_heads, int n_kv_heads, int head_dim, float *out, int nthreads)
    int attention_rows_f16kv(const bn_kernels *kt, float *q, float *k, const float *v,
                             uint16_t *kcache, uint16_t *vcache, const int32_t *positions,
                             const int32_t *tables, int table_len, int B, int n_heads,
                             int n_kv_heads, int head_dim, double theta, float *out,
                             int nthreads)
    uint64_t stream_read(const uint8_t *data, size_t n, int nthreads)
    ctypedef struct bn_matrix:
        const uint8_t *codes
        const float *scales
        int M
        int K
        float out_scale
    ctypedef struct bn_layer:
        int fmt
        int silu
        int n_heads
        int n_kv_heads
        int head_dim
        float eps
        double theta
        const float *attn_norm
        const float *attn_sub_norm
        const float *ffn_norm
        const float *ffn_sub_norm
        bn_matrix q, k, v, o, gate, up, down
    int decode_layer(const bn_kernels *kt, const bn_layer *L, float *h, uint16_t *kcache,
                     uint16_t *vcache, const int32_t *table, int pos, int nthreads)

# positions per block of a paged KV cache, as the kernels address them (kernels/bitnet_cpu.h)
KV_BLOCK = BN_KV_BLOCK


cdef const int32_t *_table(const int32_t[::1] table):
    """A block table's entries, or NULL for None (position p is cache row p)."""
    if table is None:
        return NULL
    return &table[0]


def _check(int rc, str what):
    if rc == -1:
        raise MemoryError(f"{what}: out of memory for the activation scratch")
    if rc != 0:
        raise ValueError(f"{what}: unsupported shape or format (kernel returned {rc})")


cdef class Kernels:
    """One ISA's kernel table ("generic", "avx2", "avx512", "neon")."""

    cdef const bn_kernels *kt

    def __cinit__(self, str name):
        cdef bytes key = name.encode()
        self.kt = bn_kernels_get(key)
        if self.kt == NULL:
            raise ValueError(f"this build of bitnet-cpu has no '{name}' kernels")

    @property
    def name(self) -> str:
        return self.kt.name.decode()

    @property
    def row_group(self) -> int:
        """0: weights in the per-row t2 layout; 16: in the row-interleaved r16 layout."""
        return self.kt.row_group

    @property
    def q6_k_grouped(self) -> bool:
        """True: Q6_K weights are held in the 16-row grouped layout (q6_k_to_groups16)."""
        return bool(self.kt.q6_k_grouped)

    @property
    def tile_tokens(self) -> int:
        return self.kt.tile_tokens

    def linear_ternary(self, int fmt, const uint8_t[::1] codes, const float[::1] scales,
                       int M, int K, const float[:, ::1] x, float[:, ::1] y, float out_scale,
                       int nthreads):
        cdef int rc
        with nogil:
            rc = linear_ternary(self.kt, fmt, &codes[0], &scales[0], M, K, &x[0, 0],
                                <int>x.shape[0], &y[0, 0], out_scale, nthreads)
        _check(rc, "linear_ternary")

    def linear_float(self, int fmt, const uint8_t[:, ::1] w, int K, const float[:, ::1] x,
                     float[:, ::1] y, float out_scale, int nthreads):
        cdef int rc
        with nogil:
            rc = linear_float(self.kt, fmt, &w[0, 0], <size_t>w.shape[1], <int>w.shape[0], K,
                              &x[0, 0], <int>x.shape[0], &y[0, 0], out_scale, nthreads)
        _check(rc, "linear_float")

    def decode_layer(self, DecodeLayer layer, float[:, ::1] h, uint16_t[:, ::1] kcache,
                     uint16_t[:, ::1] vcache, const int32_t[::1] table, int pos, int nthreads):
        """h [1, d] += one block of one token at pos (in place), stored at its row of the
        caches (through the block table; None: row pos). backend.py checks that pos and the
        table fit the planes."""
        cdef int rc
        cdef const int32_t *tp = _table(table)
        if h.shape[0] != 1 or h.shape[1] != layer.L.q.K:
            raise ValueError(f"decode_layer: h must be [1, {layer.L.q.K}]")
        if (kcache.shape[1] != layer.L.k.M or vcache.shape[1] != layer.L.k.M
                or vcache.shape[0] != kcache.shape[0]):
            raise ValueError(f"decode_layer: the cache planes {kcache.shape} / "
                             f"{vcache.shape} do not fit {layer.L.k.M} values a row")
        with nogil:
            rc = decode_layer(self.kt, &layer.L, &h[0, 0], &kcache[0, 0], &vcache[0, 0], tp,
                              pos, nthreads)
        _check(rc, "decode_layer")

    def ternary_tile(self, const uint8_t[::1] row, int K, int gps, const int8_t[:, ::1] q,
                     int32_t[:, ::1] sums):
        """Raw sums of code*q for one t2 row (tests): q [nt, K], sums [K / (128 * gps), nt]."""
        cdef int nt = <int>q.shape[0]
        with nogil:
            self.kt.ternary_tile(&row[0], K, gps, &q[0, 0], <size_t>q.shape[1], nt, &sums[0, 0])

    def attention(self, const float[:, ::1] q, const float[:, ::1] k, const float[:, ::1] v,
                  uint16_t[:, ::1] kcache, uint16_t[:, ::1] vcache, const int32_t[::1] table,
                  int pos, int n_heads, int n_kv_heads, int head_dim, float[:, ::1] out,
                  int nthreads):
        """kcache / vcache: this layer's uint16 [n_ctx, Hkv*D] planes; table: int32 block
        table or None (contiguous)."""
        cdef int rc
        cdef const int32_t *tp = _table(table)
        with nogil:
            rc = attention_f16kv(self.kt, &q[0, 0], &k[0, 0], &v[0, 0], &kcache[0, 0],
                                 &vcache[0, 0], tp, <int>q.shape[0], pos, n_heads, n_kv_heads,
                                 head_dim, &out[0, 0], nthreads)
        _check(rc, "attention")

    def attention_rows(self, float[:, ::1] q, float[:, ::1] k, const float[:, ::1] v,
                       uint16_t[:, ::1] kcache, uint16_t[:, ::1] vcache,
                       const int32_t[::1] positions, const int32_t[:, ::1] tables, int n_heads,
                       int n_kv_heads, int head_dim, double theta, float[:, ::1] out,
                       int nthreads):
        """q and k are rotated in place; kcache / vcache: this layer's uint16 [n_ctx, Hkv*D]
        planes of the pool; tables: int32 [B, T], one block table per row."""
        cdef int rc
        with nogil:
            rc = attention_rows_f16kv(self.kt, &q[0, 0], &k[0, 0], &v[0, 0], &kcache[0, 0],
                                      &vcache[0, 0], &positions[0], &tables[0, 0],
                                      <int>tables.shape[1], <int>q.shape[0], n_heads,
                                      n_kv_heads, head_dim, theta, &out[0, 0], nthreads)
        _check(rc, "attention_rows")


cdef bn_matrix _matrix(tuple m, list keep):
    """(codes uint8 [..], scales f32 [..], M, K, out_scale) -> a bn_matrix over those arrays."""
    cdef const uint8_t[::1] codes = m[0]
    cdef const float[::1] scales = m[1]
    cdef bn_matrix out
    keep.extend((codes, scales))
    out.codes = &codes[0]
    out.scales = &scales[0]
    out.M = m[2]
    out.K = m[3]
    out.out_scale = m[4]
    return out


cdef const float *_vector(object a, list keep) except? NULL:
    """f32 [n] array -> its data pointer (kept alive in keep), or NULL for None."""
    if a is None:
        return NULL
    cdef const float[::1] v = a
    keep.append(v)
    return &v[0]


cdef class DecodeLayer:
    """One transformer block's weights for decode_layer (kernels/bitnet_cpu.h bn_layer).
    matrices: q, k, v, o, gate, up, down as (codes, scales, M, K, out_scale) in the table's
    layout; sub-norm weights may be None (no sub-norm)."""

    cdef bn_layer L
    cdef list keep

    def __init__(self, int fmt, bint silu, int n_heads, int n_kv_heads, int head_dim,
                 float eps, double theta, attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm,
                 tuple matrices):
        self.keep = []
        if len(matrices) != 7 or attn_norm is None or ffn_norm is None:
            raise ValueError("DecodeLayer: seven matrices and both pre-norms are needed")
        self.L.fmt = fmt
        self.L.silu = silu
        self.L.n_heads = n_heads
        self.L.n_kv_heads = n_kv_heads
        self.L.head_dim = head_dim
        self.L.eps = eps
        self.L.theta = theta
        self.L.attn_norm = _vector(attn_norm, self.keep)
        self.L.attn_sub_norm = _vector(attn_sub_norm, self.keep)
        self.L.ffn_norm = _vector(ffn_norm, self.keep)
        self.L.ffn_sub_norm = _vector(ffn_sub_norm, self.keep)
        self.L.q = _matrix(matrices[0], self.keep)
        self.L.k = _matrix(matrices[1], self.keep)
        self.L.v = _matrix(matrices[2], self.keep)
        self.L.o = _matrix(matrices[3], self.keep)
        self.L.gate = _matrix(matrices[4], self.keep)
        self.L.up = _matrix(matrices[5], self.keep)
        self.L.down = _matrix(matrices[6], self.keep)
        # sizes the C side reads through these pointers
        for vec, width in ((attn_norm, self.L.q.K), (ffn_norm, self.L.q.K),
                           (attn_sub_norm, self.L.o.K), (ffn_sub_norm, self.L.down.K)):
            if vec is not None and len(vec) != width:
                raise ValueError(f"DecodeLayer: a norm has {len(vec)} values, rows {width}")


def has_code3(const uint8_t[::1] data) -> bool:
    cdef int bad
    with nogil:
        bad = t2_has_code3(&data[0], <size_t>data.shape[0])
    return bool(bad)


def read_once(const uint8_t[::1] data, int nthreads) -> int:
    """Read every byte of data once with nthreads threads (time it for the read bandwidth)."""
    cdef uint64_t x
    with nogil:
        x = stream_read(&data[0], <size_t>data.shape[0], nthreads)
    return x


def advise_huge(uint8_t[::1] data) -> bool:
    """Ask for transparent huge pages over data (before first use); True if the OS accepted."""
    cdef int rc
    with nogil:
        rc = advise_hugepages(&data[0], <size_t>data.shape[0])
    return rc == 0


def drop_resident(const uint8_t[::1] data) -> bool:
    """Ask the kernel to reclaim these (already repacked) file pages; True if it accepted."""
    cdef int rc
    with nogil:
        rc = release_pages(&data[0], <size_t>data.shape[0])
    return rc == 0


def keep_heap(size_t mmap_below, size_t trim_above) -> bool:
    """Serve allocations below mmap_below bytes from the heap and keep freed memory there up to
    trim_above bytes (kernels/repack.c keep_freed_heap); False where the C library cannot."""
    return keep_freed_heap(mmap_below, trim_above) == 0


def to_rows16(const uint8_t[::1] t2, int M, int K, uint8_t[::1] out, int nthreads):
    """t2 codes [M*K/4] -> the r16 layout [ceil(M/16)*16*K/4]."""
    if t2.shape[0] < <Py_ssize_t>M * K // 4 or out.shape[0] < <Py_ssize_t>((M + 15) // 16) * 4 * K:
        raise ValueError("to_rows16: buffers too small")
    with nogil:
        t2_to_rows16(&t2[0], M, K, &out[0], nthreads)


def repack_tq(int fmt, const uint8_t[:, ::1] src, int M, int K, uint8_t[::1] codes,
              float[::1] d, int nthreads):
    with nogil:
        if fmt == 35:
            tq2_0_repack(&src[0, 0], M, K, &codes[0], &d[0], nthreads)
        else:
            tq1_0_repack(&src[0, 0], M, K, &codes[0], &d[0], nthreads)


def quantize_per_token_i8(const float[:, ::1] x, int8_t[:, ::1] q, float[::1] s,
                          int32_t[::1] asum):
    with nogil:
        act_quantize_per_token_i8(&x[0, 0], <int>x.shape[0], <int>x.shape[1], &q[0, 0], &s[0],
                                  &asum[0])


def quantize_q8_k(const float[:, ::1] x, int8_t[:, ::1] q, float[:, ::1] d,
                  int32_t[:, ::1] bsum):
    with nogil:
        act_quantize_q8_k(&x[0, 0], <int>x.shape[0], <int>x.shape[1], &q[0, 0], &d[0, 0],
                          &bsum[0, 0])


def embed_rows(int fmt, const uint8_t[:, ::1] table, const int32_t[::1] ids, int K,
               float[:, ::1] out):
    cdef Py_ssize_t i
    cdef int rc = 0
    with nogil:
        for i in range(ids.shape[0]):
            rc = dequantize_row(fmt, &table[ids[i], 0], K, &out[i, 0])
            if rc != 0:
                break
    _check(rc, "embed")


def q6_k_groups(const uint8_t[:, ::1] src, uint8_t[::1] out, int nthreads):
    """Q6_K rows src [M, K/256*210] -> the grouped layout out [ceil(M/16)*16 * row bytes]."""
    cdef int M = <int>src.shape[0]
    cdef int K = <int>(src.shape[1] // 210 * 256)
    if src.shape[1] % 210 or out.shape[0] != (M + 15) // 16 * 16 * src.shape[1]:
        raise ValueError("q6_k_groups: the sizes do not fit the grouped layout")
    with nogil:
        q6_k_to_groups16(&src[0, 0], M, K, &out[0], nthreads)


def q6_k_group_rows(const uint8_t[::1] groups, int M, int K, const int32_t[::1] rows,
                    uint8_t[:, ::1] out):
    """Rows of a grouped Q6_K matrix back in the file's layout: out [len(rows), K/256*210]."""
    cdef Py_ssize_t i
    cdef size_t row_bytes = <size_t>(K // 256) * 210
    if K % 256 or groups.shape[0] < (M + 15) // 16 * 16 * row_bytes or out.shape[1] != row_bytes \
            or out.shape[0] < rows.shape[0]:
        raise ValueError("q6_k_group_rows: the sizes do not fit the grouped layout")
    for i in range(rows.shape[0]):
        if not 0 <= rows[i] < M:
            raise IndexError(f"q6_k_group_rows: row {rows[i]} is outside 0..{M - 1}")
    with nogil:
        for i in range(rows.shape[0]):
            q6_k_group_row(&groups[0], K, rows[i], &out[i, 0])


def rmsnorm(const float[:, ::1] x, const float[::1] w, float eps, float[:, ::1] y,
            int nthreads):
    with nogil:
        rmsnorm_f32(&x[0, 0], &w[0], <int>x.shape[0], <int>x.shape[1], eps, &y[0, 0], nthreads)


def rope(float[:, ::1] x, int pos, int n_heads, int head_dim, double theta):
    with nogil:
        rope_neox_f32(&x[0, 0], <int>x.shape[0], n_heads, head_dim, pos, theta)


def relu2_mul(const float[:, ::1] g, const float[:, ::1] u, float[:, ::1] y, int nthreads):
    with nogil:
        relu2_mul_f32(&g[0, 0], &u[0, 0], <size_t>(g.shape[0] * g.shape[1]), &y[0, 0],
                      nthreads)


def silu_mul(const float[:, ::1] g, const float[:, ::1] u, float[:, ::1] y, int nthreads):
    with nogil:
        silu_mul_f32(&g[0, 0], &u[0, 0], <size_t>(g.shape[0] * g.shape[1]), &y[0, 0],
                     nthreads)


def add(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] y, int nthreads):
    with nogil:
        add_f32(&a[0, 0], &b[0, 0], <size_t>(a.shape[0] * a.shape[1]), &y[0, 0], nthreads)
