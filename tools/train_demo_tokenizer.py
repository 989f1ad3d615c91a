"""Train the demo model's SentencePiece tokenizer on the training split.

    python tools/train_demo_tokenizer.py --data build/demo   # writes build/demo/tokenizer.model

The options mirror a LLaMA-style SentencePiece model so that the GGUF `llama` vocabulary the
engine rebuilds from metadata behaves the same: BPE, <unk>=0 <s>=1 </s>=2, no <pad>, 256 byte
tokens (byte fallback, so any text encodes), identity normalization (no NFKC, which the GGUF
vocabulary cannot carry), a dummy-prefix space, whitespace kept as is, digits split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sentencepiece as spm

VOCAB_SIZE = 4096


def train_tokenizer(train_txt: Path, model_prefix: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train a BPE SentencePiece model on one-paragraph-per-line text; returns the .model path."""
    spm.SentencePieceTrainer.train(
        input=str(train_txt),
        model_prefix=str(model_prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        max_sentence_length=16384,
        num_threads=1,
        minloglevel=2,
    )
    return model_prefix.with_suffix(".model")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train.txt")
    parser.add_argument("--vocab", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    path = train_tokenizer(args.data / "train.txt", args.data / "tokenizer", args.vocab)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    valid = (args.data / "valid.txt").read_text(encoding="utf-8")
    ids = sp.encode(valid)
    n_ids = sum(len(x) for x in sp.encode(valid.splitlines()))
    print(f"{path}: vocab {sp.get_piece_size()}, valid {len(valid)} chars -> {n_ids} tokens")
    if sp.decode(ids) != valid:
        raise SystemExit("validation text does not round-trip through the tokenizer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
