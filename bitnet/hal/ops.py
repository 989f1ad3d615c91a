"""The names of the ops a backend may implement. One name per concept, everywhere."""

from enum import Enum


class Op(str, Enum):
    EMBED = "embed"
    RMSNORM = "rmsnorm"
    LINEAR_TERNARY = "linear_ternary"
    LINEAR_FLOAT = "linear_float"
    ROPE = "rope"
    ATTENTION = "attention"
    RELU2_MUL = "relu2_mul"
    SILU_MUL = "silu_mul"
    ADD = "add"
    SLICE_ROWS = "slice_rows"


ALL_OPS = frozenset(Op)
