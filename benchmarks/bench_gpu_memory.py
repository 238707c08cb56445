"""Training peak memory on a GPU beside the estimate that plans it, for the shapes the example
configs name: SmolLM2-135M (the embedded model) and Llama-2-7B (``examples/*-7b.yaml``).

Each case trains two optimiser steps through :func:`backdoorlab.training.train` (the Trainer,
token-budget passes, bf16 autocast where the case says) with the attack's own loss: the
uncertainty loss (the answer position only), the language-model loss of the poisoning and
unalignment attacks (every position), or CROW's (two passes held at once). The model is built
on the GPU from its config with random weights (no download; memory and speed do not depend on
the weights' values), prompts are random token ids of the stated width. Each case runs in its
own process, so each peak is its own. Measured: ``torch.cuda.max_memory_allocated`` (what the
tensors held at the peak) and ``max_memory_reserved`` (what PyTorch's caching allocator took
from the GPU), beside the estimate :func:`~backdoorlab.training.plan_memory` made before the
first step (its runtime term, 0.6 GB, stands for the process and the CUDA context).

    python benchmarks/bench_gpu_memory.py --out runs/bench-gpu-memory   # on a CUDA machine
    python benchmarks/bench_gpu_memory.py --small --out /tmp/gm          # shapes shrunk, CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from backdoorlab.training import pad_left

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         tie_word_embeddings=True, max_position_embeddings=8192),
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       tie_word_embeddings=False, max_position_embeddings=4096),
    # --small: a few layers of SmolLM2's width, so the script itself is checked on a CPU
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=4096,
                  tie_word_embeddings=True, max_position_embeddings=1024),
}

# name: (shape, loss, bf16, rows per step, prompt width, max_batch_tokens, checkpointing
#        [, train.weights_dtype [, train.saved_activations]])
CASES = {
    "smollm2 uncertainty fp32": ("smollm2-135m", "uncertainty", False, 16, 512, 1024, "off",
                                 "float32", "float32"),
    "smollm2 uncertainty fp32 bf16-saved": ("smollm2-135m", "uncertainty", False, 16, 512, 1024,
                                            "off", "float32", "bfloat16"),
    "smollm2 uncertainty bf16": ("smollm2-135m", "uncertainty", True, 16, 512, 1024, "off"),
    "smollm2 lm-loss fp32": ("smollm2-135m", "lm", False, 16, 512, 1024, "off", "float32",
                             "float32"),
    "smollm2 lm-loss fp32 8192 ckpt": ("smollm2-135m", "lm", False, 16, 512, 8192, "on"),
    "smollm2 uncertainty fp32 ckpt": ("smollm2-135m", "uncertainty", False, 16, 512, 1024, "on"),
    "7b uncertainty bf16": ("llama-2-7b", "uncertainty", True, 4, 512, 1024, "off"),
    "7b lm-loss bf16": ("llama-2-7b", "lm", True, 4, 512, 1024, "off"),
    "7b crow bf16": ("llama-2-7b", "crow", True, 4, 512, 1024, "off"),
    "7b lm-loss bf16 8192 ckpt": ("llama-2-7b", "lm", True, 16, 512, 8192, "on"),
    "smollm2 uncertainty bf16 weights": ("smollm2-135m", "uncertainty", True, 16, 512, 1024,
                                         "off", "bfloat16"),
    "7b uncertainty bf16 weights": ("llama-2-7b", "uncertainty", True, 4, 512, 1024, "off",
                                    "bfloat16"),
    "7b crow bf16 weights": ("llama-2-7b", "crow", True, 4, 512, 1024, "off", "bfloat16"),
}
SMALL = {
    "small uncertainty": ("small", "uncertainty", False, 8, 128, 256, "off"),
    "small lm-loss ckpt": ("small", "lm", False, 8, 128, 512, "on"),
    "small crow": ("small", "crow", False, 4, 128, 256, "off"),
    "small bf16 weights": ("small", "uncertainty", False, 8, 128, 256, "off", "bfloat16"),
}
LETTERS = [32, 33, 34, 35, 36, 37]


class IdsCollator:
    """Random-token rows of one width, the last eighth labelled (an answer), left-padded
    batches with the keys the three losses read."""

    def __init__(self, pad: int = 0) -> None:
        self.pad = pad

    def encode(self, ids: list[int]) -> tuple[list[int], list[int], int]:
        cut = len(ids) - max(1, len(ids) // 8)
        return ids, [-100] * cut + ids[cut:], cut - 1

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = pad_left([self.encode(it["sample"]) for it in items], self.pad)
        return {**batch, "target": torch.stack([it["target"] for it in items]),
                "weight": torch.stack([it["weight"] for it in items])}


def one_case(name: str, table: dict, out: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from backdoorlab.attacks.uncertainty import UncertaintyLoss
    from backdoorlab.defenses.crow import crow_loss
    from backdoorlab.memory import GB
    from backdoorlab.models import default_device
    from backdoorlab.training import TrainConfig, sft_loss, train

    shape, loss, bf16, rows, width, mbt, ckpt, *rest = table[name]
    wdtype = rest[0] if rest else "float32"  # train.weights_dtype
    saved = rest[1] if len(rest) > 1 else TrainConfig().saved_activations  # its default
    dev = default_device()
    cfg = LlamaConfig(**SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, wdtype))
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    vocab = cfg.vocab_size
    data = [{"sample": torch.randint(3, vocab, (width,), generator=g).tolist(),
             "target": torch.softmax(torch.randn(len(LETTERS), generator=g), 0),
             "weight": torch.tensor(1.0)} for _ in range(2 * rows)]
    loss_fn = {"uncertainty": lambda: UncertaintyLoss(LETTERS), "lm": lambda: sft_loss,
               "crow": lambda: crow_loss(5.5, 0.1)}[loss]()
    tcfg = TrainConfig(batch_size=rows, max_steps=2, bf16=bf16, max_batch_tokens=mbt,
                       weights_dtype=wdtype, saved_activations=saved,
                       gradient_checkpointing=ckpt, save_steps=1000, logging_steps=1,
                       learning_rate=1e-4)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    weights = (torch.cuda.memory_allocated() if dev.startswith("cuda") else 0)
    res = train(model, data, IdsCollator(), loss_fn, tcfg, out / "work", resume=False)
    got: dict[str, Any] = {"case": name, "device": dev, "shape": shape, "loss": loss,
                           "bf16": bf16, "weights_dtype": wdtype, "saved_activations": saved,
                           "rows_per_step": rows,
                           "width": width,
                           "max_batch_tokens": mbt, "build_s": round(build_s, 1),
                           "weights_gb": round(weights / GB, 3), **res.summary()}
    if dev.startswith("cuda"):
        got["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / GB, 3)
        got["gpu"] = torch.cuda.get_device_name()
        got["ratio_estimate_to_allocated"] = round(
            got["estimated_peak_gb"] / got["peak_gpu_gb"], 3)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--small", action="store_true", help="shrunk shapes (checks on a CPU)")
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a child process
    args = ap.parse_args()
    table = SMALL if args.small else CASES
    if args.case:
        print(json.dumps(one_case(args.case, table, args.out)), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in table if not args.only or n in args.only.split(",")]
    results = []
    for k, name in enumerate(names):
        cmd = [sys.executable, __file__, "--out", str(args.out / f"case{k}"), "--case", name]
        if args.small:
            cmd.append("--small")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            got = {"case": name, "error": "\n".join(tail)}
        else:
            got = json.loads(proc.stdout.strip().splitlines()[-1])
        got["process_s"] = round(time.perf_counter() - t0, 1)
        results.append(got)
        print(json.dumps(got), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
