"""The Python API: ``bitnet.load(path)`` -> ``Model`` with logits, generate and chat.

Data flows one way: GGUF file -> config + weights (core.gguf, core.loader) -> a validated
backend (registry.select) -> weights on the device (core.model) -> tokens (core.generate).
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bitnet.core.generate import GenerationStats, StopStrings, check_fits, generate_ids, prefill
from bitnet.core.model import Transformer
from bitnet.core.sampling import Sampler, SamplingParams

DEMO_MODEL = "demo-b158-i2_s.gguf"
DEFAULT_CTX = 4096  # the default KV cache size: a file may declare far more than anyone needs


def demo_model_path() -> Path:
    """The small BitNet model bundled with the package (docs/demo-model.md)."""
    path = Path(str(resources.files("bitnet.data") / DEMO_MODEL))
    if not path.is_file():
        raise FileNotFoundError(f"the bundled demo model is missing ({path}); reinstall bitnet "
                                f"or pass a GGUF file")
    return path


def load(path: str | os.PathLike[str] | None = None, device: str | None = None,
         threads: int | None = None, ternarize: bool = False, n_ctx: int | None = None,
         pretokenizer: str | None = None, progress: bool | None = None,
         revalidate: bool = False, activation: str | None = None) -> "Model":
    """Open a BitNet GGUF file on the best validated backend.

    path: a GGUF file, or ``hf://OWNER/NAME[/FILE]`` fetched through the Hugging Face Hub cache
        (bitnet.hub); None loads the bundled demo model.
    device: "auto", "cpu", "cuda:1", "opencl:0", "reference", an ordered list "cuda,cpu", ...;
        None means $BITNET_DEVICE, else "auto". An explicit device that cannot be used is an
        error naming why, never a silent substitute.
    threads: CPU threads for CPU backends (None: the backend's default).
    ternarize: run F32/F16/BF16 weights ternarized (per-tensor absmean) with int8 activations,
        BitNet b1.58's training semantics and the fast path; default runs them as float matmuls.
    n_ctx: context length to allocate (default: the file's context_length, at most 4096;
        the file's context_length is the maximum).
    pretokenizer: override a gpt2 vocabulary's pre-tokenizer (e.g. "llama3").
    activation: "silu" or "relu2" instead of the file's FFN gating (a 1bitLLM model labelled
        bitnet-b1.58 is detected and warned about; this settles it either way).
    progress: show progress bars (None: only on a terminal).
    """
    from bitnet.core.config import ModelConfig
    from bitnet.core.gguf import open_gguf
    from bitnet.core.loader import load_weights, model_requirements
    from bitnet.core.tokenizer import Tokenizer
    from bitnet.hal import CreateOptions
    from bitnet.registry import select

    from bitnet.hub import resolve_model

    path = resolve_model(path, progress=progress) if path is not None else demo_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    gguf = open_gguf(path)
    try:
        config = ModelConfig.from_metadata(gguf.metadata, activation=activation)
        tokenizer = Tokenizer.from_metadata(gguf.metadata, pretokenizer=pretokenizer)
        weights = load_weights(gguf, config, ternarize=ternarize)
        ctx = min(config.n_ctx, DEFAULT_CTX) if n_ctx is None else n_ctx
        if not 0 < ctx <= config.n_ctx:
            raise ValueError(f"n_ctx must be in 1..{config.n_ctx} (the file's context_length), "
                             f"got {ctx}")
        requirements = model_requirements(config, weights)
        selection = select(device, requirements, CreateOptions(threads=threads),
                           revalidate=revalidate, progress=progress)
        transformer = Transformer(config, weights, selection.backend, ctx,
                                  progress=_progress_bar(progress, config.n_layers))
    except BaseException:
        gguf.close()
        raise
    return Model(path, gguf, config, tokenizer, transformer, requirements, selection)


def _progress_bar(enabled: bool | None, total: int):
    if enabled is False:
        return None
    from tqdm import tqdm

    def bar(items):
        return tqdm(items, total=total, desc="loading weights", unit="layer", leave=False,
                    disable=None if enabled is None else not enabled, file=sys.stderr)
    return bar


class Model:
    """A loaded model. Not thread-safe: one generation at a time (bitnet serve queues them)."""

    def __init__(self, path: Path, gguf: Any, config: Any, tokenizer: Any,
                 transformer: Transformer, requirements: Any, selection: Any) -> None:
        self.path = path
        self.config = config
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.requirements = requirements
        self.selection = selection
        self.backend = selection.backend
        self.last_stats = GenerationStats()
        self.chat_template: str | None = gguf.metadata.get("tokenizer.chat_template")
        from bitnet.core.chat import builtin_format_for

        # the format used when the file has no template (bitnet.cpp's built-in formats)
        self.chat_format = builtin_format_for(gguf.metadata)
        self._gguf = gguf

    def __repr__(self) -> str:
        return (f"<bitnet.Model {self.path.name} {self.config.arch} on {self.backend.name} "
                f"({self.backend.device.name})>")

    @property
    def selection_summary(self) -> dict[str, Any]:
        report = getattr(self.selection, "report", None)
        if report is not None and hasattr(report, "to_dict"):
            return report.to_dict()
        return {"backend": self.backend.name, "device": self.backend.device.spec}

    # -- numbers ---------------------------------------------------------------------------

    def logits(self, token_ids: list[int] | np.ndarray) -> np.ndarray:
        """Logits for every position of ``token_ids`` in a fresh context: f32 [n, vocab]."""
        ids = self._check_ids(token_ids)
        return prefill(self.transformer, ids, last_only=False)

    def _check_ids(self, token_ids: list[int] | np.ndarray) -> list[int]:
        ids = [int(t) for t in np.asarray(token_ids).reshape(-1)]
        if not ids:
            raise ValueError("token_ids is empty")
        bad = [t for t in ids if not 0 <= t < self.config.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.n_vocab - 1})")
        check_fits(len(ids), self.transformer.n_ctx)
        return ids

    def perplexity(self, text: str | list[int], n_ctx: int | None = None,
                   n_batch: int | None = None, n_chunks: int | None = None,
                   progress: bool | None = None) -> Any:
        """llama-perplexity's figure for ``text`` (or token ids) -> ``PerplexityResult`` (ppl,
        ppl_err, nll, n_scored, ...). Chunks of ``n_ctx`` tokens (default 512, at most the
        context allocated at load), each from an empty context and starting with BOS when the
        vocabulary adds one; the second half of each chunk is scored (bitnet.core.perplexity)."""
        from bitnet.core.perplexity import DEFAULT_CTX, perplexity

        tok = self.tokenizer
        if isinstance(text, str):
            ids = tok.encode(text, add_eos=False)  # llama.cpp refuses vocabularies that add EOS
        else:
            ids = [int(t) for t in np.asarray(text).reshape(-1)]
        bos = tok.bos_id if tok.add_bos else None
        n_ctx = min(DEFAULT_CTX, self.transformer.n_ctx) if n_ctx is None else n_ctx
        return perplexity(self.transformer, ids, n_ctx, bos, n_batch=n_batch, n_chunks=n_chunks,
                          progress=progress)

    # -- text ------------------------------------------------------------------------------

    def generate(self, prompt: str | list[int], max_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, seed: int | None = None,
                 stop: list[str] | str | None = None, stream: bool = False,
                 add_bos: bool | None = None, ignore_eos: bool = False) -> str | Iterator[str]:
        """Continue ``prompt`` (text, or token ids). Returns the new text, or an iterator of text
        pieces when ``stream=True``. ``temperature=0`` is greedy; same seed + same backend gives
        the same tokens. Generation ends at EOS/EOT, a stop string, max_tokens or the context end.
        ``self.last_stats`` then holds token counts, speeds and the finish reason."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_bos=add_bos)
        else:
            ids = self._check_ids(prompt)
        return self._run(ids, max_tokens, stop, stream, ignore_eos, False, SamplingParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, seed=seed))

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 256, stream: bool = False,
             **sampling: Any) -> str | Iterator[str]:
        """Reply to a conversation rendered with the file's chat template (sandboxed jinja2),
        or bitnet.cpp's built-in format for the file when it has none (``self.chat_format``)."""
        from bitnet.core.chat import render_chat

        tok = self.tokenizer
        bos = self._special_text(tok.bos_id)
        text = render_chat(messages, self.chat_template, bos_token=bos,
                           eos_token=self._special_text(tok.eos_id), add_generation_prompt=True,
                           builtin=self.chat_format)
        add_bos = not (bos and text.startswith(bos))  # a template that writes BOS itself
        ids = tok.encode(text, add_bos=add_bos, parse_special=True)
        stop = sampling.pop("stop", None)
        ignore_eos = sampling.pop("ignore_eos", False)
        params = SamplingParams(**sampling)
        # a reply starts fresh after "Assistant: ": its first piece's prefix space is dropped
        return self._run(ids, max_tokens, stop, stream, ignore_eos, True, params)

    def _special_text(self, token_id: int | None) -> str:
        if token_id is None:
            return ""
        return self.tokenizer.token_to_piece(token_id).decode("utf-8", errors="replace")

    def _run(self, ids: list[int], max_tokens: int, stop: list[str] | str | None, stream: bool,
             ignore_eos: bool, fresh_text: bool,
             params: SamplingParams) -> str | Iterator[str]:
        check_fits(len(ids), self.transformer.n_ctx)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        pieces = self._pieces(ids, max_tokens, stops, ignore_eos, fresh_text, params)
        return pieces if stream else "".join(pieces)

    def _pieces(self, ids: list[int], max_tokens: int, stops: list[str], ignore_eos: bool,
                fresh_text: bool, params: SamplingParams) -> Iterator[str]:
        """Text pieces as tokens are sampled. ``fresh_text``: the output starts a new text (a
        chat reply), so a SentencePiece prefix space on its first piece is dropped; otherwise
        it continues the prompt and keeps it ("Elizabeth" + " felt")."""
        self.last_stats = stats = GenerationStats()
        self._last_seed = params.seed
        self.transformer.ops.counts.clear()  # the receipt describes this generation only
        is_eog = (lambda _t: False) if ignore_eos else self.tokenizer.is_eog
        text = self.tokenizer.stream_decoder(lstrip=None if fresh_text else False)
        cut = StopStrings(stops)
        for token in generate_ids(self.transformer, ids, Sampler(params), max_tokens, is_eog,
                                  stats):
            piece = cut.push(text.push(token))
            if piece:
                yield piece
            if cut.stopped:
                stats.finish_reason = "stop"
                return
        tail = cut.push(text.flush()) + cut.flush()
        if tail:
            yield tail

    # -- records ---------------------------------------------------------------------------

    def receipt(self) -> dict[str, Any]:
        """A JSON-ready record of the last generation: file hash, backend, kernels, speed."""
        from bitnet.core.receipt import build_receipt

        return build_receipt(self, self.last_stats, getattr(self, "_last_seed", None))

    def close(self) -> None:
        self.backend.close()
        self._gguf.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
