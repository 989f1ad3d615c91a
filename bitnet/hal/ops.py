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
    CONCAT_ROWS = "concat_rows"  # optional: lets the server batch decode steps of many requests
    ATTENTION_ROWS = "attention_rows"  # optional: RoPE + attention for one row of many sequences


ALL_OPS = frozenset(Op)
# ops a model can run without; a backend that lacks them is used with a narrower feature set
OPTIONAL_OPS = frozenset({Op.CONCAT_ROWS, Op.ATTENTION_ROWS})
REQUIRED_OPS = ALL_OPS - OPTIONAL_OPS
