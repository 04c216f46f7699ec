"""Hugging Face's side of the real-tokenizer parity test (`detector-service/tests/it/real_tokenizer.rs`).

Reads one JSON request on stdin:
    {"dir": TOKENIZER_DIR, "strings": [...], "chats": [{"messages": [...], "image_tokens": [n, ...]}]}
and writes on stdout, for every string, the ids from `tokenizers` (the Rust core's Python
binding, loading tokenizer.json) and from transformers' `AutoTokenizer` (tokenizer_config.json
too), each two ways: special-token text as control ids (the default) and as plain text
(`encode_special_tokens` / `split_special_tokens=True`); the decoded text of the default ids;
the string's NFC form (what a round trip must give back); and for every chat the template's
text and ids, each `<|image_pad|>` expanded to `n` pads as `Qwen2_5_VLProcessor` does, plus
`apply_chat_template(tokenize=True)`'s ids with one pad per image.
"""

import json
import sys
import unicodedata

from tokenizers import Tokenizer
from transformers import AutoTokenizer


def expand_image_pads(text: str, counts: list[int]) -> str:
    # The processor's own loop: one placeholder run per pad, in order, then back to pads.
    for count in counts:
        text = text.replace("<|image_pad|>", "<|placeholder|>" * count, 1)
    return text.replace("<|placeholder|>", "<|image_pad|>")


def template_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def main() -> None:
    request = json.load(sys.stdin)
    core = Tokenizer.from_file(f"{request['dir']}/tokenizer.json")
    plain_core = Tokenizer.from_file(f"{request['dir']}/tokenizer.json")
    plain_core.encode_special_tokens = True
    fast = AutoTokenizer.from_pretrained(request["dir"])
    strings = request["strings"]
    core_ids = [e.ids for e in core.encode_batch(strings, add_special_tokens=False)]
    out = {
        "vocab_size": len(fast),
        "tokenizers": {
            "ids": core_ids,
            "plain_ids": [e.ids for e in plain_core.encode_batch(strings, add_special_tokens=False)],
            "decoded": core.decode_batch(core_ids, skip_special_tokens=False),
        },
        "transformers": {
            "ids": [fast(s, add_special_tokens=False)["input_ids"] for s in strings],
            "plain_ids": [
                fast(s, add_special_tokens=False, split_special_tokens=True)["input_ids"] for s in strings
            ],
            "decoded": [fast.decode(ids, skip_special_tokens=False) for ids in core_ids],
        },
        "nfc": [unicodedata.normalize("NFC", s) for s in strings],
        "chats": [],
    }
    for chat in request["chats"]:
        text = fast.apply_chat_template(chat["messages"], add_generation_prompt=True, tokenize=False)
        expanded = expand_image_pads(text, chat["image_tokens"])
        out["chats"].append(
            {
                "text": text,
                "ids": fast(expanded, add_special_tokens=False)["input_ids"],
                "template_ids": template_ids(fast, chat["messages"]),
            }
        )
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
