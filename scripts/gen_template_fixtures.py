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
          eos_token, expected | expected_error}, and features.json, small templates that
         exercise one language feature each: {name, template, context, expected}.

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

THINKING = [
    msg("user", "What is 2+2?"),
    msg("assistant", "<think>\nEasy: add them.\n</think>\n\n2+2 is 4."),
    msg("user", "And 3+3?"),
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
    ("qwen3", CHATML, [c + (None, None) for c in STANDARD] + [
        ("thinking_history", THINKING, True, None, None),
        ("thinking_disabled", MULTI_TURN, True, None, {"enable_thinking": False}),
        ("reasoning_content", [msg("user", "Hi"), msg("assistant", "Hello!", reasoning_content="Greet back.")], False, None, None),
        ("tools", TOOL_CONVERSATION, True, TOOLS, None),
        ("two_tool_calls", TWO_TOOL_CALLS, True, TOOLS, None),
    ]),
    ("gemma2", GEMMA, [c + (None, None) for c in NO_SYSTEM]),
    ("gemma3", GEMMA, [c + (None, None) for c in STANDARD + [NO_SYSTEM[2], NO_SYSTEM[5]]] + [
        ("multimodal_content", [msg("system", [{"type": "text", "text": "Describe images."}]),
                                msg("user", [{"type": "image"}, {"type": "text", "text": " What is this? "}])],
         True, None, None),
    ]),
]


# ---- language features: small templates rendered by jinja2, compared exactly -------------
# (Tuples are lists in the Swift interpreter, so no case prints a tuple's repr; attribute
# access on an undefined value, an error in Jinja, is covered by the Swift unit tests.)

CONVERSATION = [msg("system", "sys"), msg("user", "u1"), msg("assistant", "a1"), msg("user", "u2")]
FEATURES = [
    # text and whitespace control
    ("text", "plain text", {}),
    ("output", "a{{ x }}b", {"x": "X"}),
    ("comment", "a{# gone #}b", {}),
    ("trim_blocks", "{% if true %}\nx\n{% endif %}\ny", {}),
    ("lstrip_blocks", "a\n    {% if true %}\n    b\n    {% endif %}\nc", {}),
    ("lstrip_not_after_text", "a  {% if true %}b{% endif %}", {}),
    ("minus_trims", "a   {{- 'b' -}}   c  {%- if true -%}  d  {%- endif %}", {}),
    ("plus_disables", "a\n  {%+ if true +%}\nb{% endif %}", {}),
    ("output_keeps_newline", "{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("comment_trims", "a\n  {# c #}\nb", {}),
    ("trailing_newline_dropped", "x\n", {}),
    ("crlf_normalised", "a\r\nb{% if true %}\r\nc{% endif %}", {}),
    ("raw", "{% raw %}{{ not evaluated }}{% endraw %}", {}),
    # expressions
    ("undefined_empty", "[{{ missing }}][{{ d.nokey }}][{{ d['nokey'] }}][{{ missing is defined }}]", {"d": {}}),
    ("none_bools", "{{ none }} {{ true }} {{ false }} {{ True }}", {}),
    ("numbers", "{{ 1 + 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 * 3 - 1 }} {{ -4 }} {{ 1.5 + 1 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 0.1 + 0.2 }}", {}),
    ("string_escapes", "{{ 'a\\nb\\t\"c\"' }}|{{ \"it's\" }}|{{ '\\u00e9\\x41' }}", {}),
    ("concat", "{{ 'n=' ~ 3 ~ true ~ none }}", {}),
    ("concat_precedence", "{{ (1 + 2) ~ 3 }}{{ 'a' ~ 2 * 3 }}{{ 'a' ~ 'b' | upper }}", {}),
    ("string_plus", "{{ 'a' + 'b' }}{{ [1] + [2] }}{{ '-' * 3 }}", {}),
    ("comparisons", "{{ 1 < 2 }}{{ 2 <= 1 }}{{ 'a' == 'a' }}{{ 'a' != 'a' }}{{ 3 > 2 }}{{ 1 >= 1 }}{{ 1 == 1.0 }}{{ 'b' > 'a' }}", {}),
    ("logic", "{{ true and false }}{{ true or false }}{{ not true }}{{ not (1 == 2) }}{{ 0 or 'x' }}{{ 'a' and 'b' }}{{ none or [] }}", {}),
    ("in", "{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in d }}{{ 'q' not in d }}{{ not 'k' in d }}", {"d": {"k": 1}}),
    ("ternary", "{{ 'yes' if flag else 'no' }}[{{ 'a' if false }}]{{ 'x' if none else 'y' if 0 else 'z' }}", {"flag": True}),
    ("subscripts", "{{ xs[0] }}{{ xs[-1] }}{{ xs[1:] }}{{ xs[:2] }}{{ 'hello'[1:3] }}{{ d['k'] }}{{ d.k }}{{ xs.0 }}[{{ xs[10] }}]", {"xs": [1, 2, 3], "d": {"k": "v"}}),
    ("slices", "{{ xs[::-1] }}{{ xs[::2] }}{{ xs[1::2] }}{{ xs[-1:0:-1] }}{{ xs[:-2:-1] }}{{ 'abc'[::-1] }}{{ xs[-2:] }}", {"xs": [1, 2, 3, 4, 5]}),
    ("literals", "{{ [1, 'a', none, true] }}{{ {'k': 1, 'j': [2]} }}{{ {'k': 1}['k'] }}{{ (1, 2) | join }}{{ \"q'\" ~ [\"q'\"] }}", {}),
    ("floats", "{{ 1.0 }} {{ 2.50 }} {{ 1e3 }} {{ 3 * 1.5 }} {{ 10 / 4 }} {{ 1e-5 }} {{ 123456.789 }}", {}),
    ("dict_render", "{{ d }}", {"d": {"a": [1, {"b": None}], "c": "x\ny"}}),
    # statements
    ("if_elif_else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("loop_vars", "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}", {"items": ["a", "b", "c"]}),
    ("loop_cycle", "{% for x in range(4) %}{{ loop.cycle('odd', 'even') }} {% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("for_filter", "{% for x in [1, 2, 3, 4] if x % 2 == 0 %}{{ loop.index }}:{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", {}),
    ("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", {"d": {"x": 1, "y": "z"}}),
    ("for_dict", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("for_string", "{% for c in 'abc' %}{{ c }}-{% endfor %}", {}),
    ("nested_loops", "{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}", {}),
    ("break_continue", "{% for n in [1, 2, 3, 4] %}{% if n == 2 %}{% continue %}{% endif %}{% if n == 4 %}{% break %}{% endif %}{{ n }}{% endfor %}", {}),
    ("set_scope", "{% set a = 1 %}{% for x in [1] %}{% set a = 2 %}{{ a }}{% endfor %}{{ a }}{% if true %}{% set b = 3 %}{% endif %}{{ b }}", {}),
    ("set_persists_in_loop", "{% for i in [1, 2, 3] %}{% if i > 1 %}{{ prev }}{% endif %}{% set prev = i %}{% endfor %}", {}),
    ("set_block", "{% set x %}hello {{ name }}{% endset %}[{{ x }}]{% set y | upper %}shout{% endset %}{{ y }}", {"name": "bob"}),
    ("set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c, d = [3, 4] %}{{ c }}{{ d }}", {}),
    ("namespace", "{% set ns = namespace(total=0, seen=false) %}{% for x in [1, 2, 3] %}{% set ns.total = ns.total + x %}{% if x == 2 %}{% set ns.seen = true %}{% endif %}{% endfor %}{{ ns.total }} {{ ns.seen }}", {}),
    ("namespace_new_attr", "{% set ns = namespace() %}{% set ns.a = 'x' %}{{ ns.a }}", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}", {}),
    ("macro_sees_globals", "{% macro show() %}{{ g }}{% endmacro %}{% set g = 'top' %}{{ show() }}", {}),
    ("macro_call_block", "{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inner{% endcall %}", {}),
    ("filter_block", "{% filter upper %}abc{{ 'd' }}{% endfilter %}", {}),
    ("generation_block", "{% generation %}kept{% endgeneration %}", {}),
    # filters
    ("filters_basic", "{{ '  x  ' | trim }}|{{ xs | length }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ xs | join('-') }}|{{ xs | first }}{{ xs | last }}|{{ missing | default('d') }}|{{ '' | default('e', true) }}|{{ 5 | string }}|{{ xs | count }}", {"xs": [1, 2, 3]}),
    ("filter_precedence", "{{ 'a' + ' b ' | trim + 'c' }}{{ -3 | abs }}{{ not xs | length }}", {"xs": []}),
    ("capitalize_title", "{{ 'hELLO world' | capitalize }}|{{ 'hello big-world (x)' | title }}|{{ \"they're 3rd\" | title }}", {}),
    ("tojson", "{{ {'a': [1, 'x', none, true, 1.5], 'u': 'é\"\\n'} | tojson }}", {}),
    ("tojson_indent", "{{ {'b': [1, {'c': 'x'}], 'a': {}, 'e': []} | tojson(indent=2) }}", {}),
    ("tojson_scalars", "{{ 'x' | tojson }}{{ 3 | tojson }}{{ none | tojson }}{{ [] | tojson }}", {}),
    ("tojson_options", "{{ d | tojson(ensure_ascii=True) }}|{{ d | tojson(separators=(',', ':')) }}|{{ d | tojson(sort_keys=true) }}|{{ d | tojson(indent=1, separators=(',', ': ')) }}", {"d": {"z": "é😀", "a": [1, 2]}}),
    ("list_items", "{{ 'abc' | list }}{{ d | list }}{{ d | items | list | length }}{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("dictsort", "{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %}|{% for k, v in d | dictsort(reverse=true) %}{{ k }}{% endfor %}|{% for p in d | dictsort(by='value') %}{{ p[0] }}{% endfor %}", {"d": {"b": 1, "a": 3, "C": 2}}),
    ("map_attribute", "{{ msgs | map(attribute='role') | join(',') }}|{{ ['a', 'B'] | map('upper') | list }}", {"msgs": CONVERSATION}),
    ("selectattr", "{{ msgs | selectattr('role', 'equalto', 'user') | list | length }} {{ (msgs | selectattr('role', 'eq', 'user') | list)[-1].content }} {{ msgs | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join }}", {"msgs": CONVERSATION}),
    ("selectattr_truthy", "{% for i in items | selectattr('on') %}{{ i.n }}{% endfor %}", {"items": [{"n": 1, "on": True}, {"n": 2, "on": False}, {"n": 3}]}),
    ("select_reject", "{{ [1, 2, 3, 4] | select('odd') | list }}{{ ['a', 'code', 'b'] | reject('equalto', 'code') | join(', ') }}{{ [0, 1, '', 'x'] | select | list }}", {}),
    ("replace_filter", "{{ 'a-b-c' | replace('-', '+') }}{{ 'aaa' | replace('a', 'b', 2) }}", {}),
    ("numeric_filters", "{{ '42' | int }}{{ '3.7' | int }}{{ 'x' | int }}{{ 'x' | int(7) }}{{ 3 | float }}{{ '2.5' | float }}{{ -2.5 | abs }}{{ 2.567 | round(2) }}{{ 2.5 | round }}{{ 7.1 | round(0, 'floor') }}", {}),
    ("unique_sort", "{{ ['b', 'A', 'a', 'c', 'b'] | unique | list }}{{ [3, 1, 2] | sort }}{{ ['b', 'A', 'c'] | sort }}{{ [3, 1, 2] | sort(reverse=true) }}{{ [1, 2] | reverse | list }}{{ [1, 2, 3] | sum }}{{ [4, 2, 8] | min }}{{ [4, 2, 8] | max }}", {}),
    ("indent_filter", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}", {}),
    ("format_filter", "{{ '%s is %d' | format('x', 3) }}{{ '%s%%' % 5 }}", {}),
    ("length_undefined", "{{ missing | length }}{{ missing | list }}", {}),
    # tests
    ("tests", "{{ x is defined }}{{ y is defined }}{{ y is not defined }}{{ y is undefined }}{{ n is none }}{{ s is string }}{{ d is mapping }}{{ s is iterable }}{{ xs is iterable }}{{ 3 is number }}{{ 3.5 is number }}{{ xs is sequence }}{{ 3 is integer }}{{ 3.0 is float }}{{ true is boolean }}", {"x": 1, "n": None, "s": "s", "d": {}, "xs": [1]}),
    ("tests_args", "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 'a' is equalto 'a' }}{{ 'a' is eq('b') }}{{ 2 is gt 1 }}{{ 1 is lt(0) }}{{ 'x' is in ['x'] }}{{ 'ab' is lower }}{{ 'AB' is upper }}{{ none is sameas none }}", {}),
    ("test_precedence", "{{ not x is defined }}{{ x is defined and x }}{{ d.a is defined }}{{ d.b is defined }}", {"d": {"a": 1}}),
    # methods
    ("string_methods", "{{ ' x '.strip() }}{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('x') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'ab'.upper() }}{{ 'AB'.lower() }}{{ 'hello world'.title() }}{{ ' x '.lstrip() }}|{{ ' x '.rstrip() }}|{{ 'a-b'.replace('-', '+') }}{{ 'hello'.capitalize() }}", {}),
    ("strip_chars", "[{{ '\\n\\nx\\n'.strip('\\n') }}][{{ 'xxay'.lstrip('x') }}][{{ 'ayyx'.rstrip('xy') }}][{{ ' a '.strip(none) }}]", {}),
    ("split", "{{ 'a<b>c<b>'.split('<b>') }}{{ ' a  b '.split() }}{{ 'x'.split(',') }}{{ 'r</think>a'.split('</think>')[-1] }}{{ 'a,b,c'.split(',', 1) }}{{ 'a,b,c'.rsplit(',', 1) }}", {}),
    ("format_method", "{{ '{} and {}'.format('a', 1) }}|{{ '{0}{0}{1}'.format('x', 'y') }}|{{ '{name}!'.format(name='n') }}|{{ '{{lit}}'.format() }}", {}),
    ("find_count_join", "{{ 'hello'.find('l') }}{{ 'hello'.rfind('l') }}{{ 'hello'.find('z') }}{{ 'hello'.count('l') }}{{ ', '.join(['a', 'b']) }}", {}),
    ("dict_methods", "{{ d.get('k') }}{{ d.get('q', 'dflt') }}{{ d.get('q') }}{{ d.keys() | list }}{{ d.values() | list }}{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}", {"d": {"k": "v", "n": 2}}),
    # globals
    ("range", "{% for i in range(3) %}{{ i }}{% endfor %}{{ range(1, 8, 3) | list }}{{ range(3, -1, -1) | list }}{{ range(0, 3, -1) | list }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') }}", {}),
    ("message_access", "{% for m in messages %}{{ m.role }}:{{ m['content'] }}{% if m.tool_calls is defined %}!{% endif %} {% endfor %}", {"messages": CONVERSATION}),
    # Python semantics the corpus relies on
    ("dict_int_keys", "{% set d = {0: 'a', 2: 'b', 1.0: 'c'} %}{{ d[0] }}{{ d[2] }}{{ d[1] }}{{ d[true] }}[{{ d['0'] }}]{% for k, v in d | dictsort %}{{ k + 1 }}{{ v }}{% endfor %}{{ d }}{{ d | tojson }}{{ 0 in d }}{{ '0' in d }}{{ d.get(2) }}", {}),
    ("generators", "{% if [] | select %}true{% endif %}{% set g = ['a', 'b'] | map('upper') %}{{ g | list }}{{ g | list }}[{{ (['x'] | select)[0] }}]{{ ['q', 'r'] | select | first }}{{ [3, 1] | reverse | list }}{{ [1, 1, 2] | unique | list }}{{ 'r' in ['q', 'r'] | select }}", {}),
    ("filters_skip_false_sequences", "{{ none | select | list }}{{ none | map('upper') | list }}{{ none | selectattr('x') | list }}{{ none | rejectattr('x', 'none') | list }}{{ missing | select | list }}", {}),
    ("markup", "{{ '<a>'|safe + '<b>' }}|{{ '<c>' + '<d>'|safe }}|{{ '<e>'|safe ~ '<f>' }}|{% set m = '&'|safe %}{{ m + '\"' }}|{{ '<x>'|e }}|{{ ('<y>'|e) + '<z>' }}|{{ ('' | safe) or 'empty' }}", {}),
    ("subscript_not_subscriptable", "[{{ 5[0] }}][{{ none[0] }}][{{ [1][none] }}][{{ 'ab'[none] }}][{{ 5[1:] }}]", {}),
    ("equality_of_dicts", "{% set users = messages | selectattr('role', 'equalto', 'user') | list %}{% for m in messages %}{{ m == users[-1] }}{% endfor %}", {"messages": CONVERSATION}),
]


def render_features(env):
    out = []
    for name, source, context in FEATURES:
        entry = {"name": name, "template": source, "context": context}
        try:
            entry["expected"] = env.from_string(source).render(**context)
        except Exception as e:
            entry["expected_error"] = str(e)
            print(f"feature {name}: error {e}", file=sys.stderr)
        out.append(entry)
    with open(os.path.join(DIR, "features.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


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

    render_features(env)
    with open(os.path.join(DIR, "cases.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
