#!/usr/bin/env python3
"""End-to-end tests of `swiftlet serve` on the real SmolLM2 with the official `openai` client.

Starts the server binary (several times, with different flags), talks to it over loopback
only, and prints one line per test and a closing 'N passed, M failed' line; exits 1 on any
failure. Run directly or through the Swift test ServerTests.OpenAIClientTests:

    python3 scripts/test_server_openai.py --bin .build/release/swiftlet [--model smollm2] [-k NAME]
"""
import argparse
import atexit
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

try:
    import jsonschema
    import openai
except ImportError as e:  # a missing dependency is a failure, not a skip
    print(f"FAIL: cannot import {e.name}: pip install openai jsonschema")
    print("0 passed, 1 failed")
    sys.exit(1)

ARGS = None
TESTS = []


def test(server="main", only_models=None, why=""):
    """Registers a test for `server`; `only_models`: the --model names it holds for (others
    report it as skipped, with `why`)."""
    def register(fn):
        TESTS.append((fn.__name__, server, fn))
        if only_models:
            ONLY_MODELS[fn.__name__] = (only_models, why)
        return fn
    return register


ONLY_MODELS = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the servers' logs (read back when a check fails), removed when the script exits
LOG_DIR = tempfile.mkdtemp(prefix="swiftlet-serve-")
atexit.register(shutil.rmtree, LOG_DIR, ignore_errors=True)


class Server:
    """A `swiftlet serve` process on a free loopback port."""

    def __init__(self, *flags):
        self.port = free_port()
        self.flags = list(flags)
        self.log_path = os.path.join(LOG_DIR, f"serve-{self.port}.log")

    def start(self):
        self.log = open(self.log_path, "w")
        cmd = [ARGS.bin, "serve", ARGS.model, "--port", str(self.port)] + self.flags
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                status, _, _ = self.request("GET", "/ready")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready: " + self.tail())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, key="none", **kw):
        return openai.OpenAI(base_url=self.base, api_key=key, max_retries=0, timeout=120, **kw)

    def request(self, method, path, body=None, headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            h = {"Content-Type": "application/json"} if data is not None else {}
            h.update(headers or {})
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def metrics(self):
        status, _, body = self.request("GET", "/metrics")
        assert status == 200, status
        values = {}
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
        return values

    def wait_idle(self, timeout=20):
        """Waits until no sequence runs or waits and every KV block is free; returns the metrics."""
        deadline = time.time() + timeout
        m = {}
        while time.time() < deadline:
            m = self.metrics()
            if (m.get("swiftlet_running_sequences") == 0 and m.get("swiftlet_waiting_sequences") == 0
                    and m.get("swiftlet_kv_blocks_used") == 0
                    and m.get("swiftlet_kv_blocks_free") == m.get("swiftlet_kv_blocks_total")):
                return m
            time.sleep(0.05)
        raise AssertionError("the server did not return to idle with a free KV pool: " +
                             json.dumps({k: v for k, v in m.items() if "kv_blocks" in k or "sequences" in k}))


def model_id(server):
    return server.client().models.list().data[0].id


def stream_raw(server, path, body, chunks_before_close=None, headers=None):
    """POSTs a streaming request over a raw socket; closes after `chunks_before_close` SSE events
    (None: read to the end). Returns the data lines read."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    lines = []
    if r.status != 200:
        r.read()
        conn.close()
        return r.status, lines
    while chunks_before_close is None or len(lines) < chunks_before_close:
        line = r.readline()
        if not line:
            break
        line = line.decode().strip()
        if line.startswith("data: "):
            lines.append(line[6:])
            if line == "data: [DONE]":
                break
    # An abrupt close: shut the socket down without reading the rest.
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    return 200, lines


# ---------------------------------------------------------------------------------------------
# The main server: --parallel 8.

@test()
def models_and_health(s):
    models = s.client().models.list()
    assert len(models.data) == 1 and models.data[0].object == "model", models
    status, _, body = s.request("GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


@test()
def chat_completion(s):
    r = s.client().chat.completions.create(
        model=model_id(s), messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip(), c
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 24 and u.total_tokens == u.prompt_tokens + u.completion_tokens


@test()
def text_completion(s):
    r = s.client().completions.create(model=model_id(s), prompt="The capital of France is", max_tokens=8,
                                      temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text and r.choices[0].finish_reason == "length", r
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0


@test()
def max_tokens_and_stop(s):
    client, m = s.client(), model_id(s)
    r = client.completions.create(model=m, prompt="1, 2, 3, 4,", max_tokens=1, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 1
    r = client.completions.create(model=m, prompt="1, 2, 3, 4,", max_tokens=30, temperature=0, stop=[" 7"])
    assert r.choices[0].finish_reason == "stop", r
    assert " 7" not in r.choices[0].text and "6" in r.choices[0].text, r.choices[0].text
    r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": "Say hi."}],
                                       max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3


@test()
def streaming_chat_matches_non_streaming(s):
    client, m = s.client(), model_id(s)
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    full = client.chat.completions.create(model=m, messages=msgs, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(model=m, messages=msgs, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, roles, finishes, usage, n = "", [], [], None, 0
    for chunk in stream:
        n += 1
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        text += d.content or ""
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
    assert roles == ["assistant"], roles
    assert text == full.choices[0].message.content, (text, full.choices[0].message.content)
    assert finishes == [full.choices[0].finish_reason]
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert n > 3


@test()
def streaming_completion(s):
    stream = s.client().completions.create(model=model_id(s), prompt="Once upon a time", max_tokens=12,
                                           temperature=0, stream=True)
    parts = [c.choices[0].text for c in stream if c.choices]
    full = s.client().completions.create(model=model_id(s), prompt="Once upon a time", max_tokens=12, temperature=0)
    assert "".join(parts) == full.choices[0].text


@test()
def json_schema_output(s):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        },
        "required": ["name", "age", "hobbies"],
        "additionalProperties": False,
    }
    r = s.client().chat.completions.create(
        model=model_id(s), max_tokens=200, temperature=0,
        messages=[{"role": "user", "content": "Describe a fictional person as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(r.choices[0].message.content)
    jsonschema.validate(data, schema)
    assert r.choices[0].finish_reason == "stop"
    r = s.client().chat.completions.create(
        model=model_id(s), max_tokens=200, temperature=0.7, seed=3,
        messages=[{"role": "user", "content": 'Reply with a JSON object with one key, "answer", whose value is the sum of 2 and 3.'}],
        response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop", r
    assert isinstance(json.loads(r.choices[0].message.content), dict)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"]}}}
ROUTE_TOOL = {"type": "function", "function": {
    "name": "plan_route", "description": "A route between two places",
    "parameters": {"type": "object", "properties": {"origin": {"type": "string", "maxLength": 20},
                                                    "stops": {"type": "integer", "minimum": 0},
                                                    "by": {"enum": ["car", "train"]}},
                   "required": ["origin", "stops", "by"], "additionalProperties": False}}}
TOOLS_BY_NAME = {t["function"]["name"]: t for t in (WEATHER_TOOL, TIME_TOOL, ROUTE_TOOL)}


def streamed_calls(stream):
    """The calls of a streamed reply: {index: {id, name, arguments, pieces}}, the content and the
    finish reasons; checks the id and name come once, in a call's first delta."""
    calls, finish, content = {}, [], ""
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            if c.finish_reason:
                finish.append(c.finish_reason)
            for d in c.delta.tool_calls or []:
                entry = calls.get(d.index)
                if entry is None:
                    assert d.id and d.type == "function" and d.function.name, ("the first delta names the call", d)
                    entry = calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": "", "pieces": 0}
                else:
                    assert d.id is None and d.function.name is None, ("id and name come once", d)
                if d.function.arguments:
                    entry["arguments"] += d.function.arguments
                    entry["pieces"] += 1
    return calls, content, finish


@test()
def tool_calls(s):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = s.client().chat.completions.create(
        model=model_id(s), max_tokens=200, temperature=0, messages=question, tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", r
    assert choice.message.content is None, r
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather", r
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])

    # the call and its result go back through the chat template
    history = question + [choice.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": "21 degrees, sunny"}]
    r = s.client().chat.completions.create(model=model_id(s), max_tokens=16, temperature=0, messages=history,
                                           tools=[WEATHER_TOOL], tool_choice="none")
    assert r.choices[0].message.tool_calls is None and isinstance(r.choices[0].message.content, str), r

    # several functions with different parameters: the arguments follow the chosen function's
    tools = [WEATHER_TOOL, TIME_TOOL, ROUTE_TOOL]
    for ask in ["What is the weather in Paris?", "Plan a route from Lyon by train.", "What time is it in Tokyo?"]:
        r = s.client().chat.completions.create(
            model=model_id(s), max_tokens=200, temperature=0, messages=[{"role": "user", "content": ask}], tools=tools,
            tool_choice="required", parallel_tool_calls=False)
        call = r.choices[0].message.tool_calls[0]
        assert r.choices[0].finish_reason == "tool_calls" and call.function.name in TOOLS_BY_NAME, r
        jsonschema.validate(json.loads(call.function.arguments), TOOLS_BY_NAME[call.function.name]["function"]["parameters"])
    for name in TOOLS_BY_NAME:
        r = s.client().chat.completions.create(
            model=model_id(s), max_tokens=200, temperature=0, messages=question, tools=tools,
            tool_choice={"type": "function", "function": {"name": name}})
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == name, r
        jsonschema.validate(json.loads(call.function.arguments), TOOLS_BY_NAME[name]["function"]["parameters"])

    # streamed: id and name once per call, then the arguments piece by piece as they are
    # generated, joining to the non-streamed arguments; no content; finish_reason tool_calls
    ask = dict(model=model_id(s), max_tokens=200, temperature=0, messages=question, tools=tools,
               tool_choice="required", parallel_tool_calls=False)
    whole = s.client().chat.completions.create(**ask).choices[0].message.tool_calls[0]
    calls, content, finish = streamed_calls(s.client().chat.completions.create(**ask, stream=True))
    assert content == "" and finish == ["tool_calls"], (content, finish)
    assert sorted(calls) == [0], calls
    entry = calls[0]
    assert entry["id"].startswith("call_") and entry["name"] == whole.function.name, (entry, whole)
    assert entry["arguments"] == whole.function.arguments, (entry, whole)
    assert entry["pieces"] > 1, ("the arguments come in pieces as they are generated", entry)
    jsonschema.validate(json.loads(entry["arguments"]), TOOLS_BY_NAME[entry["name"]]["function"]["parameters"])

    try:
        s.client().chat.completions.create(model=model_id(s), messages=question, tools=[WEATHER_TOOL],
                                           tool_choice={"type": "function", "function": {"name": "launch"}})
        raise AssertionError("an unknown function in tool_choice was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "launch" in str(e) and "tool_choice" in str(e), e


@test()
def n_choices(s):
    r = s.client().chat.completions.create(
        model=model_id(s), messages=[{"role": "user", "content": "Tell me a short story."}], n=2, max_tokens=16,
        temperature=1.0, seed=11)
    assert [c.index for c in r.choices] == [0, 1], r.choices
    assert all(c.message.content for c in r.choices)
    assert r.choices[0].message.content != r.choices[1].message.content
    assert 2 <= r.usage.completion_tokens <= 32, r.usage
    # Same seed, same choices.
    again = s.client().chat.completions.create(
        model=model_id(s), messages=[{"role": "user", "content": "Tell me a short story."}], n=2, max_tokens=16,
        temperature=1.0, seed=11)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    # n with streaming: both indices arrive.
    seen = set()
    for chunk in s.client().completions.create(model=model_id(s), prompt="Hello", n=2, max_tokens=4, stream=True,
                                               temperature=1.0, seed=5):
        for c in chunk.choices:
            seen.add(c.index)
    assert seen == {0, 1}


@test()
def logprobs(s):
    r = s.client().chat.completions.create(
        model=model_id(s), messages=[{"role": "user", "content": "Count to five."}], max_tokens=8, temperature=0,
        logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-5, entry
        assert entry.bytes is not None
    assert "".join(e.token for e in content) == r.choices[0].message.content
    r = s.client().completions.create(model=model_id(s), prompt="The sky is", max_tokens=5, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 5 and len(lp.token_logprobs) == 5 and len(lp.top_logprobs) == 5
    assert all(len(t) == 2 for t in lp.top_logprobs) and lp.text_offset[0] == 0
    # Without logprobs the field is null.
    r = s.client().completions.create(model=model_id(s), prompt="The sky is", max_tokens=2, temperature=0)
    assert r.choices[0].logprobs is None


@test()
def sampling_parameters_are_accepted(s):
    r = s.client().chat.completions.create(
        model=model_id(s), messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0.8, top_p=0.9,
        seed=1, presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"28": -100},
        extra_body={"top_k": 20, "min_p": 0.05})
    assert r.choices[0].message.content is not None
    # logit_bias can force a token: three times the same one.
    r = s.client().completions.create(model=model_id(s), prompt="Hello", max_tokens=3, temperature=0,
                                      logit_bias={"42": 100}, logprobs=0)
    tokens = r.choices[0].logprobs.tokens
    assert len(tokens) == 3 and len(set(tokens)) == 1, tokens


@test(only_models=("smollm2",), why="K-quant prompts batched with others take llama.cpp's single-row rounding (README)")
def batching_equals_solo(s):
    client, m = s.client(), model_id(s)
    prompts = ["The capital of France is", "Once upon a time", "def add(a, b):", "The largest planet is",
               "Roses are red,", "To make tea, first", "The speed of light is", "My name is"]
    solo = [client.completions.create(model=m, prompt=p, max_tokens=24, temperature=0).choices[0].text
            for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(
            lambda p: client.completions.create(model=m, prompt=p, max_tokens=24, temperature=0).choices[0].text,
            prompts))
    for p, a, b in zip(prompts, solo, together):
        assert a == b, f"{p!r}: solo {a!r} != batched {b!r}"


@test()
def prefix_cache_hit_lowers_ttft(s):
    client, m = s.client(), model_id(s)
    nonce = random.randint(0, 10**9)
    system = f"Session {nonce}. " + " ".join(
        f"Rule {i}: always answer politely, briefly and truthfully, citing no sources." for i in range(25))

    def ttft(user):
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model=m, stream=True, max_tokens=4, temperature=0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        return first

    before = s.metrics().get("swiftlet_prefix_cache_hit_tokens", 0)
    cold = ttft("What is two plus two?")
    after_cold = s.metrics().get("swiftlet_prefix_cache_hit_tokens", 0)
    warm = ttft("What colour is the sky?")
    after_warm = s.metrics()
    hits = after_warm.get("swiftlet_prefix_cache_hit_tokens", 0) - after_cold
    assert after_cold - before < 100, "the first request should miss"
    assert hits > 300, f"the second request should hit the cached system prompt ({hits} tokens)"
    assert after_warm["swiftlet_prefix_cache_hit_rate"] > 0
    assert warm < cold, f"TTFT with a cache hit {warm:.3f}s is not below the cold {cold:.3f}s"
    print(f"    cold TTFT {cold * 1000:.0f} ms, warm TTFT {warm * 1000:.0f} ms, {hits:.0f} tokens from the cache")


@test()
def embeddings(s):
    """/v1/embeddings: the vectors `swiftlet embed` prints (mean pooling, L2-normalized), in
    float and base64, for strings and token ids; similar texts closer than unrelated ones."""
    import base64
    import struct
    c = s.client()
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Quarterly revenue grew by eight percent."]
    r = c.embeddings.create(model=model_id(s), input=texts)
    assert [d.index for d in r.data] == [0, 1, 2] and r.object == "list"
    vecs = [d.embedding for d in r.data]
    cli = subprocess.run([ARGS.bin, "embed", ARGS.model, texts[0]], capture_output=True, text=True, check=True)
    expected = json.loads(cli.stdout.splitlines()[0])
    width = len(expected)
    assert width in (576, 640) and all(len(v) == width for v in vecs), [len(v) for v in vecs]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vecs)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]), (dot(vecs[0], vecs[1]), dot(vecs[0], vecs[2]))
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    # K-quant rows batched with others round as llama.cpp's single rows do (README)
    bound = 0.99999 if ARGS.model == "smollm2" else 0.999
    assert dot(expected, vecs[0]) > bound, dot(expected, vecs[0])
    # base64: the same float32 values, little-endian
    status, _, body = s.request("POST", "/v1/embeddings", {"model": model_id(s), "input": texts[0], "encoding_format": "base64"})
    assert status == 200, body
    raw = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == width and dot(decoded, vecs[0]) > bound, dot(decoded, vecs[0])
    # token ids embed as their text does
    tok = subprocess.run([ARGS.bin, "tokenize", ARGS.model, texts[0], "--ids", "--parse-special"],
                         capture_output=True, text=True, check=True)
    by_ids = c.embeddings.create(model=model_id(s), input=[json.loads(tok.stdout)]).data[0].embedding
    assert dot(by_ids, vecs[0]) > bound, dot(by_ids, vecs[0])


@test()
def embedding_errors(s):
    def post(body):
        status, _, text = s.request("POST", "/v1/embeddings", body)
        return status, json.loads(text)
    width = len(s.client().embeddings.create(model=model_id(s), input="hi").data[0].embedding)
    status, body = post({"model": model_id(s), "input": "hi", "dimensions": width // 2})
    assert status == 400 and body["error"]["param"] == "dimensions" and str(width) in body["error"]["message"], body
    status, body = post({"model": model_id(s), "input": []})
    assert status == 400 and body["error"]["param"] == "input", body
    status, body = post({"model": model_id(s), "input": "word " * 3000})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    status, body = post({"model": model_id(s), "input": "hi", "encoding_format": "int8"})
    assert status == 400 and body["error"]["param"] == "encoding_format", body
    status, body = post({"model": "no-such-model", "input": "hi"})
    assert status == 404 and body["error"]["code"] == "model_not_found", body
    status, body = post({"model": model_id(s)})
    assert status == 400 and body["error"]["param"] == "input", body


@test()
def bad_requests(s):
    m = model_id(s)
    client = s.client()
    # Prompt longer than the context (--ctx 2048).
    try:
        client.completions.create(model=m, prompt="hello " * 3000, max_tokens=4)
        raise AssertionError("expected 400")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "context" in str(e), e
    # Unknown model.
    try:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("expected 404")
    except openai.NotFoundError as e:
        assert "gpt-17" in str(e)
    # Malformed JSON, wrong types, missing fields: 400 naming the field.
    status, _, body = s.request("POST", "/v1/chat/completions", b'{"model": "x", "messages": [')
    assert status == 400 and "JSON" in json.loads(body)["error"]["message"], body
    cases = [
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}, "max_tokens"),
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "n": 1000}, "n"),
        ({"model": m, "messages": "hi"}, "messages"),
        ({"model": m, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": m, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "stop": 3}, "stop"),
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}}, "logit_bias"),
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}},
         "response_format.type"),
        ({"model": m, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, "top_logprobs"),
    ]
    for body_obj, param in cases:
        status, _, body = s.request("POST", "/v1/chat/completions", body_obj)
        err = json.loads(body)["error"]
        assert status == 400 and err["param"] == param and param in err["message"], (param, status, body)
    status, _, body = s.request("POST", "/v1/completions", {"model": m, "prompt": [1, 2, 99999999]})
    assert status == 400 and json.loads(body)["error"]["param"] == "prompt", body
    # Body over --max-body, unknown route, wrong method: clean errors.
    status, _, _ = s.request("POST", "/v1/completions", b'{"prompt": "' + b"a" * (300 << 10) + b'"}')
    assert status == 413, status
    status, _, _ = s.request("GET", "/v1/nothing")
    assert status == 404
    # Garbage bytes and deep nesting do not take the server down.
    s.request("POST", "/v1/chat/completions", bytes(range(256)))
    s.request("POST", "/v1/chat/completions", b"[" * 100000)
    status, _, _ = s.request("GET", "/health")
    assert status == 200


@test()
def disconnect_mid_stream_frees_blocks(s):
    m = model_id(s)
    status, lines = stream_raw(s, "/v1/chat/completions",
                               {"model": m, "stream": True, "max_tokens": 1500,
                                "messages": [{"role": "user", "content": "Write a very long story."}]},
                               chunks_before_close=3)
    assert status == 200 and len(lines) == 3
    start = time.time()
    s.wait_idle(timeout=10)
    print(f"    blocks free {1000 * (time.time() - start):.0f} ms after the disconnect")
    # A non-streaming request whose client hangs up is cancelled too.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                 body=json.dumps({"model": m, "prompt": "Once upon a time", "max_tokens": 1500,
                                  "temperature": 0.9, "seed": 1}).encode())
    time.sleep(1.0)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    start = time.time()
    s.wait_idle(timeout=10)
    print(f"    non-streaming: blocks free {1000 * (time.time() - start):.0f} ms after the disconnect")


@test()
def random_disconnects_leave_the_pool_free(s):
    m = model_id(s)
    rng = random.Random(1234)
    plan = [(rng.random(), rng.randint(4, 24), rng.choice([0, 1, 2, 3, 5, 8, None]), rng.randint(0, 3))
            for _ in range(200)]
    system = "You are a helpful assistant. " * rng.randint(1, 3)

    def one(item):
        kind, max_tokens, close_after, variant = item
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": ["Hello", "Tell me a joke", "Count to ten", "Name a colour"][variant]}]
        if kind < 0.8:
            status, _ = stream_raw(s, "/v1/chat/completions",
                                   {"model": m, "stream": True, "max_tokens": max_tokens, "messages": msgs,
                                    "temperature": 0.7},
                                   chunks_before_close=close_after)
        else:
            status, _, _ = s.request("POST", "/v1/chat/completions",
                                     {"model": m, "max_tokens": max_tokens, "messages": msgs})
        return status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, plan))
    assert all(st in (200, 429) for st in statuses), statuses
    m_after = s.wait_idle(timeout=30)
    print(f"    {statuses.count(200)} served, {statuses.count(429)} turned away; "
          f"{m_after['swiftlet_kv_blocks_free']:.0f}/{m_after['swiftlet_kv_blocks_total']:.0f} blocks free")


@test()
def metrics_exposition(s):
    status, headers, body = s.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers.get("Content-Type", "").startswith("text/plain")
    for name in ["swiftlet_requests_total", "swiftlet_prompt_tokens_total", "swiftlet_generation_tokens_total",
                 "swiftlet_time_to_first_token_seconds_bucket", "swiftlet_inter_token_latency_seconds_bucket",
                 "swiftlet_running_sequences", "swiftlet_waiting_sequences", "swiftlet_kv_blocks_used",
                 "swiftlet_kv_blocks_free", "swiftlet_prefix_cache_hit_rate"]:
        assert name in text, name
    assert re.search(r'swiftlet_requests_total\{.*endpoint="/v1/chat/completions".*\} [1-9]', text)


# ---------------------------------------------------------------------------------------------
# A second server: API key, one running sequence, one queue slot.

@test(server="limited")
def api_key_required(s):
    try:
        s.client(key="wrong").models.list()
        raise AssertionError("expected 401")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    status, _, _ = s.request("GET", "/v1/models")
    assert status == 401
    status, _, _ = s.request("POST", "/v1/chat/completions", {"model": "x", "messages": []})
    assert status == 401
    assert len(s.client(key="sekret").models.list().data) == 1
    status, _, _ = s.request("GET", "/health")
    assert status == 200, "health needs no key"


@test(server="limited")
def queue_full_gets_429(s):
    m = s.client(key="sekret").models.list().data[0].id
    auth = {"Authorization": "Bearer sekret"}
    body = {"model": m, "max_tokens": 60, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long poem."}]}
    results = []

    def call(_):
        status, headers, _ = s.request("POST", "/v1/chat/completions", body, headers=auth)
        results.append((status, headers.get("Retry-After")))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(call, range(6)))
    statuses = sorted(st for st, _ in results)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    assert all(ra is not None and int(ra) >= 1 for st, ra in results if st == 429), results
    s.wait_idle()


@test(server="limited")
def graceful_shutdown_finishes_in_flight(s):
    m = s.client(key="sekret").models.list().data[0].id
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    conn.request("POST", "/v1/completions",
                 body=json.dumps({"model": m, "prompt": "Once upon a time", "max_tokens": 40, "stream": True,
                                  "temperature": 0}).encode(),
                 headers={"Content-Type": "application/json", "Authorization": "Bearer sekret"})
    r = conn.getresponse()
    assert r.status == 200
    first = r.readline()
    assert first.startswith(b"data: "), first
    s.proc.send_signal(signal.SIGTERM)
    rest = r.read().decode()
    assert rest.rstrip().endswith("data: [DONE]"), rest[-200:]
    assert '"finish_reason":"length"' in rest
    code = s.proc.wait(timeout=30)
    assert code == 0, f"exit code {code}: {s.tail()}"


# a second name for the cached SmolLM2 file, served from --models-dir by the "multi" server
MODELS_DIR = tempfile.mkdtemp(prefix="swiftlet-models-")
atexit.register(shutil.rmtree, MODELS_DIR, ignore_errors=True)
SWIFTLET_HOME = os.environ.get("SWIFTLET_HOME") or os.path.expanduser("~/.cache/swiftlet")
os.symlink(os.path.join(SWIFTLET_HOME, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"), os.path.join(MODELS_DIR, "twin.gguf"))


@test("multi", only_models=("smollm2",), why="serves SmolLM2 beside Gemma 3 by their file names")
def several_models_each_answers_its_own(s):
    """`serve smollm2 gemma3 --models-dir DIR --max-loaded 1 --idle-unload 3`: the request's
    model picks the engine; others load on first use, one at a time, and unload when idle."""
    c = s.client()
    listed = {m.id: m.model_extra["status"]["value"] for m in c.models.list().data}
    first = c.models.list().data[0].id
    assert first.startswith("SmolLM2") and listed[first] == "loaded", listed
    assert listed.get("gemma-3-270m-q4_k_m") == "unloaded" and listed.get("twin") == "unloaded", listed
    # each model answers, under its own name (gemma by its alias on the command line)
    r = c.completions.create(model="gemma3", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.model == "gemma-3-270m-q4_k_m", r.model
    r2 = c.completions.create(model=first, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r2.model == first
    listed = {m.id: m.model_extra["status"]["value"] for m in c.models.list().data}
    assert listed["gemma-3-270m-q4_k_m"] == "loaded", listed
    # --max-loaded 1: the twin takes gemma's place; it is SmolLM2, so it gives SmolLM2's text
    r3 = c.completions.create(model="twin", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r3.model == "twin" and r3.choices[0].text == r2.choices[0].text, (r3, r2)
    listed = {m.id: m.model_extra["status"]["value"] for m in c.models.list().data}
    assert listed["twin"] == "loaded" and listed["gemma-3-270m-q4_k_m"] == "unloaded", listed
    # unknown names, paths included, are 404s naming what is served
    for name in ["no-such-model", "../models/twin", "/etc/passwd", "twin/../twin"]:
        status, _, body = s.request("POST", "/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 1})
        err = json.loads(body)["error"]
        assert status == 404 and err["code"] == "model_not_found" and "twin" in err["message"], (name, status, body)
    # idle for longer than --idle-unload: unloaded again
    deadline = time.time() + 15
    while time.time() < deadline:
        listed = {m.id: m.model_extra["status"]["value"] for m in c.models.list().data}
        if listed["twin"] == "unloaded":
            break
        time.sleep(0.5)
    assert listed["twin"] == "unloaded", listed


# ChatML whose generation prompt opens a thinking block, as Qwen3's and DeepSeek-R1's do
THINK_TEMPLATE = os.path.join(MODELS_DIR, "think.jinja")
with open(THINK_TEMPLATE, "w") as f:
    f.write("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")


@test("reasoning", only_models=("smollm2",), why="its word bound and template assume SmolLM2's tokens")
def reasoning_is_split_from_content(s):
    """--reasoning-budget 8 on a template that opens <think>: the reply's first 8 tokens are
    reasoning_content, the server closes the block, the answer is content; streaming sends the
    same text as reasoning_content deltas, then content deltas; reasoning_format none keeps it all
    in content."""
    c = s.client()
    messages = [{"role": "user", "content": "What is 17 times 3?"}]
    r = c.chat.completions.create(model=model_id(s), messages=messages, max_tokens=40, temperature=0)
    msg = r.choices[0].message
    reasoning = msg.model_extra.get("reasoning_content")
    assert reasoning and msg.content, msg
    assert "<think>" not in msg.content and "</think>" not in msg.content and "</think>" not in reasoning, msg
    assert len(reasoning.split()) <= 8, reasoning
    stream = c.chat.completions.create(model=model_id(s), messages=messages, max_tokens=40, temperature=0, stream=True)
    parts, order = {"reasoning_content": "", "content": ""}, []
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for key in parts:
            piece = getattr(delta, key, None) if key == "content" else (delta.model_extra or {}).get(key)
            if piece:
                parts[key] += piece
                if not order or order[-1] != key:
                    order.append(key)
    assert parts["reasoning_content"] == reasoning and parts["content"] == msg.content, (parts, reasoning, msg.content)
    assert order == ["reasoning_content", "content"], order
    raw = c.chat.completions.create(model=model_id(s), messages=messages, max_tokens=40, temperature=0,
                                    extra_body={"reasoning_format": "none"})
    text = raw.choices[0].message.content
    assert "</think>" in text and "reasoning_content" not in (raw.choices[0].message.model_extra or {}), raw
    status, _, body = s.request("POST", "/v1/chat/completions", {"model": model_id(s), "messages": messages,
                                                                  "reasoning_format": "sometimes"})
    assert status == 400 and json.loads(body)["error"]["param"] == "reasoning_format", body


SERVERS = {
    "main": ["--parallel", "8", "--ctx", "2048", "--max-body", str(256 << 10)],
    "limited": ["--parallel", "1", "--queue", "1", "--api-key", "sekret", "--ctx", "512"],
    "reasoning": ["--chat-template-file", THINK_TEMPLATE, "--reasoning-budget", "8"],
    "multi": ["gemma3", "--models-dir", MODELS_DIR, "--max-loaded", "1", "--idle-unload", "3", "--ctx", "512"],
}


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=".build/release/swiftlet")
    p.add_argument("--model", default="smollm2")
    p.add_argument("-k", dest="only", default=None, help="run only tests whose name contains this")
    ARGS = p.parse_args()
    passed = failed = 0
    for server_name, flags in SERVERS.items():
        tests = [t for t in TESTS if t[1] == server_name and (ARGS.only is None or ARGS.only in t[0])]
        for name, _, _ in tests:
            if name in ONLY_MODELS and ARGS.model not in ONLY_MODELS[name][0]:
                print(f"SKIP {name} on {ARGS.model}: {ONLY_MODELS[name][1]}")
        tests = [t for t in tests if t[0] not in ONLY_MODELS or ARGS.model in ONLY_MODELS[t[0]][0]]
        if not tests:
            continue
        server = Server(*flags)
        try:
            server.start()
        except Exception as e:
            print(f"FAIL: starting the '{server_name}' server: {e}")
            failed += len(tests)
            continue
        for name, _, fn in tests:
            start = time.time()
            try:
                fn(server)
                passed += 1
                print(f"PASS {name} ({time.time() - start:.1f}s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name} ({time.time() - start:.1f}s)\n{traceback.format_exc()}", flush=True)
                if server.proc.poll() is not None:
                    print("server died:\n" + server.tail())
                    break
        code = server.stop()
        if code not in (0, None) and server_name != "limited":
            print(f"FAIL: the '{server_name}' server exited with {code}\n{server.tail()}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
