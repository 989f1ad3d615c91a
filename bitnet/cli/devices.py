"""``bitnet devices``: one row per (backend, device) with status, validation and score."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEFAULT_MODEL_NOTE = "a 2B-4T-shaped I2_S model (pass --model FILE for your own)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("devices", help="list backends and devices, validated and ranked")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--explain", action="store_true",
                   help="show why auto (or --device) picks what it picks")
    p.add_argument("--revalidate", action="store_true",
                   help="re-run validation and benchmarks instead of trusting the cache")
    p.add_argument("--no-validate", action="store_true",
                   help="list only: skip validation (the VALIDATED column shows cached verdicts)")
    p.add_argument("--device", metavar="SPEC", help="with --explain: the spec to explain")
    p.add_argument("--model", metavar="FILE", help="with --explain: rank for this GGUF model")
    p.set_defaults(func=run)


def _memory(n: int | None) -> str:
    return "-" if not n else f"{n / 1024 ** 3:.1f} GiB"


def _validated(row: Any) -> str:
    if row.validated is None:
        return "-"
    if row.validated:
        return "oracle" if row.validation_note.startswith("oracle") else "yes"
    return "NO"


def _score(row: Any) -> str:
    if row.device is None:
        return "-"
    return f"{row.score:.2f} GMAC/s" if row.score is not None else f"prio {row.priority}"


def _table(rows: list[Any]) -> str:
    """Rows grouped so the same physical device (same stable id) is shown once."""
    header = ("BACKEND", "VERSION", "DEVICE", "NAME", "KIND", "MEMORY", "VALIDATED", "SCORE",
              "STATUS")
    cells = []
    shown_ids: dict[str, str] = {}
    for row in rows:
        name = row.name
        if row.stable_id and row.stable_id in shown_ids:
            name = f"(same device as {shown_ids[row.stable_id]})"
        elif row.stable_id and row.device:
            shown_ids[row.stable_id] = row.device
        kind = (row.kind or "-") + (" (emulated)" if row.emulated else "")
        cells.append((row.backend, row.plugin_version, row.device or "-", name, kind,
                      _memory(row.memory_total), _validated(row), _score(row),
                      row.status_text()))
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header) - 1)]
    lines = []
    for cell in [header, *cells]:
        lead = "  ".join(str(v).ljust(w) for v, w in zip(cell, widths, strict=False))
        lines.append(f"{lead}  {cell[-1]}")
    return "\n".join(lines)


def _requirements(model: str | None) -> Any:
    from bitnet.hal.weight_formats import WeightFormat
    from bitnet.hal.ops import Op
    from bitnet.registry.requirements import LinearShape, ModelRequirements

    if model:
        from bitnet.core.config import ModelConfig
        from bitnet.core.gguf import open_gguf
        from bitnet.core.loader import load_weights, model_requirements

        gguf = open_gguf(model)
        config = ModelConfig.from_metadata(gguf.metadata)
        return model_requirements(config, load_weights(gguf, config))
    i2s = WeightFormat.I2_S
    ops = frozenset(Op) - {Op.SILU_MUL}
    shapes = (LinearShape(i2s, 2560, 2560), LinearShape(i2s, 6912, 2560),
              LinearShape(i2s, 2560, 6912))
    return ModelRequirements(ops, frozenset({i2s}), frozenset({WeightFormat.F16}), shapes)


def _explain(args: argparse.Namespace) -> int:
    from bitnet.registry import BackendSelectionError, select

    needs = _requirements(args.model)
    try:
        selection = select(args.device, needs, revalidate=args.revalidate)
    except (BackendSelectionError, ValueError) as exc:
        print(f"bitnet: error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps(selection.report.to_dict(), indent=1, default=str))
        else:
            print(f"for {args.model or DEFAULT_MODEL_NOTE}:")
            print(selection.report.text())
    finally:
        selection.backend.close()
    return 0


def run(args: argparse.Namespace) -> int:
    from bitnet.registry import list_devices
    from bitnet.registry.settings import read_settings

    if args.explain:
        return _explain(args)
    rows = list_devices(revalidate=args.revalidate, validate=not args.no_validate)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1, default=str))
    else:
        print(_table(rows))
    if read_settings().strict and any(r.status == "failed" for r in rows):
        print("bitnet: error: BITNET_STRICT=1 and a plugin failed (see above)", file=sys.stderr)
        return 1
    return 0
