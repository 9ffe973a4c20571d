"""The official Anthropic Python SDK against a breakwater gateway.

Run by tests/sdk.rs with GATEWAY_URL and GATEWAY_KEY. The SDK's own retries
are off (max_retries=0): every success here is the gateway's.
"""

import os

import anthropic
from anthropic import Anthropic

BASE = os.environ["GATEWAY_URL"]
KEY = os.environ["GATEWAY_KEY"]
CALLS = int(os.environ.get("RESILIENCE_CALLS", "20"))

client = Anthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=30)
MSG = [{"role": "user", "content": "Say hello."}]


def message(model="claude"):
    m = client.messages.create(model=model, max_tokens=16, messages=MSG)
    assert m.type == "message" and m.role == "assistant", m
    assert m.content and m.content[0].type == "text" and m.content[0].text, m
    assert m.stop_reason in ("end_turn", "max_tokens"), m
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage
    return m


def stream(model="claude"):
    with client.messages.stream(model=model, max_tokens=16, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text, "the stream carried text"
    assert final.content[0].text == text, (final, text)
    assert final.stop_reason in ("end_turn", "max_tokens"), final
    assert final.usage.output_tokens > 0, final.usage
    return text


def expect(cls, fn, status):
    try:
        fn()
    except cls as e:
        assert e.status_code == status, (e.status_code, e)
        assert isinstance(e.body, dict) and e.body.get("type") == "error", e.body
        return e
    raise AssertionError(f"expected {cls.__name__}")


message()
stream()
print("ok: messages, stream")

bad = Anthropic(base_url=BASE, api_key="sk-ant-not-a-real-key", max_retries=0, timeout=30)
expect(anthropic.AuthenticationError, lambda: bad.messages.create(model="claude", max_tokens=8, messages=MSG), 401)
expect(anthropic.NotFoundError, lambda: client.messages.create(model="no-such-model", max_tokens=8, messages=MSG), 404)
expect(
    anthropic.BadRequestError,
    lambda: client.messages.create(model="claude", max_tokens=8, messages=[{"role": "user"}]),
    400,
)
print("ok: error classes")

# Resilience: the primary answers 5xx/529 to 30% of calls.
for _ in range(CALLS):
    message()
for _ in range(CALLS // 2):
    stream()
for _ in range(5):
    message("claude-down-first")
    stream("claude-down-first")
print(f"ok: {CALLS} messages and {CALLS // 2} streams through faults")
