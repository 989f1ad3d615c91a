"""The scheduler's defaults, importable without numpy (the CLI's help shows them).

- ``DEFAULT_MAX_BATCH`` = 64 sequences per decode step. Admission is bounded by the KV pool,
  so this only caps how many streams share one step. A step of B rows reads the weights once
  for all B. On a GPU, bound by launch overhead, a step of 8 cost 1.5x a step of one
  (docs/serving.md), so wide steps are cheap there. On a CPU the step grows with B once the
  matmuls turn compute-bound (about 8 rows of the 2B shape), which spreads the same throughput
  over more streams instead of queueing them. 64 is the issue's target of concurrent chats,
  and a step's tables stay small (64 x 256 int32 for a 4,096 context).
- ``DEFAULT_PREFILL_CHUNK`` = 256 prompt tokens between two decode steps: a running stream
  waits at most one such chunk for its next token, and a chunk is still a wide matmul (a
  prefill's own step, UBATCH, is 512 rows).
"""

DEFAULT_MAX_BATCH = 64
DEFAULT_PREFILL_CHUNK = 256
