"""An agent written against the `openai` client, unchanged: a two-step tool-using conversation.

Nothing here knows about Clove. Inside a sandbox the kernel sets ``OPENAI_BASE_URL`` (the LLM
gateway's OpenAI-compatible endpoint, relayed at ``127.0.0.1:8199``) and a placeholder
``OPENAI_API_KEY``; the provider's key stays in the kernel. Every request is a gateway job:
fair queuing, the agent's token budget and rate limits, the journal.

It prints one ``REPORT {json}`` line: the tool it was asked to call and the final answer.
"""

from __future__ import annotations

import json
import os

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def get_weather(city: str) -> str:
    return f"12 C and clear in {city}"  # a real agent would read a sensor or a service here


def main() -> dict[str, object]:
    client = openai.OpenAI()
    model = os.environ.get("MODEL", "default")
    messages: list[dict[str, object]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(**arguments)})
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    return {"tool": call.function.name, "arguments": arguments, "answer": final.choices[0].message.content}  # type: ignore[union-attr]


if __name__ == "__main__":
    print("REPORT " + json.dumps(main()), flush=True)
