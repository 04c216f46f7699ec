"""Drives slc-detector's OpenAI-compatible endpoint with the official `openai` client.

Usage: openai_client.py BASE_URL MODEL IMAGE_PATH. Prints one JSON line the Rust test checks.
"""

import base64
import json
import sys

import openai

base_url, model, image_path = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
with open(image_path, "rb") as handle:
    image = "data:image/jpeg;base64," + base64.b64encode(handle.read()).decode()

models = [m.id for m in client.models.list().data]
vision_messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": "What is in the picture?"},
        ],
    },
]
completion, completion_again = (
    client.chat.completions.create(
        model=model, messages=vision_messages, max_tokens=16, temperature=0, seed=1
    )
    for _ in range(2)
)
text_request = dict(
    model=model, messages=[{"role": "user", "content": "Again?"}], max_tokens=16, temperature=0
)
streamed = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(stream=True, **text_request)
    if chunk.choices
)
unstreamed = client.chat.completions.create(**text_request).choices[0].message.content
# A small object schema the tiny random model can finish within the token budget.
json_mode = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "JSON please"}],
    response_format={
        "type": "json_schema",
        "json_schema": {
            "name": "flag",
            "schema": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
                "additionalProperties": False,
            },
        },
    },
    max_tokens=32,
)
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    not_found_status = None
except openai.NotFoundError as error:
    not_found_status = error.status_code

print(
    json.dumps(
        {
            "models": models,
            "completion": completion.choices[0].message.content,
            "completion_again": completion_again.choices[0].message.content,
            "streamed": streamed,
            "unstreamed": unstreamed,
            "json_mode_finish": json_mode.choices[0].finish_reason,
            "json_mode_object": json.loads(json_mode.choices[0].message.content),
            "not_found_status": not_found_status,
        }
    )
)
