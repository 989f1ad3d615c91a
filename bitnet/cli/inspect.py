"""``bitnet inspect FILE [--json]``: what a GGUF file holds and which backends could run it.

Prints the architecture and how the engine runs it (block kind, FFN activation and why, RoPE
order, tied or untied head), the model config (or why it is not a runnable model), the tokenizer
(or why its token list is refused) and the chat format a conversation gets, metadata with
long arrays summarised, every tensor with its type, shape and size, totals per type, and the
backend selection report for the model's requirements (skip it with ``--no-backends``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from dataclasses import asdict
from typing import Any

from bitnet.core.errors import GGUFError, ModelFormatError

_ARRAY_PREVIEW = 5  # items shown of a long metadata array
# general.file_type names. Ids 38..40 mean different things upstream and in the BitNet fork
# (docs/formats.md 2.1); a file holding I2_S tensors (type 36, fork only) is read with the fork's.
_FILE_TYPES = {0: "ALL_F32", 1: "MOSTLY_F16", 7: "MOSTLY_Q8_0", 18: "MOSTLY_Q6_K",
               32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0", 37: "MOSTLY_TQ2_0"}
_FILE_TYPES_UPSTREAM = {38: "MOSTLY_MXFP4_MOE", 39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0"}
_FILE_TYPES_FORK = {38: "MOSTLY_TL1", 39: "MOSTLY_TL2", 40: "MOSTLY_I2_S"}
_STRING_PREVIEW = 120  # characters shown of a long metadata string


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="show a GGUF file's config, metadata and "
                                   "tensors, and which backends could run it")
    parser.add_argument("file", help="path to a .gguf file, or hf://OWNER/NAME[/FILE]")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="auto",
                        help="device spec to check the model against (default: auto)")
    parser.add_argument("--activation", choices=("silu", "relu2"),
                        help="show the model as `bitnet run --activation` would run it")
    parser.add_argument("--no-backends", action="store_true",
                        help="skip the backend check (no plugin is loaded)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitnet.core.gguf import open_gguf
    from bitnet.hub import resolve_model

    try:
        gguf = open_gguf(resolve_model(args.file))
    except (OSError, GGUFError, ValueError) as e:  # ValueError: a hub or checkpoint problem
        print(f"bitnet inspect: {e}", file=sys.stderr)
        return 1
    with gguf:
        report = describe(gguf, None if args.no_backends else args.device, args.activation)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(render(report))
    return 0


def describe(gguf: Any, device: str | None, activation: str | None = None) -> dict[str, Any]:
    """Everything ``inspect`` shows, as plain data (the ``--json`` output)."""
    from bitnet.core.config import ModelConfig
    from bitnet.core.loader import load_weights, model_requirements

    report: dict[str, Any] = {
        "file": str(gguf.path),
        "file_bytes": gguf.file_size,
        "gguf_version": gguf.version,
        "alignment": gguf.alignment,
        "arch": gguf.arch,
        "file_type": _file_type_name(gguf),
        "metadata": {k: _summarise(v) for k, v in gguf.metadata.items()},
        "tensors": [_tensor_row(t) for t in gguf.tensors.values()],
        "totals": _totals(gguf),
        "tokenizer": _tokenizer(gguf.metadata),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the activation's reason is in the report
            config = ModelConfig.from_metadata(gguf.metadata, activation=activation)
        report["config"] = asdict(config)
        weights = load_weights(gguf, config)
        requirements = model_requirements(config, weights)
    except ModelFormatError as e:
        report["config_error"] = str(e)
        return report
    report["model"] = _model_summary(config, weights)
    report["requirements"] = {
        "ops": sorted(o.value for o in requirements.ops),
        "ternary_formats": sorted(f.value for f in requirements.ternary_formats),
        "float_formats": sorted(f.value for f in requirements.float_formats),
        "weight_bytes": requirements.weight_bytes,
    }
    if device is not None:
        report["backends"] = _backends(device, requirements)
    return report


def _model_summary(config: Any, weights: Any) -> dict[str, Any]:
    """How the engine runs this file, in words."""
    if config.rope_order == "norm":
        rope = "NORM in the file (Q/K rows permuted by the converter); permuted back at load, " \
               "run as NEOX"
    else:
        rope = "NEOX (pairs i, i + D/2)"
    return {
        "arch": config.arch,
        "block": config.block,
        "activation": config.activation,
        "activation_source": config.activation_source,
        "rope": rope,
        "head": "tied (token_embd)" if weights.output is None else "untied (output.weight)",
        "heads": f"{config.n_heads} query / {config.n_kv_heads} KV of {config.head_dim}",
    }


def _backends(device: str, requirements: Any) -> dict[str, Any]:
    """The registry's selection report for these requirements; guarded so that inspect still
    works when the registry (or every plugin) is missing or broken."""
    try:
        from bitnet.hal import CreateOptions
        from bitnet.registry import select
    except ImportError as e:
        return {"error": f"backend registry unavailable ({e})"}
    try:
        selection = select(device, requirements, CreateOptions())
    # any failure (no device, a broken plugin) is shown as the report; inspect never dies of it
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}
    try:
        return selection.report.to_dict()
    finally:
        selection.backend.close()


def _file_type_name(gguf: Any) -> str | None:
    file_type = gguf.metadata.get("general.file_type")
    if not isinstance(file_type, int):
        return None
    fork = any(t.ggml_type == 36 for t in gguf.tensors.values())
    names = {**_FILE_TYPES, **(_FILE_TYPES_FORK if fork else _FILE_TYPES_UPSTREAM)}
    return f"{names.get(file_type, 'unknown')} ({file_type})"


def _summarise(value: Any) -> Any:
    if isinstance(value, list) and len(value) > _ARRAY_PREVIEW:
        kind = type(value[0]).__name__
        return {"array_of": kind, "length": len(value), "first": value[:_ARRAY_PREVIEW]}
    if isinstance(value, str) and len(value) > _STRING_PREVIEW:
        return value[:_STRING_PREVIEW] + f"... ({len(value)} characters)"
    return value


def _tensor_row(info: Any) -> dict[str, Any]:
    return {"name": info.name, "type": info.type_name, "ggml_type": info.ggml_type,
            "shape": list(info.shape), "bytes": info.nbytes}


def _totals(gguf: Any) -> dict[str, Any]:
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    for t in gguf.tensors.values():
        count[t.type_name] += 1
        size[t.type_name] += t.nbytes
        elements[t.type_name] += t.n_elements
    by_type = {name: {"tensors": count[name], "bytes": size[name], "elements": elements[name]}
               for name in sorted(count)}
    return {"tensors": len(gguf.tensors), "bytes": sum(size.values()),
            "elements": sum(elements.values()), "by_type": by_type}


# -- text rendering ----------------------------------------------------------------------------


def _tokenizer(metadata: dict[str, Any]) -> dict[str, Any]:
    """The vocabulary as bitnet reads it, and the chat format a conversation gets."""
    from bitnet.core.chat import builtin_format_for
    from bitnet.core.tokenizer import Tokenizer

    try:
        tok = Tokenizer.from_metadata(metadata)
    except ModelFormatError as e:
        return {"error": str(e)}
    template = tok.chat_template
    return {"model": tok.model, "pretokenizer": tok.pretokenizer, "n_vocab": tok.n_vocab,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id, "eot_id": tok.eot_id,
            "add_bos": tok.add_bos,
            "chat": _chat_source(template, builtin_format_for(metadata))}


def _chat_source(template: str | None, builtin: str) -> str:
    from bitnet.core.chat import chat_format

    fmt = chat_format(template, builtin)
    return "the file's template" if fmt is None else f"built-in {fmt}"


def render(report: dict[str, Any]) -> str:
    lines = [
        (f"file      {report['file']} ({_mib(report['file_bytes'])}, GGUF v"
         f"{report['gguf_version']}, alignment {report['alignment']})"),
        f"arch      {report['arch']}, file type {report['file_type']}",
    ]
    if "model" in report:
        model = report["model"]
        lines.append(f"model     {model['block']} block, {model['heads']}, "
                     f"{model['head']} head")
        lines.append(f"          activation {model['activation']}: "
                     f"{model['activation_source']}")
        lines.append(f"          rope {model['rope']}")
    if "config" in report:
        config = report["config"]
        lines.append("config    " + ", ".join(f"{k}={v}" for k, v in config.items()))
    else:
        lines.append(f"config    not runnable: {report.get('config_error')}")
    tok = report.get("tokenizer", {})
    if "error" in tok:
        lines.append(f"tokenizer not usable: {tok['error']}")
    elif tok:
        pre = f" (pre-tokenizer {tok['pretokenizer']})" if tok["pretokenizer"] else ""
        lines.append(f"tokenizer {tok['model']}{pre}, {tok['n_vocab']} tokens, BOS "
                     f"{tok['bos_id']}{' added' if tok['add_bos'] else ''}, EOS {tok['eos_id']}, "
                     f"EOT {tok['eot_id']}; chat: {tok['chat']}")
    lines.append(f"\nmetadata ({len(report['metadata'])} keys)")
    for key, value in report["metadata"].items():
        if isinstance(value, dict) and "array_of" in value:
            shown = f"[{value['length']} x {value['array_of']}] {value['first']} ..."
        else:
            shown = repr(value)
        lines.append(f"  {key} = {shown}")
    lines.append(f"\ntensors ({len(report['tensors'])})")
    width = max((len(t["name"]) for t in report["tensors"]), default=4)
    for t in report["tensors"]:
        shape = "x".join(str(d) for d in t["shape"])
        lines.append(f"  {t['name']:<{width}}  {t['type']:<6} {shape:<14} {t['bytes']:>12,} B")
    totals = report["totals"]
    lines.append(f"\ntotals    {totals['tensors']} tensors, {totals['elements']:,} elements, "
                 f"{_mib(totals['bytes'])}")
    for name, row in totals["by_type"].items():
        lines.append(f"  {name:<6} {row['tensors']:>4} tensors  {_mib(row['bytes']):>12}")
    if "requirements" in report:
        req = report["requirements"]
        lines.append(f"\nneeds     ops {', '.join(req['ops'])}")
        formats = req["ternary_formats"] + req["float_formats"]
        lines.append(f"          formats {', '.join(formats)}")
    if "backends" in report:
        lines.append("\nbackends")
        lines.extend("  " + line for line in _render_backends(report["backends"]))
    return "\n".join(lines)


def _render_backends(backends: dict[str, Any]) -> list[str]:
    if "error" in backends:
        return [backends["error"]]
    lines = [f"chosen: {backends.get('chosen') or 'nothing'}"]
    for c in backends.get("candidates", []):
        where = c.get("device") or c.get("backend")
        lines.append(f"  {c.get('outcome', '?'):<11} {where:<14} {c.get('reason', '')}")
    return lines


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB"
