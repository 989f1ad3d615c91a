/* repack.c: TQ2_0 / TQ1_0 rows into the t2 layout (bitnet_cpu.h), once at load; and the
 * memory hints of the backend (page release, huge pages, the heap's reuse of freed memory). */
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/mman.h>
#include <unistd.h>

#include "bitnet_cpu.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

/* madvise over the whole pages inside [addr, addr + len) (a hint: contents never change) */
static int advise_range(const void *addr, size_t len, int advice)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)addr + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)addr + len) & ~(uintptr_t)(page - 1);
    if (end <= start) {
        return 0;
    }
    return madvise((void *)start, end - start, advice);
}

int release_pages(const void *addr, size_t len)
{
    /* After a repack the file bytes are never read again; MADV_PAGEOUT asks the kernel to
     * reclaim those pages from this process's resident set. It is only a hint and never changes
     * memory contents (unlike MADV_DONTNEED on anonymous memory), so it is safe on any array. */
    return advise_range(addr, len, MADV_PAGEOUT);
}

int advise_hugepages(const void *addr, size_t len)
{
#ifdef MADV_HUGEPAGE
    /* Decode streams every weight once per token: with 4 KiB pages that is a TLB miss every
     * 4 KiB and hardware prefetchers that stop at each page boundary. Only a hint: where
     * transparent huge pages are off, nothing changes. */
    return advise_range(addr, len, MADV_HUGEPAGE);
#else
    (void)addr;
    (void)len;
    return -1;
#endif
}

int keep_freed_heap(size_t mmap_below, size_t trim_above)
{
#ifdef __GLIBC__
    /* A prompt's ops each return fresh activations of 1-4 MB ([128, 6912] f32 is 3.5 MB).
     * glibc maps such blocks with mmap and unmaps them on free (or trims the heap top), so
     * every op paid first-touch page faults and zeroing on its output: 10% of a 128-token
     * prompt's time on one Zen 4 thread went to the kernel (perf, 2026-12-05). Served from the
     * heap and kept there once freed, the next op reuses the same pages. */
    if (mmap_below > (size_t)1 << 30 || trim_above > (size_t)1 << 30) {
        return -1;
    }
    return mallopt(M_MMAP_THRESHOLD, (int)mmap_below) && mallopt(M_TRIM_THRESHOLD, (int)trim_above)
               ? 0 : -1;
#else
    (void)mmap_below;
    (void)trim_above;
    return -1;
#endif
}

int t2_has_code3(const uint8_t *data, size_t n)
{
    /* a field is 3 when both of its bits are set: test all four fields of 8 bytes at once */
    uint64_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, data + i, 8);
        bad |= v & (v >> 1) & 0x5555555555555555ull;
    }
    for (; i < n; i++) {
        bad |= (uint64_t)(data[i] & (data[i] >> 1) & 0x55);
    }
    return bad != 0;
}

/* TQ2_0 keeps the same element -> byte grouping as t2 with the four 2-bit fields in reverse
 * order (docs/formats.md 2.3), so a byte is repacked by reversing its fields. */
static uint8_t field_reverse(uint8_t b)
{
    return (uint8_t)(((b & 3) << 6) | (((b >> 2) & 3) << 4) | (((b >> 4) & 3) << 2) | (b >> 6));
}

void tq2_0_repack(const uint8_t *src, int M, int K, uint8_t *codes, float *d, int nthreads)
{
    uint8_t lut[256];
    for (int i = 0; i < 256; i++) {
        lut[i] = field_reverse((uint8_t)i);
    }
    int nb = K / 256;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int r = 0; r < M; r++) {
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = src + ((size_t)r * nb + b) * 66;
            uint8_t *out = codes + (size_t)r * (K / 4) + (size_t)b * 64;
            for (int i = 0; i < 64; i++) {
                out[i] = lut[blk[i]];
            }
            uint16_t dh;
            memcpy(&dh, blk + 64, 2);
            d[(size_t)r * nb + b] = bn_f16_to_f32(dh);
        }
    }
}

static inline int tq1_trit(uint8_t byte, int n)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t p = (uint8_t)(byte * pow3[n]);  /* wraps mod 256 by design */
    return ((uint16_t)p * 3) >> 8;
}

void tq1_0_repack(const uint8_t *src, int M, int K, uint8_t *codes, float *d, int nthreads)
{
    int nb = K / 256;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int r = 0; r < M; r++) {
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = src + ((size_t)r * nb + b) * 54;
            const uint8_t *qs = blk;
            const uint8_t *qh = blk + 48;
            uint8_t *out = codes + (size_t)r * (K / 4) + (size_t)b * 64;
            memset(out, 0, 64);
            for (int e = 0; e < 256; e++) {
                int t;
                if (e < 160) {
                    t = tq1_trit(qs[e % 32], e / 32);
                } else if (e < 240) {
                    t = tq1_trit(qs[32 + (e - 160) % 16], (e - 160) / 16);
                } else {
                    t = tq1_trit(qh[(e - 240) % 4], (e - 240) / 4);
                }
                int byte = 32 * (e >> 7) + (e & 31);
                int shift = 6 - 2 * ((e >> 5) & 3);
                out[byte] |= (uint8_t)(t << shift);
            }
            uint16_t dh;
            memcpy(&dh, blk + 52, 2);
            d[(size_t)r * nb + b] = bn_f16_to_f32(dh);
        }
    }
}

void t2_to_rows16(const uint8_t *t2, int M, int K, uint8_t *out, int nthreads)
{
    /* a transpose of 32-bit words: cheap enough for load time (~0.1 s per 500 MB) */
    size_t row_bytes = (size_t)K / 4;
    int groups = K / 128;
    int ngroups = (M + 15) / 16;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int gr = 0; gr < ngroups; gr++) {
        uint8_t *o = out + (size_t)gr * 16 * row_bytes;
        for (int g = 0; g < groups; g++) {
            for (int j = 0; j < 8; j++) {
                for (int r = 0; r < 16; r++) {
                    int row = gr * 16 + r;
                    uint32_t word = 0;
                    if (row < M) {
                        memcpy(&word, t2 + (size_t)row * row_bytes + (size_t)g * 32 + 4 * j, 4);
                    }
                    memcpy(o + ((size_t)(g * 8 + j) * 16 + r) * 4, &word, 4);
                }
            }
        }
    }
}

/* ---- Q6_K in 16-row groups (bitnet_cpu.h, q6_k_grouped tables) ---- */

/* The inverse of bn_q6_k_codes: 256 codes -> ql / qh of a Q6_K block. */
static void q6_k_block_from_codes(const uint8_t *c, uint8_t *b)
{
    for (int half = 0; half < 2; half++) {
        uint8_t *ql = b + 64 * half;
        uint8_t *qh = b + 128 + 32 * half;
        const uint8_t *o = c + 128 * half;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((o[l] & 0xF) | ((o[l + 64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((o[l + 32] & 0xF) | ((o[l + 96] & 0xF) << 4));
            qh[l] = (uint8_t)((o[l] >> 4) | ((o[l + 32] >> 4) << 2) | ((o[l + 64] >> 4) << 4) |
                              ((o[l + 96] >> 4) << 6));
        }
    }
}

void q6_k_to_groups16(const uint8_t *src, int M, int K, uint8_t *out, int nthreads)
{
    int nb = K / 256;
    size_t row_bytes = (size_t)nb * 210;
    int ngroups = (M + 15) / 16;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int g = 0; g < ngroups; g++) {
        uint8_t *o = out + (size_t)g * 16 * row_bytes;
        for (int b = 0; b < nb; b++) {
            for (int r = 0; r < 16; r++) {
                int row = g * 16 + r;
                uint8_t *cr = o + bn_q6g_codes(nb, b) + (size_t)r * 192;
                uint8_t *sr = o + bn_q6g_scales(nb, b) + (size_t)r * 16;
                uint8_t *dr = o + bn_q6g_d(nb, b) + (size_t)r * 2;
                if (row >= M) {
                    memset(cr, 0, 192);
                    memset(sr, 0, 16);
                    memset(dr, 0, 2);
                    continue;
                }
                const uint8_t *blk = src + (size_t)row * row_bytes + (size_t)b * 210;
                uint8_t c[256], u[4][64];
                bn_q6_k_codes(blk, c);
                for (int m = 0; m < 4; m++) {
                    for (int i = 0; i < 16; i++) {
                        memcpy(u[m] + 4 * i, c + 16 * bn_q6g_sub(i) + 4 * m, 4);
                    }
                }
                for (int k = 0; k < 3; k++) {
                    for (int j = 0; j < 64; j++) {
                        cr[64 * k + j] = (uint8_t)(u[k][j] | (((u[3][j] >> (4 - 2 * k)) & 3) << 6));
                    }
                }
                for (int i = 0; i < 16; i++) {
                    sr[i] = blk[192 + bn_q6g_sub(i)];
                }
                memcpy(dr, blk + 208, 2);
            }
        }
    }
}

void q6_k_group_row(const uint8_t *groups, int K, int row, uint8_t *out)
{
    int nb = K / 256;
    size_t row_bytes = (size_t)nb * 210;
    const uint8_t *o = groups + (size_t)(row / 16) * 16 * row_bytes;
    int r = row % 16;
    for (int b = 0; b < nb; b++) {
        const uint8_t *cr = o + bn_q6g_codes(nb, b) + (size_t)r * 192;
        const uint8_t *sr = o + bn_q6g_scales(nb, b) + (size_t)r * 16;
        const uint8_t *dr = o + bn_q6g_d(nb, b) + (size_t)r * 2;
        uint8_t *blk = out + (size_t)b * 210;
        uint8_t c[256];
        for (int i = 0; i < 16; i++) {
            for (int m = 0; m < 4; m++) {
                for (int e = 0; e < 4; e++) {
                    int j = 4 * i + e;
                    uint8_t v;
                    if (m < 3) {
                        v = cr[64 * m + j] & 0x3F;
                    } else {
                        v = (uint8_t)(((cr[j] >> 6) << 4) | ((cr[64 + j] >> 6) << 2) |
                                      (cr[128 + j] >> 6));
                    }
                    c[16 * bn_q6g_sub(i) + 4 * m + e] = v;
                }
            }
            blk[192 + bn_q6g_sub(i)] = sr[i];
        }
        q6_k_block_from_codes(c, blk);
        memcpy(blk + 208, dr, 2);
    }
}
