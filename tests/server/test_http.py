"""The server's HTTP behaviour with raw requests: bad input, limits, auth, health, metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import API_KEY, DEVICE


def post(server, path, **kw):
    return httpx.post(server.url + path, timeout=60, **kw)


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    return err


def test_health_and_metrics(server) -> None:
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["backend"] == DEVICE.split(":")[0]
    kv = h["kv_pool"]
    assert kv["blocks"] > 0 and kv["block_positions"] == 16 and kv["sized_by"]
    post(server, "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
    text = httpx.get(server.url + "/metrics").text
    for name in ("bitnet_requests_total", "bitnet_completion_tokens_total",
                 "bitnet_queue_depth", "bitnet_decode_tokens_per_second", "bitnet_backend_info",
                 "bitnet_errors_total", "bitnet_kv_blocks", "bitnet_kv_blocks_used",
                 "bitnet_kv_blocks_cached", "bitnet_kv_blocks_free", "bitnet_preemptions_total",
                 "bitnet_prefix_hit_tokens_total", "bitnet_prefill_chunks_total"):
        assert name in text, name
    blocks = [line for line in text.splitlines() if line.startswith("bitnet_kv_blocks ")]
    assert blocks == [f"bitnet_kv_blocks {float(kv['blocks'])}"]


def test_metrics_count_the_prefix_a_second_request_reuses(server) -> None:
    def hits() -> float:
        for line in httpx.get(server.url + "/metrics").text.splitlines():
            if line.startswith("bitnet_prefix_hit_tokens_total "):
                return float(line.split()[1])
        raise AssertionError("no bitnet_prefix_hit_tokens_total")

    prompt = list(range(5, 5 + 40))  # two full blocks and a part
    post(server, "/v1/completions", json={"prompt": prompt + [50], "max_tokens": 1})
    before = hits()
    post(server, "/v1/completions", json={"prompt": prompt + [60], "max_tokens": 1})
    assert hits() - before == 32


@pytest.mark.parametrize("body", [b"{not json", b'{"prompt": "\xff\xfe", "max_tokens": 2}',
                                  b"[]", b'{"prompt": 5}', b'{"max_tokens": 2}'])
def test_malformed_requests_get_400(server, body: bytes) -> None:
    r = post(server, "/v1/completions", content=body,
             headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


def test_wrong_types_and_unknown_roles(server) -> None:
    assert_openai_error(post(server, "/v1/completions", json={"prompt": "x",
                                                              "max_tokens": "many"}), 400)
    assert_openai_error(post(server, "/v1/chat/completions",
                             json={"messages": [{"role": "wizard", "content": "x"}]}), 400)
    assert_openai_error(post(server, "/v1/chat/completions", json={"messages": []}), 400)


def test_oversized_body_is_413(server) -> None:
    r = post(server, "/v1/completions", json={"prompt": "x" * 100_000, "max_tokens": 1})
    assert_openai_error(r, 413)


def test_out_of_vocabulary_token_prompt_is_400(server) -> None:
    assert_openai_error(post(server, "/v1/completions", json={"prompt": [1, 10**9]}), 400)


def test_a_template_escaping_its_sandbox_is_400_and_the_server_keeps_serving(server) -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    r = post(server, "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "chat_template": evil, "max_tokens": 2})
    assert_openai_error(r, 400)
    ok = post(server, "/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    assert ok.status_code == 200


def test_api_key_is_required_and_checked(keyed_server) -> None:
    body = {"prompt": "Hi", "max_tokens": 1}
    assert_openai_error(post(keyed_server, "/v1/completions", json=body), 401)
    bad = {"Authorization": "Bearer wrong"}
    assert_openai_error(post(keyed_server, "/v1/completions", json=body, headers=bad), 401)
    good = {"Authorization": f"Bearer {API_KEY}"}
    assert post(keyed_server, "/v1/completions", json=body, headers=good).status_code == 200


def test_rate_limit_answers_429(keyed_server) -> None:
    good = {"Authorization": f"Bearer {API_KEY}"}
    codes = [httpx.get(keyed_server.url + "/v1/models", headers=good).status_code
             for _ in range(40)]
    assert 429 in codes and codes[0] == 200


def test_openapi_document_lists_the_endpoints(server) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health"):
        assert path in doc["paths"]


def test_cors_is_off_by_default(server) -> None:
    r = httpx.options(server.url + "/v1/models", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
