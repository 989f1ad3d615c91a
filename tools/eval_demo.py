"""Measure the demo model and write the test data that pins its numbers.

    python tools/eval_demo.py --data build/demo --gguf bitnet/data/demo-b158-i2_s.gguf \
        --tests tests/demo [--device reference] [--windows 236]

Prints (and writes to ``--data/eval.json``) the validation perplexity of the float QAT model in
PyTorch and of the GGUF as run by the engine (``bitnet.load(path).logits(ids)``), over the same
non-overlapping 256-token windows of the validation split. Writes into ``--tests``:

- ``heldout.json``: the first validation paragraphs, their SentencePiece ids, the window shape,
  and the engine's perplexity over those windows (the quick test's fixed figure);
- ``torch_logits.npz``: PyTorch float-model logits at a few positions of two held-out windows,
  for the model-code-vs-engine cosine test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_demo import load_checkpoint
from train_demo import BOS_ID, EOS_ID, evaluate, valid_windows

TEST_WINDOWS = 8  # windows of the quick test file (8 x 256 = 2048 tokens)


def engine_nll(model: object, windows: np.ndarray) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods (float64) of the engine over windows [n, T]."""
    total = 0.0
    count = 0
    for w in windows:
        logits = np.asarray(model.logits(w.astype(np.int32)), dtype=np.float64)[:-1]
        m = logits.max(axis=1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        total += float((logz - logits[np.arange(len(w) - 1), w[1:]]).sum())
        count += len(w) - 1
    return total, count


def heldout_paragraphs(sp: spm.SentencePieceProcessor, valid_txt: Path,
                       n_tokens: int) -> tuple[list[str], list[list[int]]]:
    """The first validation paragraphs whose BOS/EOS stream reaches ``n_tokens`` tokens."""
    texts: list[str] = []
    ids: list[list[int]] = []
    total = 0
    for line in valid_txt.read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        piece_ids = sp.encode(line)
        texts.append(line)
        ids.append(piece_ids)
        total += len(piece_ids) + 2
        if total >= n_tokens:
            break
    return texts, ids


def stream_of(ids: list[list[int]]) -> np.ndarray:
    """Paragraph ids -> the training/eval stream ``<s> p </s> <s> p </s> ...`` (int32)."""
    out: list[int] = []
    for p in ids:
        out += [BOS_ID] + p + [EOS_ID]
    return np.asarray(out, dtype=np.int32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--tests", type=Path, required=True)
    parser.add_argument("--device", default="reference")
    parser.add_argument("--windows", type=int, default=0, help="0 = the whole validation split")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import bitnet

    model, stats = load_checkpoint(args.data / "checkpoint.pt")
    seq_len = model.c.context_length
    sp = spm.SentencePieceProcessor(model_file=str(args.data / "tokenizer.model"))
    texts = (args.data / "valid.txt").read_text(encoding="utf-8").splitlines()
    full = stream_of([sp.encode(t) for t in texts if t])
    windows = valid_windows(full, seq_len)
    if args.windows:
        windows = windows[: args.windows]
    result: dict[str, object] = {"windows": len(windows), "seq_len": seq_len,
                                 "tokens_scored": int(windows[:, 1:].size)}
    result["torch_ppl"] = math.exp(evaluate(model, windows))
    engine = bitnet.load(args.gguf, device=args.device)
    t0 = time.time()
    nll, count = engine_nll(engine, windows)
    result["engine_seconds"] = round(time.time() - t0, 1)
    result["engine_ppl"] = math.exp(nll / count)
    result["engine_backend"] = engine.backend.name

    # the quick test file: the first TEST_WINDOWS windows, from whole paragraphs
    para_texts, para_ids = heldout_paragraphs(sp, args.data / "valid.txt",
                                              TEST_WINDOWS * seq_len)
    test_windows = valid_windows(stream_of(para_ids), seq_len)[:TEST_WINDOWS]
    if not np.array_equal(test_windows, windows[: len(test_windows)]):
        raise SystemExit("the quick test windows are not the first validation windows")
    t_nll, t_count = engine_nll(engine, test_windows)
    result["test_windows"] = len(test_windows)
    result["test_engine_ppl"] = math.exp(t_nll / t_count)
    result["test_torch_ppl"] = math.exp(evaluate(model, test_windows))
    args.tests.mkdir(parents=True, exist_ok=True)
    heldout = {"source": "validation split of docs/demo-model.md (first paragraphs)",
               "seq_len": seq_len, "n_windows": len(test_windows),
               "engine_ppl": result["test_engine_ppl"], "engine_backend": engine.backend.name,
               "paragraphs": para_texts, "ids": para_ids}
    (args.tests / "heldout.json").write_text(json.dumps(heldout) + "\n")
    # full logits at the first, an early, the middle and the last position of two windows
    positions = sorted({0, 31, seq_len // 2 - 1, seq_len - 2})
    with torch.no_grad():
        x = torch.from_numpy(test_windows[:2].astype(np.int64))
        logits = model(x).float().numpy()[:, positions]
    np.savez_compressed(args.tests / "torch_logits.npz", windows=np.array([0, 1]),
                        positions=np.array(positions), logits=logits.astype(np.float32))
    result["train_stats"] = stats
    (args.data / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "train_stats"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
