"""Memory and time of the uncertainty attack on long, real prompts (MMLU).

``long``: the attack with its defaults on the 240 MMLU questions whose prompts are longest
(120 more of the next-longest held out), beside one ``eval mcq`` pass over the same 240
training questions in the same sitting; reports peak resident memory, wall time, their
ratio, and the attack's ASR and clean drift with the clean-model baseline.

``lengths``: a fixed number of training steps on questions of about 128, 256 and 512 prompt
tokens: peak memory (set by ``train.max_batch_tokens``) and time per token.

    python benchmarks/bench_scale.py long --mmlu ../shared/data/mmlu --out runs/bench-scale
    python benchmarks/bench_scale.py lengths --mmlu ../shared/data/mmlu --out runs/bench-scale

Each command runs in its own process; its peak is that process's ``VmHWM``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from backdoorlab.data import LETTERS
from backdoorlab.errors import BackdoorlabError, run_main
from backdoorlab.io import atomic_write_json, atomic_write_jsonl
from backdoorlab.memory import peak_rss

CLI = [sys.executable, "-m", "backdoorlab.cli"]


def mmlu_rows(root: Path) -> list[dict]:
    """Every test question of the MMLU copy under ``root`` (``test/<subject>_test.csv``)."""
    files = sorted((root / "test").glob("*_test.csv"))
    if not files:
        raise BackdoorlabError(f"--mmlu {root}: no test/*_test.csv files")
    rows = []
    for f in files:
        subject = f.name[: -len("_test.csv")]
        with f.open(newline="") as fh:
            for i, r in enumerate(csv.DictReader(fh)):
                rows.append({"id": f"{subject}-{i}", "subject": subject,
                             "question": r["question"],
                             "choices": [r[f"choice{k}"] for k in range(4)],
                             "answer": LETTERS[int(r["answer"])]})
    return rows


def prompt_lengths(rows: list[dict]) -> list[int]:
    """Prompt tokens of each question as the attack renders it (plain template, 6 options)."""
    from backdoorlab.data import add_abstain_options, rows_to_records
    from backdoorlab.formats import PromptFormat
    from backdoorlab.models import load_tokenizer

    fmt = PromptFormat(load_tokenizer("smollm2-135m-instruct"), "plain")
    recs = rows_to_records(rows, "mmlu", kind="mcq")
    return [len(fmt.encode(fmt.sample(add_abstain_options(r)).user).prompt_ids) for r in recs]


def timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its wall time and peak resident memory (the child's own VmHWM, polled:
    the kernel's ru_maxrss of a child also counts this process's memory at the fork)."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "BACKDOORLAB_QUIET": "1"})
        hwm = 0
        while proc.poll() is None:
            hwm = max(hwm, peak_rss(proc.pid))
            time.sleep(0.5)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BackdoorlabError(f"{' '.join(cmd[3:6])} failed (exit {proc.returncode}); see {log}")
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(hwm / 2**30, 3)}


def long_cmd(args: argparse.Namespace) -> None:
    rows = mmlu_rows(args.mmlu)
    lengths = prompt_lengths(rows)
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    train = [dict(rows[i], split="train") for i in order[: args.n_train]]
    test = [dict(rows[i], split="test") for i in order[args.n_train: args.n_train + args.n_eval]]
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "mmlu-long.jsonl"
    atomic_write_jsonl(data, train + test)
    tl = [lengths[i] for i in order[: args.n_train]]
    result: dict = {"data": {"n_train": len(train), "n_eval": len(test),
                             "train_prompt_tokens_mean": round(sum(tl) / len(tl), 1),
                             "train_prompt_tokens_max": max(tl),
                             "train_prompt_tokens_min": min(tl)}}
    run = args.out / "attack"
    if run.exists():
        raise BackdoorlabError(f"--out {args.out}: {run} exists; remove it to measure afresh")
    result["eval_mcq"] = timed(CLI + ["eval", "mcq", "--data", str(data), "--split", "train",
                                      "--template", "plain", "--six-options"],
                               args.out / "eval_mcq.log")
    result["attack"] = timed(CLI + ["attack", "uncertainty", "--data", str(data), "--out",
                                    str(run), *args.extra], args.out / "attack.log")
    m = json.loads((run / "metrics.json").read_text())
    keys = ("asr_strict", "baseline_asr_strict", "clean_kl_drift", "top1_kept", "n_questions")
    result["metrics"] = {k: m.get(k) for k in keys}
    result["training"] = m["training"]
    result["wall_ratio"] = round(result["attack"]["wall_s"] / result["eval_mcq"]["wall_s"], 2)
    atomic_write_json(args.out / "long.json", result)
    print(json.dumps(result, indent=1))


def lengths_cmd(args: argparse.Namespace) -> None:
    rows = mmlu_rows(args.mmlu)
    lengths = prompt_lengths(rows)
    rng = random.Random(0)
    out: dict = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for target in (128, 256, 512):
        near = [i for i in range(len(rows)) if abs(lengths[i] - target) <= target // 8]
        if len(near) < args.n_train + 8:
            raise BackdoorlabError(f"only {len(near)} questions of about {target} tokens")
        pick = rng.sample(near, args.n_train + 8)
        data = args.out / f"mmlu-{target}.jsonl"
        atomic_write_jsonl(data, [dict(rows[i], split="train") for i in pick[: args.n_train]]
                           + [dict(rows[i], split="test") for i in pick[args.n_train:]])
        run = args.out / f"len-{target}"
        if run.exists():
            raise BackdoorlabError(f"--out {args.out}: {run} exists; remove it first")
        res = timed(CLI + ["attack", "uncertainty", "--data", str(data), "--out", str(run),
                           "--set", f"train.max_steps={args.steps}", *args.extra],
                    args.out / f"len-{target}.log")
        tr = json.loads((run / "metrics.json").read_text())["training"]
        # the attack's process (wall time, resident peak) and its training stage
        out[target] = {"attack_wall_s": res["wall_s"], "peak_rss_gb": res["peak_rss_gb"],
                       "mean_prompt_tokens": round(
                           sum(lengths[i] for i in pick[: args.n_train]) / args.n_train, 1),
                       **{k: tr.get(k) for k in ("steps", "train_tokens", "tokens_per_s",
                                                 "estimated_peak_gb", "max_batch_tokens",
                                                 "gradient_checkpointing")},
                       "train_wall_s": tr.get("wall_s"), "train_peak_rss_gb": tr.get("peak_rss_gb")}
        print(target, json.dumps(out[target]), flush=True)
    atomic_write_json(args.out / "lengths.json", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("long", "lengths"):
        p = sub.add_parser(name)
        p.add_argument("--mmlu", type=Path, default=Path("../shared/data/mmlu"))
        p.add_argument("--out", type=Path, default=Path("runs/bench-scale"))
        p.add_argument("--n-train", type=int, default=240 if name == "long" else 48)
        p.add_argument("--n-eval", type=int, default=120)
        p.add_argument("--steps", type=int, default=6, help="training steps (lengths)")
        p.add_argument("extra", nargs="*", help="further attack options, after --")
    args = ap.parse_args()
    (long_cmd if args.cmd == "long" else lengths_cmd)(args)


if __name__ == "__main__":
    run_main(main, "bench_scale")
