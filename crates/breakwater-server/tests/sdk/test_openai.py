"""The official OpenAI Python SDK against a breakwater gateway.

Run by tests/sdk.rs with GATEWAY_URL, GATEWAY_KEY (a key with no limits)
and GATEWAY_TINY_KEY (a key allowed one request per minute). The SDK's own
retries are off (max_retries=0): every success here is the gateway's.
"""

import os

import openai
from openai import OpenAI

BASE = os.environ["GATEWAY_URL"] + "/v1"
KEY = os.environ["GATEWAY_KEY"]
TINY_KEY = os.environ["GATEWAY_TINY_KEY"]
CALLS = int(os.environ.get("RESILIENCE_CALLS", "20"))

client = OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=30)
MSG = [{"role": "user", "content": "Say hello."}]
max_attempts_seen = 0


def attempts(raw):
    global max_attempts_seen
    n = int(raw.headers.get("x-breakwater-attempts", "1"))
    max_attempts_seen = max(max_attempts_seen, n)
    return n


def chat(model="fast"):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MSG, max_tokens=16
    )
    attempts(raw)
    r = raw.parse()
    assert r.object == "chat.completion", r
    assert r.choices[0].message.role == "assistant", r
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason in ("stop", "length"), r
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0, r.usage
    assert raw.headers.get("x-breakwater-target"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    return r


def stream(model="fast"):
    text, usage, finish = "", None, None
    s = client.chat.completions.create(
        model=model,
        messages=MSG,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in s:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            assert not chunk.choices, "usage comes in a final chunk without choices"
            usage = chunk.usage
    assert text, "the stream carried text"
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens > 0, usage
    return text


def embed(model="embed"):
    # The SDK asks for base64 by default and decodes it to floats.
    e = client.embeddings.create(model=model, input="hello world")
    assert len(e.data) == 1 and len(e.data[0].embedding) > 0, e
    assert all(isinstance(x, float) for x in e.data[0].embedding)
    e2 = client.embeddings.create(model=model, input=["a", "b", "c"], encoding_format="float")
    assert [d.index for d in e2.data] == [0, 1, 2], e2
    assert len(e2.data[0].embedding) == len(e.data[0].embedding)
    assert e2.usage.prompt_tokens > 0, e2.usage


def expect(cls, fn, status):
    try:
        fn()
    except cls as e:
        assert e.status_code == status, (e.status_code, e)
        body = e.body if isinstance(e.body, dict) else {}
        assert body.get("message"), f"an OpenAI-shaped error body: {e.body!r}"
        return e
    raise AssertionError(f"expected {cls.__name__}")


# The basics, on the alias whose primary injects faults.
chat()
stream()
embed()
print("ok: chat, stream with usage, embeddings")

# Models the key may use.
ids = [m.id for m in client.models.list()]
assert "fast" in ids and "embed" in ids, ids

# Error classes.
bad = OpenAI(base_url=BASE, api_key="sk-not-a-real-key", max_retries=0, timeout=30)
expect(openai.AuthenticationError, lambda: bad.chat.completions.create(model="fast", messages=MSG), 401)

expect(
    openai.BadRequestError,
    lambda: client.chat.completions.create(model="fast", messages=[{"role": "user"}]),
    400,
)
# A body without `messages` at all (the SDK's typed method would refuse to send it).
e = expect(
    openai.BadRequestError,
    lambda: client.post("/chat/completions", body={"model": "fast"}, cast_to=object),
    400,
)
assert "messages" in str(e), e

expect(
    openai.NotFoundError,
    lambda: client.chat.completions.create(model="no-such-model", messages=MSG),
    404,
)

tiny = OpenAI(base_url=BASE, api_key=TINY_KEY, max_retries=0, timeout=30)
tiny.chat.completions.create(model="fast", messages=MSG, max_tokens=4)
e = expect(
    openai.RateLimitError,
    lambda: tiny.chat.completions.create(model="fast", messages=MSG, max_tokens=4),
    429,
)
retry_after = e.response.headers.get("retry-after")
assert retry_after is not None and int(retry_after) >= 1, dict(e.response.headers)
assert e.response.headers.get("x-ratelimit-limit-requests") == "1", dict(e.response.headers)
print(f"ok: error classes (429 with retry-after {retry_after}s)")

# Resilience: the primary target fails 30% of calls; retries and failover
# must make every call succeed.
for _ in range(CALLS):
    chat()
for _ in range(CALLS // 2):
    stream()
for _ in range(CALLS // 4):
    embed()
# An alias whose first target is down: failover to the second.
for _ in range(5):
    chat("down-first")
    stream("down-first")
print(f"ok: {CALLS} chats, {CALLS // 2} streams, {CALLS // 4} embeddings through faults "
      f"(most attempts for one call: {max_attempts_seen})")
