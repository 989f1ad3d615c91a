"""Train the bundled demo BitNet b1.58 model from scratch on the CPU (PyTorch, QAT).

    python tools/demo_data.py --out build/demo                 # corpus: train.txt, valid.txt
    python tools/train_demo_tokenizer.py --data build/demo      # tokenizer.model
    nice python tools/train_demo.py --data build/demo --minutes 40 > build/demo/train.log

Writes ``checkpoint.pt`` (float latent weights + config + stats) and ``train_log.jsonl`` into
``--data``. The learning-rate schedule is a warmup then a cosine decay over *progress*, the larger
of step / --steps and elapsed / --minutes, so the run anneals fully within its time budget on a
slow or busy machine. Training runs one thread (the machine is shared) and in bfloat16 autocast
where the CPU supports it; evaluation runs in float32.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_model import DemoConfig, DemoLM

BOS_ID = 1
EOS_ID = 2


def encode_paragraphs(sp: spm.SentencePieceProcessor, text_path: Path) -> np.ndarray:
    """One-paragraph-per-line text -> int32 stream ``<s> p1 </s> <s> p2 </s> ...``.

    Each paragraph starts with BOS as a prompt does in the engine (add_bos_token), and ends with
    EOS, so generation stops at the end of a paragraph."""
    lines = [line for line in text_path.read_text(encoding="utf-8").splitlines() if line]
    out: list[int] = []
    for ids in sp.encode(lines):
        out.append(BOS_ID)
        out.extend(ids)
        out.append(EOS_ID)
    return np.asarray(out, dtype=np.int32)


def valid_windows(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows int32 [n, seq_len] of the validation stream (tail dropped).

    Perplexity over a window scores its tokens 1..seq_len-1 given the tokens before them."""
    n = len(stream) // seq_len
    return stream[: n * seq_len].reshape(n, seq_len)


@torch.no_grad()
def evaluate(model: DemoLM, windows: np.ndarray, batch: int = 8) -> float:
    """Mean next-token cross-entropy (nats) of the float32 model over windows [n, T]."""
    model.eval()
    total = 0.0
    count = 0
    for i in range(0, len(windows), batch):
        x = torch.from_numpy(windows[i : i + batch].astype(np.int64))
        logits = model(x[:, :-1]).float()
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum")
        total += float(loss)
        count += x[:, 1:].numel()
    model.train()
    return total / count


def lr_at(progress: float, peak: float, warmup: float, floor: float) -> float:
    """Linear warmup to ``peak`` over the first ``warmup`` of progress, then cosine to floor."""
    if progress < warmup:
        return peak * progress / warmup
    t = min(1.0, (progress - warmup) / (1.0 - warmup))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with train/valid/tokenizer")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: --data)")
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=768)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=32, help="windows in the periodic eval")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-bf16", action="store_true", help="train in float32")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or args.data
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    sp = spm.SentencePieceProcessor(model_file=str(args.data / "tokenizer.model"))
    train = encode_paragraphs(sp, args.data / "train.txt")
    windows = valid_windows(encode_paragraphs(sp, args.data / "valid.txt"), args.context)
    config = DemoConfig(vocab_size=sp.get_piece_size(), d_model=args.d_model,
                        n_layers=args.layers, n_heads=args.heads,
                        head_dim=args.d_model // args.heads, d_ff=args.d_ff,
                        context_length=args.context)
    model = DemoLM(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    use_bf16 = not args.no_bf16
    log_path = out / "train_log.jsonl"
    log = log_path.open("w")
    print(f"params {model.n_params()}, train tokens {len(train)}, valid windows {len(windows)}",
          flush=True)
    t0 = time.time()
    step = 0
    progress = 0.0
    seen = 0
    while progress < 1.0 and step < args.steps:
        progress = max(step / args.steps, (time.time() - t0) / (60.0 * args.minutes))
        lr = lr_at(progress, args.lr, warmup=0.03, floor=0.1 * args.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(train) - args.context - 1, size=args.batch)
        batch = np.stack([train[s : s + args.context + 1] for s in starts]).astype(np.int64)
        x = torch.from_numpy(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += x[:, 1:].numel()
        record = {"step": step, "loss": round(float(loss.detach()), 4), "lr": lr, "tokens": seen,
                  "elapsed_s": round(time.time() - t0, 1)}
        if step % args.eval_every == 0:
            record["valid_loss"] = round(evaluate(model, windows[: args.eval_windows]), 4)
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
    train_s = time.time() - t0
    valid_loss = evaluate(model, windows)
    stats = {"steps": step, "tokens_seen": seen, "train_seconds": round(train_s, 1),
             "valid_loss": valid_loss, "valid_ppl": math.exp(valid_loss),
             "valid_tokens_scored": int(windows[:, 1:].size), "params": model.n_params(),
             "bf16": use_bf16, "threads": args.threads, "args": {k: str(v) for k, v in
                                                                  vars(args).items()}}
    torch.save({"config": config.to_dict(), "model": model.state_dict(), "stats": stats},
               out / "checkpoint.pt")
    (out / "train_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
