"""A smoke run of the demo pipeline's training and export scripts on tiny dimensions (needs torch).

A few optimizer steps on a tiny corpus, then export to I2_S and load it with the engine; the full
40-minute run is never part of CI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is only needed to train/export the demo model")
spm = pytest.importorskip("sentencepiece")

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import train_demo
from export_demo import export, load_checkpoint, sentencepiece_vocab
from train_demo_tokenizer import train_tokenizer

from bitnet.hal.weight_formats import WeightFormat

PARAGRAPH = ("It was a fine morning, and the ladies walked to the village before breakfast; "
             "Mr. Knightley met them at the gate, and they talked of the ball, of the weather, "
             "and of the new family at the Park, who were said to be very agreeable.")


@pytest.mark.slow  # ~10 s of CPU (torch import, 4 steps, tokenizer training, export)
def test_training_smoke_run_exports_a_loadable_model(tmp_path: Path) -> None:
    import bitnet

    lines = [f"{PARAGRAPH} ({i})" for i in range(60)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(lines[:8]) + "\n")
    model_file = train_tokenizer(tmp_path / "train.txt", tmp_path / "tokenizer", vocab_size=300)
    assert model_file.exists()
    rc = train_demo.main(["--data", str(tmp_path), "--steps", "4", "--layers", "1",
                          "--d-model", "256", "--heads", "4", "--d-ff", "256", "--context",
                          "32", "--batch", "2", "--eval-every", "2", "--eval-windows", "2"])
    assert rc == 0
    stats = json.loads((tmp_path / "train_stats.json").read_text())
    assert stats["steps"] == 4
    assert 1.0 < stats["valid_ppl"] < 300 * 2  # at most about uniform over 300 pieces
    losses = [json.loads(line)["loss"] for line in (tmp_path / "train_log.jsonl").open()]
    assert len(losses) == 4
    model, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    path = export(model, sentencepiece_vocab(sp), tmp_path / "smoke.gguf", WeightFormat.I2_S)
    with bitnet.load(path, device="reference") as engine:
        assert engine.config.arch == "bitnet-b1.58"
        assert engine.tokenizer.encode(PARAGRAPH, add_bos=False) == sp.encode(PARAGRAPH)
        text = engine.generate("It was", max_tokens=4, temperature=0.0)
        assert isinstance(text, str)
