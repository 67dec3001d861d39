"""The official `openai` Python SDK against the running chat-proxy binary (scripts/sdk-tests.sh
starts it). MAIN_URL is an instance on the demo model; EDGE_URL one on tests/sdk/edge_upstream.py
with one permit and a queue of one; both want API_KEY.

    python test_openai_sdk.py      runs every test_* function; exits 1 if any failed
"""

import asyncio
import json
import os
import sys
import time
import traceback
import urllib.request
import uuid

import openai

MAIN_URL = os.environ["MAIN_URL"]
EDGE_URL = os.environ["EDGE_URL"]
EDGE_UPSTREAM = os.environ["EDGE_UPSTREAM"]
API_KEY = os.environ["API_KEY"]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
    },
}]


def client(url=MAIN_URL, key=API_KEY):
    # No retries: a refusal must surface as the SDK's typed exception at once.
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def ask(text):
    return [{"role": "user", "content": text}]


def get_json(url):
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def eventually(what, check, timeout=15):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: still {last!r} after {timeout} s")


def test_models_list_and_retrieve():
    models = client().models.list()
    ids = [m.id for m in models.data]
    assert ids == ["demo"], ids
    assert client().models.retrieve("demo").owned_by == "chat-proxy"


def test_non_streamed_completion_has_usage():
    reply = client().chat.completions.create(model="demo", messages=ask("py-plain"))
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-"), reply.id
    assert "py-plain" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens > 0


def test_streamed_completion_with_include_usage():
    stream = client().chat.completions.create(
        model="demo", messages=ask("py-stream"), stream=True,
        stream_options={"include_usage": True}, temperature=0.2, max_tokens=100,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "py-stream" in text, text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"], finish
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_client_tool_round_trip():
    messages = ask("please call get_weather for Paris")
    first = client().chat.completions.create(model="demo", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["question"] == messages[0]["content"]
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    second = client().chat.completions.create(model="demo", messages=messages, tools=TOOLS)
    assert "sunny, 21 C" in second.choices[0].message.content
    assert second.choices[0].finish_reason == "stop"

    # Streamed, the call arrives as `tool_calls` deltas.
    stream = client().chat.completions.create(
        model="demo", messages=ask("call get_weather in Rome"), tools=TOOLS, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    names = [t.function.name for d in deltas for t in (d.tool_calls or []) if t.function.name]
    assert names == ["get_weather"], names


def test_typed_errors():
    try:
        client(key="not-a-valid-key").chat.completions.create(model="demo", messages=ask("x"))
        raise AssertionError("no error")
    except openai.AuthenticationError as err:
        assert err.status_code == 401
    try:
        client().chat.completions.create(model="gpt-nonexistent", messages=ask("x"))
        raise AssertionError("no error")
    except openai.NotFoundError as err:
        assert err.code == "model_not_found", err.code
    try:
        client().chat.completions.create(model="demo", messages=ask("x"), n=2)
        raise AssertionError("no error")
    except openai.BadRequestError as err:
        assert err.param == "n", err.param
    try:
        client().chat.completions.create(
            model="demo", messages=ask("x"),
            tools=[{"type": "function", "function": {"name": "ocr_image"}}])
        raise AssertionError("no error")
    except openai.BadRequestError as err:
        assert "ocr_image" in err.message


def test_an_error_mid_stream_raises_api_error():
    stream = client(EDGE_URL).chat.completions.create(
        model="edge", messages=ask("cut please"), stream=True)
    text = ""
    try:
        for chunk in stream:
            if chunk.choices:
                assert chunk.choices[0].finish_reason is None, "a failed answer never finishes"
                text += chunk.choices[0].delta.content or ""
        raise AssertionError("no error")
    except openai.APIError as err:
        assert "upstream_cut" in str(err.body) or "closed the stream" in err.message, err
    assert text == "piece0 piece1 ", text


def test_a_full_queue_raises_rate_limit_error_and_an_early_close_frees_the_permit():
    edge = client(EDGE_URL)
    before = get_json(f"{EDGE_UPSTREAM}/stats")["aborted"]
    holder = edge.chat.completions.create(model="edge", messages=ask("hold"), stream=True)
    first = next(iter(holder))
    assert first.choices[0].delta.content == "piece0 "
    waiting = edge.chat.completions.create(model="edge", messages=ask("wait"), stream=True)
    eventually("one waiting", lambda: (
        get_json(f"{EDGE_URL}/health")["upstream"]["queue_length"] == 1,
        get_json(f"{EDGE_URL}/health")["upstream"]))
    try:
        edge.chat.completions.create(model="edge", messages=ask("one too many"))
        raise AssertionError("no error")
    except openai.RateLimitError as err:
        assert err.response.headers.get("retry-after"), err.response.headers
    waiting.close()
    holder.close()
    stats = eventually("the upstream streams aborted", lambda: (
        (s := get_json(f"{EDGE_UPSTREAM}/stats"))["in_flight"] == 0 and s["aborted"] > before, s))
    assert stats["in_flight"] == 0
    eventually("the permit back", lambda: (
        get_json(f"{EDGE_URL}/health")["upstream"]["permits_in_use"] == 0,
        get_json(f"{EDGE_URL}/health")["upstream"]))


def test_200_concurrent_streams_never_cross():
    async def one(sdk, nonce):
        stream = await sdk.chat.completions.create(
            model="demo", messages=ask(nonce), stream=True)
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return nonce, text

    async def run():
        sdk = openai.AsyncOpenAI(base_url=f"{MAIN_URL}/v1", api_key=API_KEY,
                                 max_retries=0, timeout=120)
        nonces = [f"nonce-{uuid.uuid4().hex}" for _ in range(200)]
        results = await asyncio.gather(*(one(sdk, n) for n in nonces))
        await sdk.close()
        return nonces, results

    nonces, results = asyncio.run(run())
    for nonce, text in results:
        assert nonce in text, (nonce, text)
        others = [n for n in nonces if n != nonce and n in text]
        assert not others, f"{nonce} saw {others}"


def main():
    tests = [(name, f) for name, f in sorted(globals().items()) if name.startswith("test_")]
    failed = 0
    for name, test in tests:
        started = time.monotonic()
        try:
            test()
            print(f"ok   {name} ({time.monotonic() - started:.1f} s)")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"python openai {openai.__version__}: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
