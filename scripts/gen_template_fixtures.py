#!/usr/bin/env python3
"""Renders chat-template fixtures for Tests/TokenizationTests (ChatTemplateFixtureTests).

The templates are rendered exactly the way Hugging Face transformers' apply_chat_template
does it: an ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols
extension, transformers' own `tojson` filter (no HTML escaping, no key sorting), and the
`raise_exception` / `strftime_now` globals. `tools` and `documents` are always passed (None
when absent), as transformers does.

Inputs:  Tests/TokenizationTests/Fixtures/templates/*.jinja (template sources; SmolLM2's is
         refreshed from the real GGUF when it is present).
Output:  Tests/TokenizationTests/Fixtures/templates/cases.json, a list of
         {name, template, messages, tools?, extra?, add_generation_prompt, bos_token,
          eos_token, expected | expected_error}.

Usage:   python3 scripts/gen_template_fixtures.py
Needs:   jinja2 (pip install jinja2); gguf only to refresh SmolLM2's template.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.path.join(ROOT, "Tests", "TokenizationTests", "Fixtures", "templates")
SMOLLM2_GGUF = os.path.join(os.environ.get("SWIFTLET_HOME", os.path.expanduser("~/.cache/swiftlet")),
                            "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


class GenerationTracker(Extension):
    """transformers' `{% generation %}` block, which only marks assistant spans."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---- conversations -----------------------------------------------------------------------

def msg(role, content, **extra):
    m = {"role": role, "content": content}
    m.update(extra)
    return m


SYSTEM_USER = [msg("system", "You are a terse assistant."), msg("user", "What is the capital of France?")]
USER_ONLY = [msg("user", "Hello!")]
MULTI_TURN = [
    msg("system", "  You are helpful.\n"),
    msg("user", "Hi there"),
    msg("assistant", "Hello! How can I help?  "),
    msg("user", "Tell me a joke\n"),
]
MULTI_TURN_NO_SYSTEM = MULTI_TURN[1:]
ENDS_WITH_ASSISTANT = MULTI_TURN_NO_SYSTEM[:2] + [msg("user", "Thanks"), msg("assistant", "You're welcome.")]
UNICODE = [msg("user", "Grüße aus Köln 🇩🇪 — «ça va?»\n\t")]
NOT_ALTERNATING = [msg("user", "one"), msg("user", "two")]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City name"},
                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["city"]}}},
]
TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
TOOL_CONVERSATION = [
    msg("system", "You can check the weather."),
    msg("user", "What's the weather in Paris?"),
    msg("assistant", None, tool_calls=[TOOL_CALL]),
    msg("tool", '{"temperature": 21, "sky": "clear"}', tool_call_id="call12345", name="get_weather"),
]
TOOL_CONVERSATION_NO_SYSTEM = TOOL_CONVERSATION[1:]
TWO_TOOL_CALLS = [
    msg("user", "Weather in Paris and Rome?"),
    msg("assistant", "Checking both.", tool_calls=[
        TOOL_CALL,
        {"id": "call67890", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]),
    msg("tool", "21C", tool_call_id="call12345"),
    msg("tool", "25C", tool_call_id="call67890"),
]

STANDARD = [
    ("system_user", SYSTEM_USER, True),
    ("user_only", USER_ONLY, True),
    ("multi_turn", MULTI_TURN, True),
    ("multi_turn_no_prompt", MULTI_TURN, False),
    ("unicode", UNICODE, True),
]
NO_SYSTEM = [
    ("user_only", USER_ONLY, True),
    ("multi_turn", MULTI_TURN_NO_SYSTEM, True),
    ("ends_with_assistant", ENDS_WITH_ASSISTANT, False),
    ("unicode", UNICODE, True),
    ("system_rejected", SYSTEM_USER, True),
    ("not_alternating", NOT_ALTERNATING, True),
]

LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
CHATML = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>"}
GEMMA = {"bos_token": "<bos>", "eos_token": "<eos>"}

# (template file, special tokens, [(case, messages, add_generation_prompt, tools, extra)])
PLAN = [
    ("smollm2", CHATML, [c + (None, None) for c in STANDARD]),
    ("llama3", LLAMA, [c + (None, None) for c in STANDARD]),
    ("llama3_1", LLAMA, [c + (None, None) for c in STANDARD] + [
        ("tools_in_user_message", TOOL_CONVERSATION, True, TOOLS, None),
        ("tools_in_system", TOOL_CONVERSATION, True, TOOLS, {"tools_in_user_message": False}),
        ("date_string", SYSTEM_USER, True, None, {"date_string": "01 Jan 2025"}),
        ("two_tool_calls_rejected", TWO_TOOL_CALLS, True, TOOLS, None),
    ]),
    ("mistral_v0_2", MISTRAL, [c + (None, None) for c in NO_SYSTEM]),
    ("mistral_v0_3", MISTRAL, [c + (None, None) for c in STANDARD + [("multi_turn_no_system",) + NO_SYSTEM[1][1:], NO_SYSTEM[5]]] + [
        ("tools", TOOL_CONVERSATION_NO_SYSTEM + [msg("assistant", "It is 21 degrees and clear."),
                                                 msg("user", "Thanks!")], True, TOOLS, None),
    ]),
    ("qwen2_5", CHATML, [c + (None, None) for c in STANDARD] + [
        ("tools", TOOL_CONVERSATION, True, TOOLS, None),
        ("tools_default_system", TOOL_CONVERSATION_NO_SYSTEM, True, TOOLS, None),
        ("two_tool_calls", TWO_TOOL_CALLS, True, TOOLS, None),
    ]),
    ("gemma2", GEMMA, [c + (None, None) for c in NO_SYSTEM]),
    ("gemma3", GEMMA, [c + (None, None) for c in STANDARD + [NO_SYSTEM[2], NO_SYSTEM[5]]] + [
        ("multimodal_content", [msg("system", [{"type": "text", "text": "Describe images."}]),
                                msg("user", [{"type": "image"}, {"type": "text", "text": " What is this? "}])],
         True, None, None),
    ]),
]


def main():
    if os.path.exists(SMOLLM2_GGUF):
        from gguf import GGUFReader
        template = GGUFReader(SMOLLM2_GGUF).fields["tokenizer.chat_template"].contents()
        with open(os.path.join(DIR, "smollm2.jinja"), "w") as f:
            f.write(template)

    env = make_env()
    cases = []
    for name, tokens, runs in PLAN:
        with open(os.path.join(DIR, name + ".jinja")) as f:
            source = f.read()
        template = env.from_string(source)
        for case, messages, agp, tools, extra in runs:
            context = dict(extra or {})
            context.update(tokens)
            entry = {"name": f"{name}/{case}", "template": name + ".jinja", "messages": messages,
                     "add_generation_prompt": agp, **tokens}
            if tools is not None:
                entry["tools"] = tools
            if extra:
                entry["extra"] = extra
            try:
                entry["expected"] = template.render(messages=messages, tools=tools, documents=None,
                                                    add_generation_prompt=agp, **context)
            except jinja2.exceptions.TemplateError as e:
                entry["expected_error"] = str(e)
            cases.append(entry)
            outcome = "error: " + entry["expected_error"] if "expected_error" in entry else f"{len(entry['expected'])} chars"
            print(f"{entry['name']}: {outcome}", file=sys.stderr)

    with open(os.path.join(DIR, "cases.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
