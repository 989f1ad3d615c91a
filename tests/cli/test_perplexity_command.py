"""`bitnet perplexity` as a user runs it (in-process, reference backend): llama-perplexity's
output lines, --json for tools, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bitnet.cli.main import main

HELDOUT = Path(__file__).parents[1] / "demo" / "heldout.txt"
ARGS = ["--device", "reference", "--ctx", "32", "--chunks", "2"]


def test_prints_the_running_figure_and_the_final_estimate(capsys) -> None:
    assert main(["perplexity", "-f", str(HELDOUT), *ARGS]) == 0
    out, err = capsys.readouterr()
    chunks, final = out.strip().splitlines()
    assert re.fullmatch(r"\[1\]\d+\.\d{4},\[2\]\d+\.\d{4}", chunks)
    assert re.fullmatch(r"Final estimate: PPL = \d+\.\d{4} \+/- \d+\.\d{5}", final)
    assert "30 tokens scored in 2 chunks of 32" in err and "reference" in err


def test_json_has_the_figure_and_what_ran(capsys) -> None:
    assert main(["perplexity", "-f", str(HELDOUT), *ARGS, "--json", "--batch", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chunks"] == 2 and out["ctx"] == 32 and out["batch"] == 8
    assert out["n_scored"] == 30 and out["n_tokens"] > 2000
    assert out["ppl"] > 1 and out["ppl_err"] > 0 and len(out["chunk_ppl"]) == 2
    assert out["chunk_ppl"][-1] == out["ppl"]
    assert out["backend"] == "reference" and out["model"].endswith(".gguf")
    assert out["seconds"] >= 0


def test_errors_are_one_line(capsys, tmp_path) -> None:
    assert main(["perplexity", "-f", str(tmp_path / "none.txt"), *ARGS]) == 2
    assert capsys.readouterr().err == f"bitnet: error: no such text file: {tmp_path}/none.txt\n"
    short = tmp_path / "short.txt"
    short.write_text("Too short a text.")
    assert main(["perplexity", "-f", str(short), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "tokenizes to only" in err and "at least 64" in err and err.count("\n") == 1
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert main(["perplexity", "-f", str(binary), *ARGS]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
