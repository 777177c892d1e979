#!/usr/bin/env python3
"""End-to-end tests of `swiftlet serve` on the real SmolLM2 through the Anthropic Messages API
(official `anthropic` client) and the Responses API (official `openai` client).

Starts the server binary (twice: open, and with an API key), talks to it over loopback only,
and prints one line per test and a closing 'N passed, M failed' line; exits 1 on any failure.
Run directly or through the Swift test ServerTests.AgentAPIClientTests:

    python3 scripts/test_server_agent_apis.py --bin .build/release/swiftlet [--model smollm2] [-k NAME]
"""
import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import anthropic
    import jsonschema
    import openai
    import test_server_openai as base
except ImportError as e:  # a missing dependency is a failure, not a skip
    print(f"FAIL: cannot import {e.name}: pip install anthropic openai jsonschema")
    print("0 passed, 1 failed")
    sys.exit(1)

TESTS = []


def test(server="main"):
    def register(fn):
        TESTS.append((fn.__name__, server, fn))
        return fn
    return register


def claude(server, key="none"):
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key=key, max_retries=0, timeout=120)


def model_id(server, key="none"):
    return server.client(key=key).models.list().data[0].id


def sse_events(server, path, body, headers=None):
    """POSTs a streaming request; returns the (event name, data) pairs in order."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.read())
    assert r.getheader("Content-Type", "").startswith("text/event-stream")
    events, name = [], None
    for raw in r.read().decode().splitlines():
        if raw.startswith("event: "):
            name = raw[7:]
        elif raw.startswith("data: "):
            events.append((name, json.loads(raw[6:])))
    conn.close()
    return events


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                   "unit": {"enum": ["celsius", "fahrenheit"]}},
                  "required": ["city", "unit"], "additionalProperties": False}
CLAUDE_WEATHER = {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER_SCHEMA}
CLAUDE_TIME = {"name": "get_time", "description": "Current time in a time zone",
               "input_schema": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                                "required": ["zone"]}}
RESPONSES_WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
                     "parameters": WEATHER_SCHEMA, "strict": True}
QUESTION = "What is the weather in Paris?"
# the anthropic client no longer takes sampling parameters as arguments; the API still does
GREEDY = {"temperature": 0}


# ---------------------------------------------------------------------------------------------
# Anthropic Messages

@test()
def messages_create(s):
    m = model_id(s)
    r = claude(s).messages.create(model=m, max_tokens=12, extra_body=GREEDY, system="You are a geography teacher.",
                                  messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_"), r
    assert r.model == m and len(r.content) == 1 and r.content[0].type == "text" and r.content[0].text.strip(), r
    assert r.stop_reason in ("end_turn", "max_tokens") and r.stop_sequence is None, r
    assert r.usage.input_tokens > 10 and 0 < r.usage.output_tokens <= 24, r.usage
    # content blocks and a multi-turn conversation give the same prompt as plain strings
    r2 = claude(s).messages.create(
        model=m, max_tokens=12, extra_body=GREEDY, system=[{"type": "text", "text": "You are a geography teacher."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}])
    assert r2.content[0].text == r.content[0].text and r2.usage.input_tokens == r.usage.input_tokens
    turns = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": r.content[0].text},
             {"role": "user", "content": "And of Italy?"}]
    r3 = claude(s).messages.create(model=m, max_tokens=12, extra_body=GREEDY, messages=turns)
    assert r3.usage.input_tokens > r.usage.input_tokens and r3.content[0].text.strip(), r3


@test()
def messages_max_tokens_and_stop_sequences(s):
    m = model_id(s)
    count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    r = claude(s).messages.create(model=m, max_tokens=3, extra_body=GREEDY, messages=count)
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 3, r
    full = claude(s).messages.create(model=m, max_tokens=16, extra_body=GREEDY, messages=count).content[0].text
    # a stop sequence the greedy reply is known to reach: its second word
    words = full.split()
    assert len(words) >= 2, full
    stop = words[1]
    r = claude(s).messages.create(model=m, max_tokens=16, extra_body=GREEDY, messages=count,
                                  stop_sequences=["never appears", stop])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop, r
    assert r.content[0].text == full[:full.index(stop)], (r.content[0].text, full)


@test()
def messages_streaming(s):
    m = model_id(s)
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    full = claude(s).messages.create(model=m, max_tokens=20, extra_body=GREEDY, messages=msgs)
    with claude(s).messages.stream(model=m, max_tokens=20, extra_body=GREEDY, messages=msgs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == full.content[0].text and final.content[0].text == text, (text, full)
    assert final.stop_reason == full.stop_reason and final.usage.output_tokens == full.usage.output_tokens, final
    assert final.usage.input_tokens == full.usage.input_tokens
    # the raw event sequence
    events = sse_events(s, "/v1/messages", {"model": m, "max_tokens": 20, "temperature": 0, "messages": msgs,
                                            "stream": True})
    names = [n for n, _ in events if n != "ping"]
    assert all(n == d["type"] for n, d in events), events[:3]
    assert names[0] == "message_start" and names[1] == "content_block_start", names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names
    assert set(names[2:-3]) == {"content_block_delta"}, names
    assert events[0][1]["message"]["content"] == [] and events[0][1]["message"]["usage"]["input_tokens"] > 0
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == text


@test()
def messages_tool_use(s):
    m = model_id(s)
    question = [{"role": "user", "content": QUESTION}]
    r = claude(s).messages.create(model=m, max_tokens=200, extra_body=GREEDY, messages=question,
                                  tools=[CLAUDE_WEATHER, CLAUDE_TIME], tool_choice={"type": "tool", "name": "get_weather"})
    assert r.stop_reason == "tool_use", r
    uses = [b for b in r.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id.startswith("toolu_"), r
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)

    # the tool_use and its tool_result go back through the chat template; the reply is text
    history = question + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
                          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                        "content": "21 degrees, sunny"}]}]
    r2 = claude(s).messages.create(model=m, max_tokens=12, extra_body=GREEDY, messages=history, tools=[CLAUDE_WEATHER])
    assert r2.usage.input_tokens > r.usage.input_tokens, (r2.usage, r.usage)
    assert r2.content and r2.stop_reason in ("end_turn", "max_tokens", "tool_use"), r2
    r3 = claude(s).messages.create(model=m, max_tokens=12, extra_body=GREEDY, messages=history, tools=[CLAUDE_WEATHER],
                                   tool_choice={"type": "none"})
    assert [b.type for b in r3.content] == ["text"] and r3.stop_reason in ("end_turn", "max_tokens"), r3

    # streamed: the tool_use block's input arrives as input_json_delta
    with claude(s).messages.stream(model=m, max_tokens=200, extra_body=GREEDY, messages=question, tools=[CLAUDE_WEATHER],
                                   tool_choice={"type": "any", "disable_parallel_tool_use": True}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds or "content_block_delta" in kinds, kinds
    assert final.stop_reason == "tool_use" and [b.type for b in final.content] == ["tool_use"], final
    jsonschema.validate(final.content[0].input, WEATHER_SCHEMA)
    events = sse_events(s, "/v1/messages", {"model": m, "max_tokens": 200, "temperature": 0, "messages": question,
                                            "stream": True, "tools": [CLAUDE_WEATHER],
                                            "tool_choice": {"type": "tool", "name": "get_weather"}})
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert len(deltas) > 1 and all(d["type"] == "input_json_delta" for d in deltas), ("input in pieces", deltas)
    whole = claude(s).messages.create(model=m, max_tokens=200, extra_body=GREEDY, messages=question, tools=[CLAUDE_WEATHER],
                                      tool_choice={"type": "tool", "name": "get_weather"})
    assert json.loads("".join(d["partial_json"] for d in deltas)) == whole.content[-1].input, (deltas, whole)
    jsonschema.validate(whole.content[-1].input, WEATHER_SCHEMA)
    start = next(d for n, d in events if n == "content_block_start")["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "get_weather" and start["input"] == {}, start
    assert next(d for n, d in events if n == "message_delta")["delta"]["stop_reason"] == "tool_use"


@test()
def messages_prefill(s):
    m = model_id(s)
    ask = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = claude(s).messages.create(model=m, max_tokens=12, extra_body=GREEDY, messages=ask).content[0].text
    assert len(full) > 6, full
    # the reply continues the trailing assistant turn and leaves it out
    head = full[:len(full) // 2].rstrip()
    r = claude(s).messages.create(model=m, max_tokens=4, extra_body=GREEDY,
                                  messages=ask + [{"role": "assistant", "content": head}])
    assert not r.content[0].text.startswith(head), (head, r.content[0].text)
    plain = claude(s).messages.count_tokens(model=m, messages=ask).input_tokens
    assert r.usage.input_tokens > plain, (r.usage, plain)


@test()
def messages_count_tokens(s):
    m = model_id(s)
    msgs = [{"role": "user", "content": QUESTION}]
    counted = claude(s).messages.count_tokens(model=m, messages=msgs)
    used = claude(s).messages.create(model=m, max_tokens=4, messages=msgs)
    assert counted.input_tokens == used.usage.input_tokens > 5, (counted, used.usage)
    with_tools = claude(s).messages.count_tokens(model=m, messages=msgs, tools=[CLAUDE_WEATHER])
    assert with_tools.input_tokens > counted.input_tokens, (with_tools, counted)


@test()
def messages_bad_requests(s):
    m = model_id(s)
    hi = [{"role": "user", "content": "hi"}]
    cases = [
        ({"model": m, "messages": hi}, "max_tokens"),
        ({"model": m, "max_tokens": 0, "messages": hi}, "max_tokens"),
        ({"model": m, "max_tokens": 8, "messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
        ({"model": m, "max_tokens": 8, "messages": []}, "messages"),
        ({"model": m, "max_tokens": 8, "messages": hi, "temperature": 1.5}, "temperature"),
        ({"model": m, "max_tokens": 8, "messages": hi, "tools": [{"name": "f"}]}, "input_schema"),
        ({"model": m, "max_tokens": 8, "messages": hi, "tools": [CLAUDE_WEATHER],
          "tool_choice": {"type": "tool", "name": "launch"}}, "launch"),
        ({"model": m, "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image"}]}]}, "image"),
    ]
    for body, needle in cases:
        status, _, raw = s.request("POST", "/v1/messages", body)
        err = json.loads(raw)
        assert status == 400 and err["type"] == "error", (needle, status, raw)
        assert err["error"]["type"] == "invalid_request_error" and needle in err["error"]["message"], (needle, raw)
    try:
        claude(s).messages.create(model="claude-nonexistent", max_tokens=8, messages=hi)
        raise AssertionError("an unknown model was accepted")
    except anthropic.NotFoundError as e:
        assert e.status_code == 404 and e.body["error"]["type"] == "not_found_error", e.body
    try:
        claude(s).messages.create(model=m, max_tokens=8, messages=[{"role": "user", "content": "hi"},
                                                                   {"role": "robot", "content": "x"}])
        raise AssertionError("a bad role was accepted")
    except anthropic.BadRequestError as e:
        assert "messages[1].role" in str(e), e


@test(server="limited")
def messages_x_api_key(s):
    m = model_id(s, key="sekret")
    r = claude(s, key="sekret").messages.create(model=m, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert r.type == "message"
    assert claude(s, key="sekret").messages.count_tokens(model=m, messages=[{"role": "user", "content": "hi"}]).input_tokens > 0
    try:
        claude(s, key="wrong").messages.create(model=m, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401 and e.body["error"]["type"] == "authentication_error", e.body
    status, _, _ = s.request("GET", "/v1/models", headers={"x-api-key": "sekret"})
    assert status == 200
    status, _, _ = s.request("GET", "/v1/models", headers={"x-api-key": "wrong"})
    assert status == 401


# ---------------------------------------------------------------------------------------------
# Responses

@test()
def responses_create(s):
    m, client = model_id(s), s.client()
    r = client.responses.create(model=m, input="What is the capital of France?", max_output_tokens=12, temperature=0,
                                instructions="You are a geography teacher.")
    assert r.object == "response" and r.id.startswith("resp_") and r.status in ("completed", "incomplete"), r
    assert r.output[0].type == "message" and r.output[0].role == "assistant" and r.output_text.strip(), r
    assert r.output[0].content[0].type == "output_text" and r.output_text == r.output[0].content[0].text
    u = r.usage
    assert u.input_tokens > 10 and 0 < u.output_tokens <= 24 and u.total_tokens == u.input_tokens + u.output_tokens, u
    r2 = client.responses.create(model=m, max_output_tokens=12, temperature=0, input=[
        {"role": "developer", "content": "You are a geography teacher."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the capital of France?"}]}])
    assert r2.output_text == r.output_text and r2.usage.input_tokens == u.input_tokens, (r2, r)
    r3 = client.responses.create(model=m, max_output_tokens=2, input="Count from 1 to 20.")
    assert r3.status == "incomplete" and r3.incomplete_details.reason == "max_output_tokens", r3


@test()
def responses_streaming(s):
    m, client = model_id(s), s.client()
    full = client.responses.create(model=m, input="Write one sentence about the sea.", max_output_tokens=20, temperature=0)
    events = list(client.responses.create(model=m, input="Write one sentence about the sea.", max_output_tokens=20,
                                          temperature=0, stream=True))
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events))), types
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"], types
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed" if full.status == "completed" else "response.incomplete"], types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == full.output_text == events[-4].text, (text, full.output_text)
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == full.usage.output_tokens, final


@test()
def responses_function_tool(s):
    m, client = model_id(s), s.client()
    r = client.responses.create(model=m, input=QUESTION, tools=[RESPONSES_WEATHER], max_output_tokens=200,
                                temperature=0, tool_choice={"type": "function", "name": "get_weather"})
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and len(calls) == 1, r
    assert calls[0].name == "get_weather" and calls[0].call_id.startswith("call_"), calls
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER_SCHEMA)

    # the call and its output continue the conversation
    follow = [{"role": "user", "content": QUESTION}, calls[0].model_dump(exclude_none=True),
              {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21 degrees, sunny"}]
    r2 = client.responses.create(model=m, input=follow, tools=[RESPONSES_WEATHER], tool_choice="none",
                                 max_output_tokens=8, temperature=0)
    alone = client.responses.create(model=m, input=QUESTION, tools=[RESPONSES_WEATHER], tool_choice="none",
                                    max_output_tokens=1)
    assert [o.type for o in r2.output] == ["message"] and r2.usage.input_tokens > alone.usage.input_tokens + 10, r2

    # streamed: the call's item, its arguments, then response.completed
    events = list(client.responses.create(model=m, input=QUESTION, tools=[RESPONSES_WEATHER], tool_choice="required",
                                          parallel_tool_calls=False, max_output_tokens=200, temperature=0, stream=True))
    types = [e.type for e in events]
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1, ("the arguments stream in pieces", types)
    assert [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"], types
    done = events[-3]
    assert done.name == "get_weather" and done.arguments == "".join(pieces), done
    jsonschema.validate(json.loads(done.arguments), WEATHER_SCHEMA)
    item = events[-1].response.output[0]
    assert item.type == "function_call" and item.arguments == done.arguments and item.call_id.startswith("call_"), item


@test()
def responses_bad_requests(s):
    m, client = model_id(s), s.client()
    for extra, param in [({"previous_response_id": "resp_123"}, "previous_response_id"), ({"store": True}, "store")]:
        try:
            client.responses.create(model=m, input="hi", **extra)
            raise AssertionError(f"{param} was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.body["param"] == param and "stateless" in e.body["message"], e.body
    cases = [
        ({"model": m}, "input"),
        ({"model": m, "input": []}, "input"),
        ({"model": m, "input": [{"role": "wizard", "content": "hi"}]}, "input[0].role"),
        ({"model": m, "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": m, "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": m, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": m, "input": "hi", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0].name"),
        ({"model": m, "input": "hi", "tools": [RESPONSES_WEATHER], "tool_choice": {"type": "function", "name": "x"}},
         "tool_choice"),
    ]
    for body, param in cases:
        status, _, raw = s.request("POST", "/v1/responses", body)
        err = json.loads(raw)["error"]
        assert status == 400 and err["param"] == param and param in err["message"], (param, status, raw)


# ---------------------------------------------------------------------------------------------
# Thinking: a template whose generation prompt opens <think>, and a budget that closes it

@test(server="reasoning")
def messages_thinking_blocks(s):
    m = model_id(s)
    ask = [{"role": "user", "content": "What is 17 times 3?"}]
    r = claude(s).messages.create(model=m, max_tokens=40, extra_body=GREEDY, messages=ask)
    assert [b.type for b in r.content] == ["thinking", "text"], r
    thinking, text = r.content[0], r.content[1]
    assert thinking.thinking.strip() and thinking.signature == "" and text.text.strip(), r
    assert "<think>" not in text.text and "</think>" not in text.text + thinking.thinking, r
    with claude(s).messages.stream(model=m, max_tokens=40, extra_body=GREEDY, messages=ask) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "text" in kinds, kinds
    assert [b.type for b in final.content] == ["thinking", "text"], final
    assert final.content[0].thinking == thinking.thinking and final.content[1].text == text.text, (final, r)
    events = sse_events(s, "/v1/messages", {"model": m, "max_tokens": 40, "temperature": 0, "messages": ask, "stream": True})
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""} and starts[1]["type"] == "text", starts
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert {d["delta"]["type"] for d in deltas if d["index"] == 0} == {"thinking_delta"}, deltas
    # the thinking block goes back in the history and is not shown to the model again
    again = claude(s).messages.create(model=m, max_tokens=8, extra_body=GREEDY, messages=ask + [
        {"role": "assistant", "content": [b.model_dump() for b in r.content]}, {"role": "user", "content": "Thanks."}])
    assert again.content, again


@test(server="reasoning")
def responses_reasoning_items(s):
    m, client = model_id(s), s.client()
    ask = dict(model=m, input="What is 17 times 3?", max_output_tokens=40, temperature=0)
    r = client.responses.create(**ask)
    assert [o.type for o in r.output] == ["reasoning", "message"], r
    reasoning = r.output[0].content[0].text
    assert reasoning.strip() and r.output[0].content[0].type == "reasoning_text" and r.output_text.strip(), r
    assert "</think>" not in reasoning + r.output_text, r
    events = list(client.responses.create(**ask, stream=True))
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events))), types
    assert types[2:5] == ["response.output_item.added", "response.content_part.added", "response.reasoning_text.delta"], types
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == reasoning, types
    done = next(e for e in events if e.type == "response.reasoning_text.done")
    assert done.text == reasoning and done.output_index == 0, done
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message"] and final.output_text == r.output_text, final


ONLY_SMOLLM2 = {"messages_thinking_blocks", "responses_reasoning_items"}

SERVERS = {
    "main": ["--parallel", "4", "--ctx", "2048"],
    "limited": ["--parallel", "1", "--api-key", "sekret", "--ctx", "512"],
    "reasoning": ["--chat-template-file", base.THINK_TEMPLATE, "--reasoning-budget", "8"],
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=".build/release/swiftlet")
    p.add_argument("--model", default="smollm2")
    p.add_argument("-k", dest="only", default=None, help="run only tests whose name contains this")
    base.ARGS = p.parse_args()
    passed = failed = 0
    for server_name, flags in SERVERS.items():
        tests = [t for t in TESTS if t[1] == server_name and (base.ARGS.only is None or base.ARGS.only in t[0])]
        for name in [t[0] for t in tests if t[0] in ONLY_SMOLLM2 and base.ARGS.model != "smollm2"]:
            print(f"SKIP {name} on {base.ARGS.model}: the thinking template is SmolLM2's ChatML")
        tests = [t for t in tests if t[0] not in ONLY_SMOLLM2 or base.ARGS.model == "smollm2"]
        if not tests:
            continue
        server = base.Server(*flags)
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
                print(f"FAIL {name} ({time.time() - start:.1f}s)\n{traceback.format_exc()}\n{server.tail()[-1500:]}",
                      flush=True)
                if server.proc.poll() is not None:
                    print("server died:\n" + server.tail())
                    break
        code = server.stop()
        if code not in (0, None):
            print(f"FAIL: the '{server_name}' server exited with {code}\n{server.tail()}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
