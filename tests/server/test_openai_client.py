"""The official `openai` client against a live `bitnet serve`."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_completion_returns_text_and_usage(client) -> None:
    r = client.completions.create(model="tiny", prompt="Hello world", max_tokens=8,
                                  temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("length", "stop")


def test_streaming_equals_non_streaming_under_the_same_seed(client) -> None:
    kw = dict(model="tiny", prompt="The quick brown fox", max_tokens=12, temperature=0.9,
              seed=1234)
    full = client.completions.create(**kw).choices[0].text
    parts = [c.choices[0].text for c in client.completions.create(stream=True, **kw)
             if c.choices]
    assert "".join(parts) == full


def test_seed_makes_sampling_deterministic(client) -> None:
    kw = dict(model="tiny", prompt="Once", max_tokens=10, temperature=1.0, seed=7)
    assert client.completions.create(**kw).choices[0].text == \
        client.completions.create(**kw).choices[0].text


def test_chat_completion_and_its_stream(client) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.object == "chat.completion"
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stop_sequence_ends_generation_before_it(client) -> None:
    more = {"ignore_eos": True}  # vLLM's extension, so the random model cannot stop early
    base = client.completions.create(model="tiny", prompt="Hello", max_tokens=20,
                                     temperature=0, extra_body=more).choices[0].text
    if len(base) < 4:
        pytest.skip("the model produced too little text to pick a stop string from")
    stop = base[2:4]
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=20, temperature=0,
                                  stop=[stop], extra_body=more)
    assert stop not in r.choices[0].text
    assert base.startswith(r.choices[0].text)
    assert r.choices[0].finish_reason == "stop"


def test_logprobs_are_returned_and_consistent(client) -> None:
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0,
                                  logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == r.usage.completion_tokens
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) <= 3
        assert abs(max(top.values()) - chosen) < 1e-9  # greedy picks the most likely token


def test_errors_are_openai_errors(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", max_tokens=10**6)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=-1)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="word " * 400, max_tokens=2)
    assert "context" in str(e.value)
