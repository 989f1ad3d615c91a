"""Per-model figures gathered by the llama.cpp cross-check, printed at the end of the run.

Rows are keyed by (model, backend, flash attention); each test adds its fields to its row.
``conftest.py`` prints them after the test session and, when BITNET_CROSSCHECK_REPORT names a
file, writes them there as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROWS: dict[tuple[str, str, str], dict[str, Any]] = {}


def record(model: str, backend: str, flash_attn: str, case: Any = None, **fields: Any) -> None:
    """Add ``fields`` to the row of (model, backend, flash_attn); ``case`` adds its shape."""
    row = ROWS.setdefault((model, backend, flash_attn),
                          {"model": model, "backend": backend, "flash_attn": flash_attn})
    if case is not None:
        row.update(shape=f"d{case.d_model} L{case.n_layers} h{case.n_heads}/{case.n_kv_heads} "
                         f"ff{case.d_ff} v{case.n_vocab}",
                   weights=case.weights.value, embed=case.embed.value)
    row.update(fields)


def lines() -> list[str]:
    """The rows as text: logits rows first, then llama.cpp's own flash-attention rows."""
    out = []
    for row in ROWS.values():
        if row["backend"] == "llama.cpp":
            continue
        parts = [f"{row['model']:<28} {row['backend']:<9} fa={row['flash_attn']:<4}"]
        if "min_cos" in row:
            parts.append(f"min cos {row['min_cos']:.6f} (pos {row['min_cos_pos']:>2})  "
                         f"max|d| {row['max_abs']:.2e}  argmax {row['argmax_same']}/"
                         f"{row['positions']} (clear {row['clear_same']}/{row['clear']})")
        if "tq1_vs_tq2_ours_max_abs" in row:
            parts.append(f"TQ1_0 vs TQ2_0 max|d|: llama.cpp "
                         f"{row['tq1_vs_tq2_llama_max_abs']:.1e}, ours "
                         f"{row['tq1_vs_tq2_ours_max_abs']:.1e}")
        if "greedy_compared" in row:
            parts.append(f"greedy: {row['greedy_compared']}/{row['greedy_steps']} steps "
                         f"compared, identical for {row['greedy_identical']}")
        out.append("  ".join(parts))
    for row in ROWS.values():
        if row["backend"] == "llama.cpp" and "auto_same_as" in row:
            out.append(f"{row['model']:<28} llama.cpp fa auto == {row['auto_same_as']}; "
                       f"on vs off: max|d| {row['on_vs_off_max_abs']:.2e}, "
                       f"min cos {row['on_vs_off_min_cos']:.7f}")
    return out


def write_json(path: str | Path) -> None:
    Path(path).write_text(json.dumps(list(ROWS.values()), indent=1) + "\n")
