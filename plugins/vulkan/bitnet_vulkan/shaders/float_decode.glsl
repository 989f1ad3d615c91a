// Exact dequantization of element k of one float-format row stored as raw on-disk bytes in a
// uint buffer `w` (declared by the includer). FMT is specialization constant 1:
// 0 F32, 1 F16, 2 BF16, 3 Q8_0, 4 Q6_K (bitnet_vulkan.backend.FLOAT_FORMAT_IDS).
layout(constant_id = 1) const int FMT = 0;

uint w_byte(uint addr) {
    return byte_at_words(w[addr >> 2], addr);
}

// 16-bit little-endian value at an even byte address.
uint w_u16(uint addr) {
    return (w[addr >> 2] >> (8u * (addr & 2u))) & 0xFFFFu;
}

float decode(uint row_start, uint k) {
    if (FMT == 0) {
        return uintBitsToFloat(w[(row_start >> 2) + k]);
    }
    if (FMT == 1) {
        return f16_to_f32(w_u16(row_start + 2u * k));
    }
    if (FMT == 2) {
        return uintBitsToFloat(w_u16(row_start + 2u * k) << 16);
    }
    if (FMT == 3) {
        // Q8_0: 32-element blocks of f16 d then 32 int8: d * q.
        const uint blk = row_start + (k / 32u) * 34u;
        const float d = f16_to_f32(w_u16(blk));
        const int qv = bitfieldExtract(int(w_byte(blk + 2u + k % 32u)), 0, 8);
        precise float v = d * float(qv);
        return v;
    }
    // Q6_K: 256-element blocks of ql[128], qh[64], int8 scales[16], f16 d:
    // (d * scale) * q, q = (4 low bits | 2 high bits << 4) - 32 (ggml's dequantize_row_q6_K).
    const uint blk = row_start + (k / 256u) * 210u;
    const uint e = k % 256u;
    const uint half_idx = e / 128u;
    const uint l = e % 128u;
    const uint quarter = l / 32u;
    const uint l32 = l % 32u;
    const uint ql = w_byte(blk + half_idx * 64u + l32 + (quarter & 1u) * 32u);
    const uint low = quarter < 2u ? (ql & 0xFu) : (ql >> 4);
    const uint high = (w_byte(blk + 128u + half_idx * 32u + l32) >> (2u * quarter)) & 3u;
    const int qv = int(low | (high << 4)) - 32;
    const uint sc_byte = w_byte(blk + 192u + half_idx * 8u + l32 / 16u + 2u * quarter);
    const int sc = bitfieldExtract(int(sc_byte), 0, 8);
    const float d = f16_to_f32(w_u16(blk + 208u));
    precise float v = (d * float(sc)) * float(qv);
    return v;
}
