"""`bitnet serve --ray --replicas 2` on a local single-node Ray cluster."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'ray[serve]'")

from tests.core.fixtures import model_path  # noqa: E402
from tests.server.conftest import ServeProcess  # noqa: E402


@pytest.mark.slow
def test_two_replicas_serve_the_same_api(tmp_path) -> None:
    serve = ServeProcess(["--ray", "--replicas", "2", "-m", str(model_path("tiny-b158-i2_s")),
                          "--device", "reference", "--model-name", "tiny"],
                         tmp_path / "serve.log", RAY_ADDRESS="", RAY_USAGE_STATS_ENABLED="0")
    url = serve.url
    try:
        pids = set()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(pids) < 2:
            r = serve.health()
            if r is not None and r.status_code == 200:
                pids.add(r.json()["pid"])
            time.sleep(0.2)
        assert len(pids) == 2, f"replicas seen: {pids}\n" + serve.log_tail()
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        answers = {httpx.post(url + "/v1/completions", json=body, timeout=60).json()
                   ["choices"][0]["text"] for _ in range(4)}
        assert len(answers) == 1  # every replica gives the same greedy answer
        models = httpx.get(url + "/v1/models", timeout=30).json()
        assert models["data"][0]["id"] == "tiny"
    finally:
        serve.stop()
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
                       capture_output=True, timeout=120)
