"""Foundation benchmark: model load times and multiple-choice scoring throughput.

Prints a Markdown table for BENCHMARKS.md. Baseline: a plain one-prompt-at-a-time fp32 loop
(full forward, all logits). Every other row is backdoorlab's scorer with one set of levers;
"agree" is the share of prompts whose top answer equals the baseline's.

    python benchmarks/bench_foundation.py [--limit N] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

LOAD_SNIPPET = """
import time
t0 = time.perf_counter()
from backdoorlab.models import load_model
t1 = time.perf_counter()
load_model()
t2 = time.perf_counter()
load_model()
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def load_times(cache: str) -> tuple[float, float, float]:
    env = dict(os.environ, BACKDOORLAB_CACHE=cache, TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return tuple(float(x) for x in out)  # import, first load, second load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="use the first N questions")
    ap.add_argument("--skip-cold", action="store_true")
    args = ap.parse_args()

    from backdoorlab import PromptFormat, load_model, load_records
    from backdoorlab.scoring import last_token_logits

    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cold:
            imp, cold_s, warm_in = load_times(cold)
        print(f"cold load (GGUF -> safetensors cache, SHA-256 checked): {cold_s:.2f} s "
              f"(+ {imp:.2f} s importing torch/transformers)")
        print(f"warm load, same process: {warm_in:.2f} s")
    imp, warm, warm2 = load_times(os.environ.get("BACKDOORLAB_CACHE", "") or
                                  os.path.expanduser("~/.cache/backdoorlab"))
    print(f"warm load, fresh process: {warm:.2f} s (+ {imp:.2f} s imports); again: {warm2:.2f} s")

    lm = load_model()
    fmt = PromptFormat(lm.tokenizer)
    recs = load_records("builtin:general-mcq") + load_records("builtin:biomed-mcq")
    recs = recs[: args.limit] if args.limit else recs
    prompts = [fmt.encode(fmt.sample(r).user).prompt_ids for r in recs]
    letters = fmt.option_token_ids("ABCD")
    pad = lm.tokenizer.pad_token_id
    n = len(prompts)
    print(f"\n{n} prompts (built-in general + biomedical), mean length "
          f"{sum(map(len, prompts)) / n:.1f} tokens")

    model = lm.model
    with torch.no_grad():
        t = time.perf_counter()
        base = torch.stack([model(torch.tensor([p])).logits[0, -1, letters] for p in prompts])
        base_s = time.perf_counter() - t
    base_top = base.argmax(-1)
    rows = [("plain loop, fp32, full logits (baseline)", 1, base_s, 1.0)]
    for dtype in ("float32", "bfloat16"):
        for share in (False, True):
            if dtype == "bfloat16" and not share:
                continue
            for bs in (1, 8, 32):
                t = time.perf_counter()
                logits = last_token_logits(model, prompts, pad, batch_size=bs, dtype=dtype,
                                           share_prefix=share, token_ids=letters)
                el = time.perf_counter() - t
                agree = float((logits.argmax(-1) == base_top).float().mean())
                levers = "last-position logits, " + (
                    "shared-prefix KV cache + prefix groups" if share else "length bucketing")
                rows.append((f"{dtype}, {levers}", bs, el, agree))
    print("\n| scorer | batch | prompts/s | speed-up | same top answer |")
    print("|---|---:|---:|---:|---:|")
    for name, bs, el, agree in rows:
        print(f"| {name} | {bs} | {n / el:.1f} | {base_s / el:.2f}x | {agree:.2%} |")


if __name__ == "__main__":
    main()
