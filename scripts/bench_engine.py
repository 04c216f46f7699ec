"""Side-by-side benchmark of our engine (slc-detector bench-engine) and HF transformers on the
same random-weight checkpoint with the real Qwen2.5-VL-3B widths and reduced depth.

    ~/.cache/slc/torch-2.11.0/bin/python scripts/bench_engine.py \
        --binary target/release/slc-detector [--text-layers 4 --vision-layers 8 --threads 2 --reps 3]

The checkpoint is made on demand with `slc-detector make-checkpoint` (never committed). Both
engines get the same inputs file: one 448x448 image (grid 1x32x32, 256 image tokens) in a
chat-shaped prompt, then 64 greedy tokens (no eos stop), f32, the same thread count. Each runs
in its own process so peak RSS is its own. Prints medians, ratios ours/HF and peak RSS.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def make_inputs(model_dir, path, image_height, image_width, seed=0):
    import torch
    from safetensors.torch import save_file

    config = json.load(open(os.path.join(model_dir, "config.json")))
    vision = config["vision_config"]
    patch, merge = vision["patch_size"], vision["spatial_merge_size"]
    # smart_resize with the published min/max pixels: round each side to a multiple of 28.
    factor = patch * merge
    grid = [1, round(image_height / factor) * merge, round(image_width / factor) * merge]
    patch_dim = 3 * vision["temporal_patch_size"] * patch * patch
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(grid[1] * grid[2], patch_dim, generator=g)
    text = lambda n: torch.randint(0, 150000, (n,), generator=g).tolist()
    im_start, im_end = 151644, 151645
    ids = [im_start] + text(8) + [im_end, im_start] + text(2)
    ids += [config["vision_start_token_id"]] + [config["image_token_id"]] * (grid[1] * grid[2] // merge**2)
    ids += [config["vision_end_token_id"]] + text(44) + [im_end, im_start] + text(2)
    save_file(
        {"input_ids": torch.tensor(ids), "pixel_values": pixels, "grid": torch.tensor([grid])},
        path,
    )
    return len(ids)


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hf_worker(args):
    import torch
    from safetensors.torch import load_file
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    # TF32 off explicitly, as the engine runs (full f32 matmuls and convolutions on CUDA).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    started = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        args.model, dtype=dtype, attn_implementation="sdpa"
    ).eval().to(args.device)
    load_s = time.perf_counter() - started
    inputs = {k: v.to(args.device) for k, v in load_file(args.inputs).items()}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ids = inputs["input_ids"].unsqueeze(0)
    pixels, grid = inputs["pixel_values"], inputs["grid"]
    # transformers 5 computes M-RoPE positions only when told which tokens are image tokens;
    # without it, silently 1-D positions (4.57 computes them from the ids itself).
    mrope_kwargs = {}
    if int(__import__("transformers").__version__.split(".")[0]) >= 5:
        mrope_kwargs["mm_token_type_ids"] = (ids == model.config.image_token_id).long()

    class Stamp(LogitsProcessor):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            sync()
            self.times.append(time.perf_counter())
            return scores

    gen = GenerationConfig(
        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )
    vision, prefill, per_token, tokens = [], [], [], []
    for rep in range(args.warmup + args.reps):
        with torch.no_grad():
            t0 = time.perf_counter()
            model.model.get_image_features(pixels, grid)
            sync()
            t1 = time.perf_counter()
            stamp = Stamp()
            t2 = time.perf_counter()
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                image_grid_thw=grid, generation_config=gen, logits_processor=LogitsProcessorList([stamp]),
                **mrope_kwargs,
            )
        if rep >= args.warmup:
            vision.append((t1 - t0) * 1000)
            # The first logits call comes right after the prompt's forward (vision included).
            prefill.append((stamp.times[0] - t2) * 1000 - vision[-1])
            per_token.append((stamp.times[-1] - stamp.times[0]) * 1000 / (len(stamp.times) - 1))
            tokens = out[0, ids.shape[1]:].tolist()
    print(json.dumps({
        "engine": "transformers " + __import__("transformers").__version__,
        "load_s": load_s, "prompt_tokens": ids.shape[1], "vision_encode_ms": vision,
        "prefill_ms": prefill, "decode_ms_per_token": per_token, "tokens": tokens,
        "peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else 0,
    }))


def decode_bytes_per_token(model_dir, element):
    """The weights one decode step must read: every text-decoder tensor and the (tied)
    embedding as the lm_head, from the shards' headers; the vision tower is not read."""
    from safetensors import safe_open

    index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
    total = 0
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(os.path.join(model_dir, shard), "pt") as f:
            for key in f.keys():
                if key.startswith("model.") and not key.startswith("model.visual") or key.startswith("lm_head"):
                    numel = 1
                    for d in f.get_slice(key).get_shape():
                        numel *= d
                    total += numel * element
    return total


def run_json(cmd, env=None):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(HERE, "../target/release/slc-detector"))
    p.add_argument("--work-dir", default=os.path.expanduser("~/.cache/slc/bench-qwen25vl-3b"))
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--vision-layers", type=int, default=8)
    p.add_argument("--image-height", type=int, default=448)
    p.add_argument("--image-width", type=int, default=448)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--bandwidth-gbs", type=float,
                   help="the device's memory bandwidth (H200: 4800): print the decode bound it sets")
    p.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model")
    p.add_argument("--inputs")
    args = p.parse_args()
    if args.hf_worker:
        return hf_worker(args)

    model_dir = os.path.join(args.work_dir, f"text{args.text_layers}-vision{args.vision_layers}-{args.dtype}")
    if not os.path.exists(os.path.join(model_dir, "model.safetensors.index.json")):
        run_json([args.binary, "make-checkpoint", "--out", model_dir, "--text-layers", str(args.text_layers),
                  "--vision-layers", str(args.vision_layers), "--dtype", args.dtype, "--no-verify"])
    inputs = os.path.join(args.work_dir, f"inputs-{args.image_height}x{args.image_width}.safetensors")
    prompt_tokens = make_inputs(model_dir, inputs, args.image_height, args.image_width)
    common = ["--model", model_dir, "--inputs", inputs, "--new-tokens", str(args.new_tokens),
              "--reps", str(args.reps), "--warmup", str(args.warmup), "--threads", str(args.threads),
              "--device", args.device, "--dtype", args.dtype]
    hf = run_json([sys.executable, os.path.abspath(__file__), "--hf-worker"] + common)
    ours = run_json([args.binary, "bench-engine"] + common)

    med = lambda r, k: statistics.median(r[k])
    rows = [("vision encode (ms)", "vision_encode_ms"), ("prefill, text part (ms)", "prefill_ms"),
            ("decode per token (ms)", "decode_ms_per_token")]
    print(f"\nQwen2.5-VL 3B widths, {args.text_layers} text / {args.vision_layers} vision layers, {args.dtype} "
          f"on {args.device}, {args.threads} threads, {prompt_tokens} prompt tokens "
          f"({args.image_width}x{args.image_height} image), "
          f"{args.new_tokens} greedy tokens, median of {args.reps} runs\n")
    print(f"| metric | ours | HF | ours/HF |\n|---|---|---|---|")
    for name, key in rows:
        a, b = med(ours, key), med(hf, key)
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    e2e = lambda r: med(r, "vision_encode_ms") + med(r, "prefill_ms") + (args.new_tokens - 1) * med(r, "decode_ms_per_token")
    print(f"| end to end (ms) | {e2e(ours):.0f} | {e2e(hf):.0f} | {e2e(ours) / e2e(hf):.2f} |")
    print(f"| peak RSS (MiB) | {ours['peak_rss_mib']:.0f} | {hf['peak_rss_mib']:.0f} | "
          f"{ours['peak_rss_mib'] / hf['peak_rss_mib']:.2f} |")
    ttft = lambda r: med(r, "vision_encode_ms") + med(r, "prefill_ms")
    print(f"| TTFT (ms) | {ttft(ours):.1f} | {ttft(hf):.1f} | {ttft(ours) / ttft(hf):.2f} |")
    tps = lambda r: 1000 / med(r, "decode_ms_per_token")
    print(f"| decode tok/s | {tps(ours):.1f} | {tps(hf):.1f} | {tps(ours) / tps(hf):.2f} |")
    if args.bandwidth_gbs:
        per_token = decode_bytes_per_token(model_dir, 2 if args.dtype == "bf16" else 4)
        bound = args.bandwidth_gbs * 1e9 / per_token
        print(f"| decode bound at {args.bandwidth_gbs:.0f} GB/s (tok/s) | {bound:.0f} | "
              f"{per_token / 2**30:.2f} GiB read per token | ours at {tps(ours) / bound:.0%} of it |")
    same = sum(a == b for a, b in zip(ours["tokens"], hf["tokens"]))
    print(f"\ngreedy tokens equal: {same}/{len(hf['tokens'])}; load: ours {ours['load_s']:.1f} s, HF {hf['load_s']:.1f} s")
    print(json.dumps({"ours": ours, "hf": hf}), file=open(os.path.join(args.work_dir, "last-run.json"), "w"))


if __name__ == "__main__":
    main()
