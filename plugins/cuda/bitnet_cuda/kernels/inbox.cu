// inbox: the small host writes (a decode step's token id and position) that ride in a replayed
// CUDA graph instead of costing a copy each. The host stores them in page-locked, device-mapped
// memory before cuGraphLaunch; this kernel, the graph's first node, copies them to their
// buffers. Not a kernel of bitnet.hal's table: CudaRuntime's own (runtime.py, graph.py).
//
// Layout (int32 words): word 0 the entry count; entries from word INBOX_HEADER, INBOX_ENTRY words
// each: destination address (u64, words 0-1), byte count (word 2, <= INBOX_PAYLOAD), then the
// bytes (words 4-7). One thread per entry; the host never stages two writes that overlap.
#include "common.cuh"

#define INBOX_HEADER 4
#define INBOX_ENTRY 8
#define INBOX_PAYLOAD 16
#define INBOX_THREADS 32

extern "C" __global__ void __launch_bounds__(INBOX_THREADS) inbox(
    const int* __restrict__ box, int capacity)
{
    const int e = threadIdx.x;
    if (e >= box[0] || e >= capacity) {
        return;
    }
    const int* entry = box + INBOX_HEADER + e * INBOX_ENTRY;
    const unsigned long long dst = (unsigned long long)(unsigned int)entry[0] |
                                   ((unsigned long long)(unsigned int)entry[1] << 32);
    const unsigned char* src = reinterpret_cast<const unsigned char*>(entry + 4);
    unsigned char* out = reinterpret_cast<unsigned char*>(dst);
    for (int i = 0; i < entry[2] && i < INBOX_PAYLOAD; ++i) {
        out[i] = src[i];
    }
}
