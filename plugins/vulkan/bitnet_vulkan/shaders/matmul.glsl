// Shared by the matmul shaders: a work-group is ROWS output rows x WG_SIZE lanes (local size
// (WG_SIZE, ROWS), both specialization constants the host picks from the subgroup size and the
// shared-memory limit) for a tile of TILE_N tokens. Dispatch (ceil(M / ROWS), ceil(n / TILE_N));
// group counts beyond the device limit in x fold into z.
layout(local_size_x_id = 0, local_size_y_id = 2) in;
layout(constant_id = 2) const uint ROWS = 1;

#define TILE_N 8

uint matmul_row() {
    const uint group = gl_WorkGroupID.x + gl_WorkGroupID.z * gl_NumWorkGroups.x;
    return group * ROWS + gl_LocalInvocationID.y;
}

// The ternary values {-1, 0, 1} of group g (0..3) of a code word (I2_S interleave) as 4 packed
// signed bytes: element i of the 4 consecutive elements sits in byte i at bit shift 6 - 2g.
// Per byte c in {0, 1, 2}: (c + 0x7F) ^ 0x80 = c - 1 as a byte, with no carry between bytes.
uint ternary_packed(uint word, int g) {
    const uint c = (word >> uint(6 - 2 * g)) & 0x03030303u;
    return (c + 0x7F7F7F7Fu) ^ 0x80808080u;
}

// Signed dot product of two words of 4 packed int8. The *_idot builds (build_shaders.py) swap
// this body for OpSDot (VK_KHR_shader_integer_dot_product, 4x8-bit packed); GLSL cannot spell it
// with Debian's glslc. Keep the name and signature: the patch finds the function by them.
int dot4_packed(uint a, uint b) {
    return sbyte(a, 0) * sbyte(b, 0) + sbyte(a, 1) * sbyte(b, 1) + sbyte(a, 2) * sbyte(b, 2)
        + sbyte(a, 3) * sbyte(b, 3);
}
