"""``bitnet inspect``: text and JSON views of a GGUF file, and clean failures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bitnet.cli import inspect as inspect_cli
from bitnet.testing.fixtures import MODELS as FIXTURE_MODELS

MODELS = FIXTURE_MODELS
pytestmark = pytest.mark.skipif(not MODELS.exists(), reason="fixture models not present")


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    inspect_cli.register(parser.add_subparsers())
    args = parser.parse_args(["inspect", *argv])
    return args.func(args)


def test_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(MODELS / "tiny-b158-i2_s.gguf"), "--json", "--no-backends") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arch"] == "bitnet-b1.58" and report["gguf_version"] == 3
    assert report["file_type"] == "MOSTLY_I2_S (40)"  # the fork's id, not upstream's Q1_0
    assert report["config"]["d_model"] == 256 and report["config"]["activation"] == "relu2"
    tokens = report["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["length"] == 512 and tokens["first"][:3] == ["<unk>", "<s>", "</s>"]
    assert report["totals"]["tensors"] == 24
    assert report["totals"]["by_type"]["i2_s"]["tensors"] == 14
    rows = {t["name"]: t for t in report["tensors"]}
    assert rows["blk.0.attn_q.weight"] == {"name": "blk.0.attn_q.weight", "type": "i2_s",
                                           "ggml_type": 36, "shape": [256, 256],
                                           "bytes": 256 * 256 // 4 + 32}
    assert "linear_ternary" in report["requirements"]["ops"]
    assert "backends" not in report


def test_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(MODELS / "tiny-bitnet-tq1_0.gguf"), "--no-backends") == 0
    out = capsys.readouterr().out
    assert "arch      bitnet, file type MOSTLY_TQ1_0 (36)" in out and "activation=silu" in out
    assert "[512 x str]" in out  # long arrays are summarised
    assert "blk.1.ffn_down.weight" in out and "tq1_0" in out and "q6_k" in out


def test_a_broken_file_is_reported_not_raised(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    assert run(str(bad)) == 1
    assert "metadata count" in capsys.readouterr().err
    assert run(str(tmp_path / "missing.gguf")) == 1


def test_unrunnable_model_still_lists_its_tensors(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from bitnet.convert.gguf_writer import rewrite_gguf

    path = rewrite_gguf(MODELS / "tiny-b158-i2_s.gguf", tmp_path / "m.gguf",
                        drop_tensors=["blk.0.ffn_up.weight"])
    assert run(str(path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert "'blk.0.ffn_up.weight' is missing" in report["config_error"]
    assert report["totals"]["tensors"] == 23


def test_backend_check_failure_is_contained(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(MODELS / "tiny-b158-i2_s.gguf"), "--json", "--device", "nosuchbackend") == 0
    report = json.loads(capsys.readouterr().out)
    assert "error" in report["backends"]


def test_inspect_says_how_each_arch_runs(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Arch, block kind, activation and why, RoPE order, tied or untied head (and the
    --activation override, as `bitnet run --activation` would apply it)."""
    from bitnet.testing.families import FAMILIES

    falcon3 = next(f for f in FAMILIES if f.name == "falcon3-i2_s")
    path = falcon3.write(tmp_path / "falcon3.gguf")
    assert run(str(path), "--json", "--no-backends") == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["arch"] == "llama" and model["block"] == "llama (no sub-norms)"
    assert model["activation"] == "silu" and "arch llama" in model["activation_source"]
    assert model["rope"].startswith("NORM in the file") and model["head"].startswith("untied")
    assert model["heads"] == "3 query / 1 KV of 256"
    assert run(str(MODELS / "tiny-b158-i2_s.gguf"), "--no-backends", "--activation",
               "silu") == 0
    text = capsys.readouterr().out
    assert "model     bitnet (sub-norms) block" in text and "tied (token_embd) head" in text
    assert "activation silu: chosen by the caller" in text and "rope NEOX" in text


def test_tokenizer_summary_and_a_refused_token_list(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from bitnet.core.gguf import open_gguf
    from bitnet.convert.gguf_writer import rewrite_gguf

    assert run(str(MODELS / "tiny-b158-i2_s.gguf"), "--json", "--no-backends") == 0
    tok = json.loads(capsys.readouterr().out)["tokenizer"]
    assert tok == {"model": "llama", "pretokenizer": None, "n_vocab": 512, "bos_id": 1,
                   "eos_id": 2, "eot_id": None, "add_bos": True, "chat": "built-in bitnet"}
    with open_gguf(MODELS / "tiny-b158-i2_s.gguf") as f:
        tokens = list(f.metadata["tokenizer.ggml.tokens"])
    tokens[7] = "\0"
    path = rewrite_gguf(MODELS / "tiny-b158-i2_s.gguf", tmp_path / "m.gguf",
                        metadata={"tokenizer.ggml.tokens": tokens})
    assert run(str(path), "--no-backends") == 0
    out = capsys.readouterr().out
    assert "tokenizer not usable: tokenizer metadata: 'tokenizer.ggml.tokens'[7]" in out
