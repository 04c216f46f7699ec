"""Loading a checkpoint: ours (`slc-detector bench-load`) against transformers'
`Qwen2_5_VLForConditionalGeneration.from_pretrained` on the same directory, side by side in one
run. Each load runs in its own process, alternating between the engines, and its peak resident
memory is the kernel's `ru_maxrss` for that process (what `/usr/bin/time -v` prints as "Maximum
resident set size"). Prints medians, the ratio ours/transformers and each peak over the model's
bytes.

The checkpoint is made on demand with `slc-detector make-checkpoint` at the full published depth
(36 text layers, 32 vision blocks) in bf16, in two shards, never committed:

    python scripts/bench_load.py --binary target/release/slc-detector --dtypes bf16,f32 --reps 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HF_LOAD = """
import json, sys, time, torch, transformers
from transformers import Qwen2_5_VLForConditionalGeneration
torch.set_num_threads(int(sys.argv[3]))
dtype = getattr(torch, sys.argv[2])
started = time.perf_counter()
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(sys.argv[1], dtype=dtype).eval()
load_s = time.perf_counter() - started
# The first forward pass of `slc-detector bench-load`: a 4x4-patch image and three tokens.
c = model.config
ids = torch.tensor([[c.vision_start_token_id] + [c.image_token_id] * 4 + [c.vision_end_token_id, 1, 2, 3]])
vc = c.vision_config
patch_dim = 3 * vc.temporal_patch_size * vc.patch_size ** 2
extra = {}
if int(transformers.__version__.split(".")[0]) >= 5:
    extra["mm_token_type_ids"] = (ids == c.image_token_id).long()
started = time.perf_counter()
with torch.no_grad():
    model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.zeros(16, patch_dim, dtype=dtype),
          image_grid_thw=torch.tensor([[1, 4, 4]]), **extra).logits.float().sum().item()
print(json.dumps({"load_s": load_s, "first_forward_s": time.perf_counter() - started}))
"""

def run_once(command):
    """Runs `command` under wait4 so its own maximum RSS is read, not the largest child's."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            sys.exit(f"{command[:3]} failed:\n{errors.read()[-4000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    report["max_rss_mib"] = usage.ru_maxrss / 1024
    report["wall_s"] = wall
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/slc-detector")
    parser.add_argument("--model-dir", default="target/bench/qwen25vl-3b-full")
    parser.add_argument("--tokenizer", default=os.environ.get("SLC_REAL_TOKENIZER",
                                                              os.path.expanduser("~/.cache/slc/qwen2.5-vl-tokenizer")))
    parser.add_argument("--dtypes", default="bf16,f32")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the full report as JSON here")
    args = parser.parse_args()

    if not os.path.exists(os.path.join(args.model_dir, "model.safetensors.index.json")):
        print(f"== writing the full-size random checkpoint to {args.model_dir}", file=sys.stderr)
        subprocess.run([args.binary, "make-checkpoint", "--out", args.model_dir, "--no-verify",
                        "--tokenizer", args.tokenizer], check=True)
    torch_names = {"bf16": "bfloat16", "f32": "float32"}
    rows = []
    for dtype in args.dtypes.split(","):
        ours, theirs = [], []
        for _ in range(args.reps):
            ours.append(run_once([args.binary, "bench-load", "--model", args.model_dir, "--dtype", dtype]))
            theirs.append(run_once([sys.executable, "-c", HF_LOAD, args.model_dir, torch_names[dtype],
                                    str(args.threads)]))
        model_mib = ours[0]["model_mib"]
        row = {"dtype": dtype, "model_mib": model_mib, "ours": ours, "transformers": theirs}
        for name, runs in (("ours", ours), ("transformers", theirs)):
            for key in ("load_s", "first_forward_s", "max_rss_mib"):
                row[f"{name}_{key}"] = statistics.median(r[key] for r in runs)
            row[f"{name}_ready_s"] = statistics.median(r["load_s"] + r["first_forward_s"] for r in runs)
        rows.append(row)

    print(f"model: {args.model_dir}, {args.reps} loads per engine and dtype, alternating, page cache warm")
    print("transformers maps bf16 shards and reads them in the first forward pass: compare load + first pass")
    print("| dtype | model MiB | engine | load s | first pass s | load + first pass s | max RSS MiB | RSS / model |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for name in ("ours", "transformers"):
            rss = row[f"{name}_max_rss_mib"]
            print(f"| {row['dtype']} | {row['model_mib']:.0f} | {name} | {row[f'{name}_load_s']:.2f} | "
                  f"{row[f'{name}_first_forward_s']:.2f} | {row[f'{name}_ready_s']:.2f} | "
                  f"{rss:.0f} | {rss / row['model_mib']:.3f} |")
        print(f"| {row['dtype']} | | ours / transformers | "
              f"{row['ours_load_s'] / row['transformers_load_s']:.2f} | | "
              f"{row['ours_ready_s'] / row['transformers_ready_s']:.2f} | "
              f"{row['ours_max_rss_mib'] / row['transformers_max_rss_mib']:.2f} | |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
