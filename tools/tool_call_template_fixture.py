"""Reference renderings of tool-call conversations through the real Qwen2.5 chat template.

Renders with jinja2 the way transformers' apply_chat_template does (sandboxed environment,
trim_blocks, lstrip_blocks, loopcontrols, a `tojson` that is json.dumps with ensure_ascii=False),
after vLLM's one pre-processing step: tool-call arguments given as a JSON string are parsed.
Writes test/fixtures/tool-call-template.json, used by test/chat-template-tools.test.ts.

    python3 tools/tool_call_template_fixture.py
"""
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
config = json.load(open(os.path.join(ROOT, "assets/qwen2.5-tokenizer/tokenizer_config.json")))


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
template = env.from_string(config["chat_template"])

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}

CASES = [
    {
        "name": "one call and its result, then the next turn",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"},
        ],
    },
    {
        "name": "system prompt, text before two calls, two results, a final answer",
        "tools": [WEATHER],
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Paris and Tōkyō?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                    {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"東京\"}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "b", "content": "rain"},
            {"role": "assistant", "content": "Paris: sunny. Tokyo: rain."},
            {"role": "user", "content": "Thanks"},
        ],
    },
]

out = []
for case in CASES:
    messages = json.loads(json.dumps(case["messages"]))
    for m in messages:
        for tc in m.get("tool_calls") or []:
            if isinstance(tc["function"]["arguments"], str):
                tc["function"]["arguments"] = json.loads(tc["function"]["arguments"])
    text = template.render(messages=messages, tools=case["tools"], add_generation_prompt=True)
    out.append({**case, "rendered": text})

path = os.path.join(ROOT, "test/fixtures/tool-call-template.json")
with open(path, "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=2)
    f.write("\n")
print("wrote", path)
