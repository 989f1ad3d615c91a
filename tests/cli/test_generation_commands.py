"""`bitnet run`, `bitnet chat` and `bitnet bench` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.core.fixtures import model_path

MODEL = str(model_path("tiny-b158-i2_s"))


def bitnet(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitnet.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_run_json_is_deterministic_with_a_seed(tmp_path) -> None:
    args = ["run", "-m", MODEL, "--device", "reference", "-p", "Hello", "-n", "6", "--temp",
            "0.8", "--seed", "11", "--ignore-eos", "--json"]
    a, b = bitnet(*args), bitnet(*args)
    assert a.returncode == 0, a.stderr
    out, again = json.loads(a.stdout), json.loads(b.stdout)
    for timing in ("prompt_tps", "decode_tps"):  # everything but the speeds must repeat
        out.pop(timing), again.pop(timing)
    assert out == again
    assert len(out["tokens"]) == 6 and out["backend"] == "reference"


def test_run_streams_text_and_writes_a_receipt(tmp_path) -> None:
    receipt = tmp_path / "r.json"
    p = bitnet("run", "-m", MODEL, "--device", "reference", "-p", "Once upon", "-n", "5",
               "--temp", "0", "--receipt", str(receipt))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Once upon")
    assert "tok/s" in p.stderr and "reference" in p.stderr
    r = json.loads(receipt.read_text())
    assert r["backend"] == "reference" and r["kernels"] and r["model"]["sha256"]


def test_run_activation_overrides_the_files_gating(tmp_path) -> None:
    receipt = tmp_path / "r.json"
    p = bitnet("run", "-m", MODEL, "--device", "reference", "-p", "Once", "-n", "3", "--temp",
               "0", "--activation", "silu", "--receipt", str(receipt))
    assert p.returncode == 0, p.stderr
    r = json.loads(receipt.read_text())
    assert r["model"]["activation"] == "silu" and r["kernels"]["silu_mul"] > 0
    assert "relu2_mul" not in r["kernels"]
    p = bitnet("run", "-m", MODEL, "-p", "x", "--activation", "gelu")
    assert p.returncode == 2 and "invalid choice: 'gelu'" in p.stderr


def test_run_errors_are_one_line_with_the_cause() -> None:
    p = bitnet("run", "-m", "/nonexistent.gguf", "-p", "x")
    assert p.returncode == 2 and p.stderr.startswith("bitnet: error: no such model file")
    p = bitnet("run", "-m", MODEL, "--device", "nosuchbackend", "-p", "x")
    assert p.returncode != 0 and "nosuchbackend" in p.stderr and "Traceback" not in p.stderr


def test_chat_reads_turns_from_stdin_and_streams_replies() -> None:
    p = bitnet("chat", "-m", MODEL, "--device", "reference", "-n", "4", "--temp", "0",
               stdin="Hello there\nAnd again\n\n")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) >= 1


def test_bench_json_is_one_line_with_both_speeds() -> None:
    p = bitnet("bench", "-m", MODEL, "--device", "reference", "--prompt", "16", "--tokens", "4",
               "-r", "1", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["prompt_tps"] > 0 and out["decode_tps"] > 0
    # the reference runs ops as direct calls: one a backend call, at least one per layer
    assert out["submissions_per_token"] >= 1


def test_bench_batch_reports_the_aggregate_decode_of_b_sequences() -> None:
    p = bitnet("bench", "-m", MODEL, "--device", "reference", "--prompt", "0", "--tokens",
               "20", "-r", "1", "--batch", "3")
    assert p.returncode == 0, p.stderr
    assert "all 3 sequences" in p.stdout and "x tg" in p.stdout
    p = bitnet("bench", "-m", MODEL, "--device", "reference", "--prompt", "0", "--tokens",
               "20", "-r", "1", "--batch", "3", "--json")
    out = json.loads(p.stdout)
    assert out["batch"] == 3 and out["batch_decode_tps"] > 0
    assert out["batch_submissions_per_step"] >= 1
    p = bitnet("bench", "-m", MODEL, "--device", "reference", "--batch", "0")
    assert p.returncode != 0 and "--batch" in p.stderr


@pytest.mark.parametrize("prompt,tokens", [(0, 3), (5, 0)])
def test_bench_times_decode_or_prompt_alone(prompt: int, tokens: int) -> None:
    p = bitnet("bench", "-m", MODEL, "--device", "reference", "--prompt", str(prompt),
               "--tokens", str(tokens), "-r", "1", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["prompt_tps"] is None) == (prompt == 0)
    assert (out["decode_tps"] is None) == (tokens == 0)


def test_every_command_has_help() -> None:
    for cmd in ("run", "chat", "bench", "serve"):
        p = bitnet(cmd, "--help")
        assert p.returncode == 0 and "usage:" in p.stdout, cmd


def test_a_token_list_sentencepiece_refuses_is_a_one_line_error(tmp_path) -> None:
    # found by mutating a file's header: a NUL inside a piece made `bitnet run` print
    # sentencepiece's RuntimeError traceback
    from bitnet.core.gguf import open_gguf
    from bitnet.convert.gguf_writer import rewrite_gguf

    with open_gguf(MODEL) as f:
        tokens = list(f.metadata["tokenizer.ggml.tokens"])
    tokens[300] = "ab\0c"
    broken = rewrite_gguf(MODEL, tmp_path / "nul.gguf",
                          metadata={"tokenizer.ggml.tokens": tokens})
    for command in (["run", "-p", "x"], ["chat"]):
        p = bitnet(*command, "-m", str(broken), "--device", "reference", "-n", "1", stdin="hi\n")
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert p.stderr.startswith("bitnet: error: tokenizer metadata: "
                                   "'tokenizer.ggml.tokens'[300]")
        assert "NUL" in p.stderr


def test_pretokenizer_override_is_checked() -> None:
    p = bitnet("run", "-m", MODEL, "--device", "reference", "-p", "x", "-n", "1",
               "--pretokenizer", "nonesuch")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("bitnet: error: pretokenizer='nonesuch' is not supported")
