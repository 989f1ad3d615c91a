"""A live server on loopback for the tests: uvicorn in a thread, over a small fixture model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install bitnet[server]")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from tests.core.fixtures import model_path  # noqa: E402

MODEL = "tiny-b158-i2_s"
API_KEY = "test-key-123"
# the backend the live servers run on: the reference by default (every machine has it);
# BITNET_TEST_SERVER_DEVICE=cuda runs the whole server suite on a GPU
DEVICE = os.environ.get("BITNET_TEST_SERVER_DEVICE", "reference")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, path: Path, **settings) -> None:
        import bitnet
        from bitnet.server.app import ServerSettings, create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(lambda: bitnet.load(path, device=DEVICE, progress=False),
                         ServerSettings(model_name="tiny", **settings))
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the test server did not become ready in 120 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


class ServeProcess:
    """`bitnet serve ARGS --port P` as a user runs it: a subprocess on a free port, its output
    in ``log_path`` (shown when it fails)."""

    def __init__(self, args: list[str], log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        cmd = [sys.executable, "-m", "bitnet.cli", "serve", *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def health(self) -> httpx.Response | None:
        """/health's answer, or None while nothing listens; fails if the server has exited."""
        assert self.proc.poll() is None, f"bitnet serve exited:\n{self.log_tail()}"
        try:
            return httpx.get(self.url + "/health", timeout=5)
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 120) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.health()
            if r is not None and r.status_code == 200:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"bitnet serve was not ready in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def server():
    s = LiveServer(model_path(MODEL), max_tokens_limit=256, max_request_bytes=64 * 1024).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def keyed_server():
    s = LiveServer(model_path(MODEL), api_keys=[API_KEY], rate_limit=30).start()
    yield s
    s.stop()
