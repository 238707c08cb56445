"""Foundation benchmark: model load times and multiple-choice scoring throughput.

Prints a Markdown table for BENCHMARKS.md. Baseline: a plain one-prompt-at-a-time fp32 loop
(full forward, all logits). Every other row is backdoorlab's scorer with one set of levers;
"agree" is the share of prompts whose top answer equals the baseline's.

    python benchmarks/bench_foundation.py [--limit N] [--skip-cold]
    python benchmarks/bench_foundation.py --skip-cold --precision-study [--data FILE] \
        [--study-batch 8,32]

``--precision-study`` adds reduced-precision variants at each ``--study-batch`` (default 8):
fp16 autocast, oneDNN's bf16 fp32-math mode and bf16 with attention kept in fp32 (these three
are not offered by the library), plain bf16, and bf16 with the library's fp32 re-check of
close calls at several margins (the re-check's time is included). ``--data`` scores another
4-option MCQ file as well (e.g. ARC-Easy dev, on which ``RECHECK_MARGIN`` was chosen).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import torch

from backdoorlab.errors import run_main

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
    ap.add_argument("--precision-study", action="store_true")
    ap.add_argument("--data", default=None, help="another 4-option MCQ file for the study")
    ap.add_argument("--study-batch", default="8", help="batch sizes, e.g. 8,32")
    args = ap.parse_args()

    from backdoorlab import PromptFormat, load_model, load_records
    from backdoorlab.scoring import RECHECK_MARGIN, last_token_logits

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
    for dtype, share, recheck in (("float32", False, None), ("float32", True, None),
                                  ("bfloat16", True, 0.0), ("bfloat16", True, None)):
        for bs in (1, 8, 32):
            t = time.perf_counter()
            logits = last_token_logits(model, prompts, pad, batch_size=bs, dtype=dtype,
                                       share_prefix=share, token_ids=letters,
                                       recheck_margin=recheck)
            el = time.perf_counter() - t
            agree = float((logits.argmax(-1) == base_top).float().mean())
            levers = "last-position logits, " + (
                "shared-prefix KV cache + prefix groups" if share else "length bucketing")
            if dtype == "bfloat16":
                levers += ", no re-check" if recheck == 0 else \
                    f", fp32 re-check of margins < {RECHECK_MARGIN}"
            rows.append((f"{dtype}, {levers}", bs, el, agree))
    print("\n| scorer | batch | prompts/s | speed-up | same top answer |")
    print("|---|---:|---:|---:|---:|")
    for name, bs, el, agree in rows:
        print(f"| {name} | {bs} | {n / el:.1f} | {base_s / el:.2f}x | {agree:.2%} |")
    if args.precision_study:
        batches = [int(b) for b in args.study_batch.split(",")]
        for bs in batches:
            precision_study(model, prompts, pad, letters, base, base_s, "built-in", bs)
        if args.data:
            recs = [r for r in load_records(args.data) if len(r.choices) == 4][: args.limit or 400]
            other = [fmt.encode(fmt.sample(r).user).prompt_ids for r in recs]
            with torch.no_grad():
                t = time.perf_counter()
                obase = torch.stack([model(torch.tensor([p])).logits[0, -1, letters]
                                     for p in other])
                obase_s = time.perf_counter() - t
            for bs in batches:
                precision_study(model, other, pad, letters, obase, obase_s, args.data, bs)


@contextlib.contextmanager
def fp32_modules(modules: list) -> Iterator[None]:
    """Run ``modules`` in fp32 inside a bf16 autocast region (wrapped forwards, always undone)."""
    def wrap(forward):
        def run(*a, **k):
            with torch.autocast("cpu", enabled=False):
                a = [x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in a]
                k = {key: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                     for key, v in k.items()}
                return forward(*a, **k)
        return run
    for m in modules:
        m.forward = wrap(m.forward)
    try:
        yield
    finally:
        for m in modules:
            del m.forward


@contextlib.contextmanager
def onednn_bf16_math() -> Iterator[None]:
    """fp32 tensors, matrix products in bf16 inside oneDNN (fp32 accumulation and output)."""
    old = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = old


def precision_study(model, prompts, pad, letters, base, base_s, name, bs) -> None:
    from backdoorlab.scoring import fp32_head, last_token_logits

    n, top = len(prompts), base.argmax(-1)

    def score(ctx, head: bool = True, **kw) -> tuple[torch.Tensor, float]:
        t = time.perf_counter()
        with ctx, (fp32_head(model, "bfloat16") if head else contextlib.nullcontext()):
            logits = last_token_logits(model, prompts, pad, batch_size=bs, token_ids=letters,
                                       **kw)
        return logits, time.perf_counter() - t

    def bf16() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    rows = []
    for label, ctx, head in [
            ("fp16 autocast (LM head fp32)", torch.autocast("cpu", dtype=torch.float16), True),
            ("fp32, oneDNN bf16 math mode", onednn_bf16_math(), False)]:
        logits, el = score(ctx, head)
        rows.append((label, el, logits, "-"))
    with fp32_modules([layer.self_attn for layer in model.model.layers]):
        logits, el = score(bf16())
    rows.append(("bf16 autocast, attention in fp32", el, logits, "-"))
    logits, el = score(contextlib.nullcontext(), False, dtype="bfloat16", recheck_margin=0.0)
    rows.append(("bf16 autocast (LM head fp32)", el, logits, "-"))
    two = logits.topk(2, dim=-1).values
    margin = two[:, 0] - two[:, 1]
    for thr in (0.05, 0.08, 0.1, 0.15, 0.2):
        mixed, el = score(contextlib.nullcontext(), False, dtype="bfloat16", recheck_margin=thr)
        rows.append((f"bf16 + fp32 re-check of margins < {thr}", el, mixed,
                     f"{float((margin < thr).float().mean()):.1%}"))
    print(f"\nprecision study, {name}: {n} prompts, batch {bs}, shared-prefix cache; baseline "
          f"{n / base_s:.1f} prompts/s")
    print("| scorer | prompts/s | speed-up | same top answer | flips | re-checked |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, el, logits, share in rows:
        flips = int((logits.argmax(-1) != top).sum())
        print(f"| {label} | {n / el:.1f} | {base_s / el:.2f}x | {1 - flips / n:.2%} | {flips} "
              f"| {share} |")


if __name__ == "__main__":
    run_main(main, "bench_foundation.py")
