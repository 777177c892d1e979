#!/usr/bin/env python3
"""Renders llama.cpp's chat-template corpus (its models/templates/*.jinja: the templates of many
model families, collected from their Hugging Face repositories) for
Tests/TokenizationTests (ChatTemplateCorpusTests).

Each template is rendered with Python jinja2 in the environment Hugging Face transformers uses
for apply_chat_template (see make_env in gen_template_fixtures.py), for four conversations:
one user turn, system + user, a multi-turn chat, and a tool-calling round trip (tool schemas,
a user turn, an assistant tool call with object arguments as transformers passes them and empty
text content, since many templates concatenate the content and fail on null, and a tool result),
each with add_generation_prompt=True. strftime_now reports a fixed time, so the
renders do not depend on the day they are made.

When jinja2 fails for a conversation (a template's raise_exception, or a template that cannot
handle that shape), the fixture records the failure instead of a render: Swiftlet must then fail
too, with the same message when it came from raise_exception.

Output: Tests/TokenizationTests/Fixtures/templates/corpus.json, self-contained:
    {"now", "bos_token", "eos_token", "conversations": {shape: {"messages", "tools"?}},
     "templates": [{"name", "source", "renders": {shape: {"expected"} | {"error", "raised"}}}]}

Usage: python3 scripts/gen_template_corpus.py [TEMPLATE_DIR]
       (default: models/templates of the llama.cpp source that scripts/llama_cpp.py fetches)
Needs: jinja2 (pip install jinja2).
"""
import json
import os
import sys
from datetime import datetime

import jinja2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_template_fixtures import make_env  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "Tests", "TokenizationTests", "Fixtures", "templates", "corpus.json")
# Noon UTC: the date the templates print is the same in every time zone from UTC-11 to UTC+11.
NOW = datetime(2025, 1, 15, 12, 0, 0)
BOS, EOS = "<s>", "</s>"


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    """An error the template raised itself with raise_exception(message)."""


def msg(role, content, **extra):
    m = {"role": role, "content": content}
    m.update(extra)
    return m


TOOLS = [{"type": "function", "function": {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "description": "City name"},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}]

CONVERSATIONS = {
    "user": {"messages": [msg("user", "Hello!")]},
    "system_user": {"messages": [msg("system", "You are a terse assistant."),
                                 msg("user", "What is the capital of France?")]},
    "multi_turn": {"messages": [msg("user", "Hi there"),
                                msg("assistant", "Hello! How can I help?"),
                                msg("user", "Tell me a joke.")]},
    "tool_call": {"tools": TOOLS, "messages": [
        msg("user", "What's the weather in Paris?"),
        msg("assistant", "", tool_calls=[{"id": "call12345", "type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]),
        msg("tool", '{"temperature": 21, "sky": "clear"}', tool_call_id="call12345"),
    ]},
}


def template_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    from llama_cpp import fetch_source
    return os.path.join(fetch_source(), "models", "templates")


def main():
    env = make_env()

    def raise_exception(message):
        raise RaisedByTemplate(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)

    directory = template_dir()
    templates = []
    for file in sorted(f for f in os.listdir(directory) if f.endswith(".jinja")):
        with open(os.path.join(directory, file), encoding="utf-8") as f:
            source = f.read()
        template = env.from_string(source)
        renders = {}
        for shape, conversation in CONVERSATIONS.items():
            try:
                renders[shape] = {"expected": template.render(
                    messages=conversation["messages"], tools=conversation.get("tools"), documents=None,
                    add_generation_prompt=True, bos_token=BOS, eos_token=EOS)}
            except RaisedByTemplate as e:
                renders[shape] = {"error": str(e), "raised": True}
            except Exception as e:  # the template cannot handle this conversation in jinja2 either
                renders[shape] = {"error": f"{type(e).__name__}: {e}", "raised": False}
            outcome = renders[shape].get("error")
            print(f"{file} {shape}: {'error: ' + outcome if outcome else 'ok'}", file=sys.stderr)
        templates.append({"name": file, "source": source, "renders": renders})

    corpus = {"now": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), "bos_token": BOS, "eos_token": EOS,
              "conversations": CONVERSATIONS, "templates": templates}
    with open(OUTPUT, "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=False, indent=0, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
