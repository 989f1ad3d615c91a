"""bitnet.hub, `bitnet pull` and `-m hf://...` against a local fake of the hub's file API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet.cli.main import main
from bitnet.core.api import demo_model_path
from bitnet.hub import CHECKPOINT_PATTERNS, HubError, parse_repo, pull, resolve_model
from tests.hub.conftest import DEMO, hub_env
from tests.hub.fake_hub import FakeHub, Repo


def test_parse_repo_reads_hub_uris() -> None:
    assert parse_repo("hf://bitnet/demo") == ("bitnet/demo", None, None)
    assert parse_repo("hf://bitnet/demo@v1/sub/x.gguf") == ("bitnet/demo", "v1", "sub/x.gguf")
    assert parse_repo("bitnet/demo", "x.gguf") == ("bitnet/demo", None, "x.gguf")
    with pytest.raises(HubError, match="not a model repository name"):
        parse_repo("hf://justone")
    with pytest.raises(HubError, match="not a dataset"):
        parse_repo("hf://datasets/bitnet/demo/x")
    with pytest.raises(HubError, match="already names a file"):
        parse_repo("hf://bitnet/demo/x.gguf", "y.gguf")


def test_pull_a_file_into_the_cache(hub: FakeHub, tmp_path: Path) -> None:
    pulled = pull("bitnet/demo", DEMO)
    assert pulled.kind == "gguf" and pulled.files == (DEMO,)
    assert pulled.path.read_bytes() == demo_model_path().read_bytes()
    assert str(pulled.path).startswith(str(tmp_path / "hf" / "hub"))  # HF_HUB_CACHE
    gets = len(hub.file_gets(DEMO))
    assert pull(f"hf://bitnet/demo/{DEMO}").path == pulled.path  # cached: no second download
    assert len(hub.file_gets(DEMO)) == gets


def test_pull_a_repo_with_one_gguf_takes_it(hub: FakeHub) -> None:
    pulled = pull("bitnet/demo")
    assert pulled.files == (DEMO,) and pulled.path.name == DEMO
    assert not hub.file_gets("README.md")


def test_pull_a_repo_with_several_ggufs_asks_which(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="holds 2 GGUF files; name one") as e:
        pull("bitnet/several")
    assert "a-i2_s.gguf" in str(e.value) and "b-tq2_0.gguf" in str(e.value)
    assert pull("bitnet/several", "b-tq2_0.gguf").path.name == "b-tq2_0.gguf"


def test_pull_a_checkpoint_fetches_config_weights_and_tokenizer_only(hub: FakeHub) -> None:
    pulled = pull("hf://bitnet/ckpt")
    assert pulled.kind == "checkpoint" and pulled.path.is_dir()
    assert pulled.files == ("config.json", "model.safetensors", "tokenizer.json",
                            "tokenizer_config.json")
    fetched = {Path(r.path).name for r in hub.requests if "/resolve/" in r.path}
    assert fetched == set(pulled.files)  # never README, pytorch_model.bin, optimizer.pt
    assert "*.safetensors" in CHECKPOINT_PATTERNS
    # until checkpoints convert, running one says so instead of failing on a directory
    with pytest.raises(ValueError, match="checkpoint"):
        resolve_model("hf://bitnet/ckpt")


def test_interrupted_download_resumes_with_a_range_request(hub: FakeHub) -> None:
    # huggingface_hub writes whole 10 MiB chunks, so only a drop past the first one can resume
    blob = np.random.default_rng(0).bytes(12 * 1024 * 1024)
    hub.repos["bitnet/big"] = Repo({"weights.bin": blob})
    hub.drop_once[("bitnet/big", "weights.bin")] = 11 * 1024 * 1024
    pulled = pull("bitnet/big", "weights.bin", progress=False)
    first, again = hub.file_gets("weights.bin")
    assert "range" not in {k.lower() for k in first.headers}
    wanted = {k.lower(): v for k, v in again.headers.items()}["range"]
    start = int(wanted.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 11 * 1024 * 1024  # resumed, not started again
    assert pulled.path.read_bytes() == blob


def test_missing_file_names_it_and_lists_the_repo(hub: FakeHub) -> None:
    with pytest.raises(HubError) as e:
        pull("bitnet/demo", "nope.gguf")
    message = str(e.value)
    assert "bitnet/demo has no file 'nope.gguf'" in message and DEMO in message
    assert "\n" not in message
    with pytest.raises(HubError, match="no GGUF file and no checkpoint.*README.md"):
        pull("bitnet/empty")


def test_missing_repo_and_revision(hub: FakeHub) -> None:
    with pytest.raises(HubError, match=r"repository bitnet/nothing not found on http://127"):
        pull("bitnet/nothing", DEMO)
    with pytest.raises(HubError, match=r"repository bitnet/nothing not found"):
        pull("bitnet/nothing")
    with pytest.raises(HubError, match="has no revision 'v9'"):
        pull("hf://bitnet/demo@v9/" + DEMO)


def test_gated_repo_needs_hf_token(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="bitnet/gated is gated.*set HF_TOKEN"):
        pull("bitnet/gated", DEMO)
    with hub_env(HF_TOKEN="hf_wrong"), pytest.raises(HubError, match="HF_TOKEN is set"):
        pull("bitnet/gated", DEMO)
    with hub_env(HF_TOKEN="hf_good"):
        assert pull("bitnet/gated").path.name == DEMO


def test_offline_uses_the_cache_and_says_what_is_missing(hub: FakeHub) -> None:
    online = pull("bitnet/demo", DEMO).path
    seen = len(hub.requests)
    with hub_env(HF_HUB_OFFLINE="1"):
        assert pull("bitnet/demo", DEMO).path == online
        assert pull("hf://bitnet/demo").path == online  # the listing comes from the cache
        with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and hf://bitnet/several/"
                                           "a-i2_s.gguf is not in the cache"):
            pull("bitnet/several", "a-i2_s.gguf")
        with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and hf://bitnet/ckpt"):
            pull("bitnet/ckpt")
    assert len(hub.requests) == seen  # offline means no request at all


def test_unreachable_endpoint_without_cache_is_one_line(hub: FakeHub, monkeypatch) -> None:
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda _s: None)  # skip its 23 s of back-off
    with hub_env(HF_ENDPOINT="http://127.0.0.1:9"):  # discard port: nothing listens
        with pytest.raises(HubError, match="cannot reach http://127.0.0.1:9 and hf://bitnet/"
                                           "demo is not in the cache"):
            pull("bitnet/demo")
        with pytest.raises(HubError, match="cannot reach http://127.0.0.1:9 and hf://bitnet/"
                                           "demo/x.gguf is not in the cache"):
            pull("bitnet/demo", "x.gguf")


def test_run_hf_uri_matches_running_the_local_file(hub: FakeHub, capsys) -> None:
    common = ["-p", "Elizabeth", "-n", "8", "--temp", "0", "--device", "reference", "--json"]
    assert main(["run", "-m", f"hf://bitnet/demo/{DEMO}", *common]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert main(["run", "-m", str(demo_model_path()), *common]) == 0
    local = json.loads(capsys.readouterr().out)
    assert remote["tokens"] == local["tokens"] and remote["text"] == local["text"]
    assert len(local["tokens"]) == 8


def test_cli_pull_prints_the_path_and_json(hub: FakeHub, capsys) -> None:
    assert main(["pull", "bitnet/demo"]) == 0
    path = capsys.readouterr().out.strip()
    assert Path(path).name == DEMO and Path(path).is_file()
    assert main(["pull", "bitnet/demo", DEMO, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"repo": "bitnet/demo", "revision": None, "kind": "gguf", "path": path,
                   "files": [DEMO]}
    assert main(["pull", "bitnet/demo", "missing.gguf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bitnet: error: bitnet/demo has no file 'missing.gguf'")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_pull_reads_the_environment_in_a_fresh_process(hub: FakeHub, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "home"))
    p = subprocess.run([sys.executable, "-m", "bitnet.cli", "pull", "bitnet/gated", DEMO],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "set HF_TOKEN" in p.stderr
    env["HF_TOKEN"] = "hf_good"
    p = subprocess.run([sys.executable, "-m", "bitnet.cli", "pull", "bitnet/gated", DEMO],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith(str(tmp_path / "home" / "hub"))
    env["HF_HUB_OFFLINE"] = "1"
    p = subprocess.run([sys.executable, "-m", "bitnet.cli", "pull", "bitnet/demo", DEMO],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "HF_HUB_OFFLINE is set" in p.stderr
