"""Ours against transformers on the same device, on the tiny fixture checkpoint: one image and a
question through the chat template, then 32 greedy tokens, in f32 and in bf16. Prints the first
generated position's max abs logit difference and how many greedy tokens agree. Prepared for the
GPU machine (`scripts/gpu-bench.sh` runs it with `--device cuda`); runs on CPU too.

transformers 5 computes Qwen2.5-VL's M-RoPE positions only when `mm_token_type_ids` is passed
(without it, silently 1-D positions), so it is passed there: 1 on image tokens, 0 elsewhere.

    python scripts/cuda_parity.py --binary target/release/slc-detector --device cuda
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "../engine/tests/fixtures/qwen25vl")
PROMPT = "What is in this picture? Answer in one sentence."


def ours(binary, model, image, device, dtype, new_tokens):
    with tempfile.TemporaryDirectory() as tmp:
        logits_path = os.path.join(tmp, "logits.safetensors")
        out = subprocess.run(
            [binary, "generate", "--model", model, "--image", image, "--prompt", PROMPT, "--greedy",
             "--max-new-tokens", str(new_tokens), "--device", device, "--dtype", dtype,
             "--logits-out", logits_path],
            check=True, capture_output=True, text=True)
        from safetensors.torch import load_file
        return json.loads(out.stdout.strip().splitlines()[-1])["token_ids"], load_file(logits_path)["logits"]


def theirs(model_dir, image, device, dtype, new_tokens):
    import torch
    import transformers
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from transformers.image_utils import load_image

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch_dtype, attn_implementation="sdpa").eval().to(device)
    # The slow image processor: ours is bit-exact with it (transformers 4.57 picks the fast one
    # by default, whose resize differs in the last bits).
    processor = AutoProcessor.from_pretrained(model_dir, use_fast=False)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[load_image(image)], return_tensors="pt").to(device)
    kwargs = dict(inputs)
    if int(transformers.__version__.split(".")[0]) >= 5 and "mm_token_type_ids" not in kwargs:
        kwargs["mm_token_type_ids"] = (inputs["input_ids"] == model.config.image_token_id).long()
    with torch.no_grad():
        out = model.generate(**kwargs, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    prompt_len = inputs["input_ids"].shape[1]
    return out.sequences[0, prompt_len:].tolist(), out.logits[0][0].float().cpu()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(HERE, "../target/release/slc-detector"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--new-tokens", type=int, default=32)
    args = p.parse_args()
    model = os.path.join(FIXTURES, "untied")
    image = os.path.join(FIXTURES, "photo-bo-0.jpg")
    failed = False
    for dtype in args.dtypes.split(","):
        our_tokens, our_logits = ours(args.binary, model, image, args.device, dtype, args.new_tokens)
        their_tokens, their_logits = theirs(model, image, args.device, dtype, args.new_tokens)
        diff = (our_logits.float() - their_logits).abs().max().item()
        agree = sum(a == b for a, b in zip(our_tokens, their_tokens))
        print(json.dumps({"device": args.device, "dtype": dtype, "max_abs_logit_diff": diff,
                          "greedy_agree": agree, "greedy_total": len(their_tokens)}))
        failed |= agree != len(their_tokens) or len(our_tokens) != len(their_tokens)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
