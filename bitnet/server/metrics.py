"""Prometheus metrics: requests, tokens, speeds, queue depth, errors and the backend in use."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, state: Any) -> None:
        self.registry = CollectorRegistry()
        self.state = state
        self.requests = Counter("bitnet_requests", "Generation requests accepted", ["endpoint"],
                                registry=self.registry)
        self.errors = Counter("bitnet_errors", "Requests answered with an error", ["code"],
                              registry=self.registry)
        self.prompt_tokens = Counter("bitnet_prompt_tokens", "Prompt tokens processed",
                                     registry=self.registry)
        self.completion_tokens = Counter("bitnet_completion_tokens", "Tokens generated",
                                         registry=self.registry)
        self.backend = Info("bitnet_backend", "The backend and device in use",
                            registry=self.registry)
        self.registry.register(_SchedulerCollector(state))

    def set_backend(self, model: Any) -> None:
        dev = model.backend.device
        self.backend.info({"backend": model.backend.name, "device": dev.name, "spec": dev.spec})

    def count_tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SchedulerCollector:
    """Reads the scheduler's live figures at scrape time."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self):
        sched = self.state.scheduler
        s = sched.stats if sched is not None else None
        pool = sched.pool if sched is not None else None
        values = {
            "bitnet_queue_depth": ("Requests waiting for admission (queued or preempted)",
                                   s.waiting if s else 0),
            "bitnet_active_sequences": ("Sequences admitted: holding KV blocks, prefilling or "
                                        "decoding", s.active if s else 0),
            "bitnet_prompt_tokens_per_second": (
                "Prompt processing speed since start",
                s.prompt_tokens / s.prompt_seconds if s and s.prompt_seconds else 0.0),
            "bitnet_decode_tokens_per_second": (
                "Aggregate decode speed since start",
                s.completion_tokens / s.decode_seconds if s and s.decode_seconds else 0.0),
            "bitnet_ready": ("1 once the model is loaded and validated",
                             1 if self.state.ready.is_set() else 0),
            "bitnet_kv_blocks": ("Blocks of the KV pool (KV_BLOCK positions each)",
                                 pool.n_blocks if pool else 0),
            "bitnet_kv_blocks_used": ("KV blocks held by running sequences",
                                      pool.used if pool else 0),
            "bitnet_kv_blocks_cached": ("KV blocks no sequence holds that keep a prefix for "
                                        "reuse (evicted least recently used first)",
                                        pool.cached if pool else 0),
            "bitnet_kv_blocks_free": ("KV blocks holding nothing", pool.free if pool else 0),
        }
        for name, (doc, value) in values.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "bitnet_decode_steps": ("Decode steps run (each advances every active sequence)",
                                    s.decode_steps if s else 0),
            "bitnet_decoded_tokens": ("Tokens produced by decode steps, all sequences",
                                      s.decode_rows if s else 0),
            "bitnet_decode_seconds": ("Seconds spent in decode steps", s.decode_seconds if s else 0),
            "bitnet_prefill_chunks": ("Prompt chunks prefilled between decode steps",
                                      s.prefill_chunks if s else 0),
            "bitnet_prefix_hit_tokens": ("Prompt tokens taken from the prefix cache instead of "
                                         "being computed", s.prefix_hit_tokens if s else 0),
            "bitnet_preemptions": ("Sequences preempted because the KV pool was full (their "
                                   "tokens are recomputed when they resume)",
                                   s.preemptions if s else 0),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
