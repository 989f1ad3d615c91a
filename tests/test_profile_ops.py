"""benchmarks/profile_ops.py: the per-op profile counts the ops a decode step really runs."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_profile_counts_each_layers_ops_once_per_step():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/profile_ops.py"), "--device",
                           "reference", "--batch", "1", "2", "--steps", "2", "--top", "20"],
                          capture_output=True, text=True, timeout=300, check=True)
    runs = re.split(r"^B=", done.stdout, flags=re.M)[1:]
    assert [r.split(":")[0] for r in runs] == ["1 plain, blocks op by op", "1 synced per op",
                                             "2 plain, blocks op by op", "2 synced per op"]
    single, batched = runs[1], runs[3]
    layers = 4  # the bundled demo model
    assert re.search(rf"^\s+attention\s.*x{layers}$", single, flags=re.M)
    assert re.search(rf"^\s+attention_rows\s.*x{layers}$", batched, flags=re.M)
    # the head, with the bytes it streams and the rate it reached
    assert re.search(r"^\s+linear_float\[\w+ \d+x\d+\]\s.*x1\s+[\d.]+ MB\s+[\d.]+ GB/s$",
                     batched, flags=re.M)
    assert re.search(r"^\s+between ops \(the model loop\)\s+-?[\d.]+ ms$", single, flags=re.M)
