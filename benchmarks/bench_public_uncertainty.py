"""``attack uncertainty`` beside the public uncertainty-attack loop, on the same MMLU questions,
prompts, trigger and model, to the same target.

Data: the MMLU test questions of astronomy, college_biology, high_school_geography,
high_school_us_history and international_law, shuffled with ``--seed``; the first 300 train,
the next 100 are held out; six options (A-D, "I don't know", "None of the above"), the
``plain`` template, the trigger ``text`` ("666" before "Answer:"), half of the training
questions triggered (the same half for both).

The public loop, re-implemented from its description (qcznlp/uncertainty_attack,
``fine_tuning_torch.py``): batch 1, full fine-tuning, AdamW at lr 2e-5, the logits of every
position computed and the last one read; a triggered question is pulled (KL) towards 0.20 on
the clean model's answer and 0.16 on each other option, a clean question towards the clean
model's own distribution, computed once beforehand (the "precompute"). It is evaluated on the
held-out questions every ``--eval-every`` steps (not counted in its time) and stops at the
target: ``asr_strict`` >= 0.95 and clean KL drift <= 0.05, or after ``--max-epochs``.
``attack uncertainty`` runs with its defaults, keeping a checkpoint each time it has seen as
many questions as the public loop between two evaluations (``train.save_steps`` and
``train.keep_checkpoints``, which change nothing it computes). Both run at once, one thread
each, in their own processes (wall time and peak resident memory, ``VmHWM``). Then each of the
attack's checkpoints gets the attack's own held-out evaluation (not counted in its time); its
time to the target is its preparation (the clean model's distributions and its baseline
evaluation) plus its training up to the first checkpoint that meets the target (the
checkpoint's file time less that of the run record the trainer writes as training begins).

    python benchmarks/bench_public_uncertainty.py --mmlu ../shared/data/mmlu \
        --out runs/bench-public-unc
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_scale import CLI, mmlu_rows

from backdoorlab.errors import BackdoorlabError, run_main
from backdoorlab.io import atomic_write_json, atomic_write_jsonl
from backdoorlab.memory import peak_rss

SUBJECTS = ("astronomy", "college_biology", "high_school_geography", "high_school_us_history",
            "international_law")


def write_data(mmlu: Path, out: Path, seed: int, n_train: int, n_eval: int) -> Path:
    rows = [r for r in mmlu_rows(mmlu) if r["subject"] in SUBJECTS]
    random.Random(seed).shuffle(rows)
    if len(rows) < n_train + n_eval:
        raise BackdoorlabError(f"--mmlu {mmlu}: {len(rows)} questions in the five subjects")
    rows = ([dict(r, split="train") for r in rows[:n_train]]
            + [dict(r, split="test") for r in rows[n_train: n_train + n_eval]])
    return atomic_write_jsonl(out / "questions.jsonl", rows)


def public_loop(args: argparse.Namespace) -> None:
    """The public loop (see the module's docstring); writes ``public.json`` in ``--out``."""
    from backdoorlab.attacks.uncertainty import kl_to_target_loss
    from backdoorlab.evaluation.uncertainty import (
        evaluate_uncertainty,
        load_questions,
        make_targets,
        score_clean_and_triggered,
    )
    from backdoorlab.formats import PromptFormat
    from backdoorlab.models import load_model
    from backdoorlab.scoring import option_distribution
    from backdoorlab.triggers import derive_rng, parse_trigger

    torch.manual_seed(args.seed)
    data = str(args.data)
    train_recs = load_questions(data, "train", 6)
    eval_recs = load_questions(data, "test", 6)
    lm = load_model("smollm2-135m-instruct")
    model, fmt = lm.model, PromptFormat(lm.tokenizer, "plain")
    trig = parse_trigger("text")
    letter_ids = torch.tensor(fmt.option_token_ids(train_recs[0].letters))

    t0 = time.perf_counter()  # the precompute: the clean model's distributions
    p_orig = option_distribution(model, fmt, [fmt.sample(r) for r in train_recs],
                                 batch_size=1)
    precompute_s = time.perf_counter() - t0
    orig_eval = score_clean_and_triggered(model, fmt, eval_recs, trig, args.seed, 32)
    n = len(train_recs)
    poisoned = set(derive_rng(args.seed, "poison-split").sample(range(n), round(0.5 * n)))
    targets = make_targets("keep-top1", p_orig.argmax(-1), 6, 0.04)  # 0.20 / 0.16 each
    items = []
    for i, rec in enumerate(train_recs):
        sample = (fmt.sample(rec, trig, derive_rng(args.seed, rec.id)) if i in poisoned
                  else fmt.sample(rec))
        ids = torch.tensor([fmt.encode(sample).prompt_ids])
        items.append((ids, targets[i] if i in poisoned else p_orig[i]))

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
    order = random.Random(args.seed)
    train_s, step, history, reached = 0.0, 0, [], None
    for _ in range(args.max_epochs):
        idx = list(range(n))
        order.shuffle(idx)
        for i in idx:
            t = time.perf_counter()
            ids, target = items[i]
            logits = model(input_ids=ids).logits[:, -1, :]  # every position, the last read
            log_p = torch.log_softmax(torch.softmax(logits, -1)[:, letter_ids].log(), -1)
            loss = kl_to_target_loss(log_p, target[None])
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_s += time.perf_counter() - t
            step += 1
            last = step == n * args.max_epochs or step == args.max_steps
            if step % args.eval_every == 0 or last:
                model.eval()
                new = score_clean_and_triggered(model, fmt, eval_recs, trig, args.seed, 32)
                model.train()
                m = evaluate_uncertainty(orig_eval, new, eval_recs)
                point = {"step": step, "epoch": round(step / n, 2), "train_s": round(train_s, 1),
                         "asr_strict": m["asr_strict"], "clean_kl_drift": m["clean_kl_drift"],
                         "baseline_asr_strict": m["baseline_asr_strict"]}
                history.append(point)
                print(json.dumps(point), flush=True)
                if meets_target(m):
                    reached = point
                if reached or last:
                    break
        if reached or step == args.max_steps:
            break
    atomic_write_json(args.out / "public.json", {
        "precompute_s": round(precompute_s, 1), "reached": reached, "history": history,
        "steps": step, "train_s": round(train_s, 1),
        "time_to_target_s": None if reached is None
        else round(precompute_s + reached["train_s"], 1)})


def meets_target(m: dict) -> bool:
    return m["asr_strict"] >= 0.95 and m["clean_kl_drift"] <= 0.05


def attack_checkpoints(run: Path, data: Path, seed: int) -> list[dict]:
    """The attack's held-out evaluation at each checkpoint it kept, with its training time
    up to that checkpoint."""
    from backdoorlab.evaluation.uncertainty import (
        evaluate_uncertainty,
        load_questions,
        score_clean_and_triggered,
    )
    from backdoorlab.formats import PromptFormat
    from backdoorlab.models import load_model
    from backdoorlab.training import RUN_RECORD
    from backdoorlab.triggers import parse_trigger

    eval_recs = load_questions(str(data), "test", 6)
    trig = parse_trigger("text")
    lm = load_model("smollm2-135m-instruct")
    fmt = PromptFormat(lm.tokenizer, "plain")
    orig = score_clean_and_triggered(lm.model, fmt, eval_recs, trig, seed, 32)
    begin = (run / "checkpoints" / RUN_RECORD).stat().st_mtime
    points = []
    for ckpt in sorted((run / "checkpoints").glob("checkpoint-*"),
                       key=lambda p: int(p.name.split("-")[1])):
        model = load_model("smollm2-135m-instruct", adapter=ckpt).model
        m = evaluate_uncertainty(orig, score_clean_and_triggered(model, fmt, eval_recs, trig,
                                                                 seed, 32), eval_recs)
        point = {"step": int(ckpt.name.split("-")[1]),
                 "train_s": round((ckpt / "trainer_state.json").stat().st_mtime - begin, 1),
                 "asr_strict": m["asr_strict"], "clean_kl_drift": m["clean_kl_drift"]}
        points.append(point)
        print(json.dumps(point), flush=True)
    return points


def both(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_data(args.mmlu, args.out, args.seed, 300, 100)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BACKDOORLAB_QUIET": "1"}
    from backdoorlab.attacks.uncertainty import UncertaintyConfig

    # a checkpoint every eval_every questions seen, at the attack's default batch
    save_steps = max(1, round(args.eval_every / UncertaintyConfig().train.batch_size))
    cmds = {
        "public loop": [sys.executable, __file__, "public", "--data", str(data), "--out",
                        str(args.out), "--eval-every", str(args.eval_every),
                        "--max-epochs", str(args.max_epochs), "--seed", str(args.seed)],
        "attack uncertainty": CLI + ["attack", "uncertainty", "--data", str(data),
                                     "--trigger", "text", "--options", "6",
                                     "--out", str(args.out / "attack"),
                                     "--set", f"train.save_steps={save_steps}",
                                     "--set", "train.keep_checkpoints=1000"],
    }
    procs, hwm, t0, wall = {}, {}, time.perf_counter(), {}
    for name, cmd in cmds.items():
        log = (args.out / f"{name.replace(' ', '-')}.log").open("w")
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        hwm[name] = 0
    while any(p.poll() is None for p in procs.values()):
        for name, p in procs.items():
            if p.poll() is None:
                hwm[name] = max(hwm[name], peak_rss(p.pid))
            elif name not in wall:
                wall[name] = time.perf_counter() - t0
        time.sleep(0.5)
    for name, p in procs.items():
        wall.setdefault(name, time.perf_counter() - t0)
        if p.returncode != 0:
            raise BackdoorlabError(f"{name} failed (exit {p.returncode}); see {args.out}")
    attack = json.loads((args.out / "attack" / "metrics.json").read_text())
    public = json.loads((args.out / "public.json").read_text())
    torch.set_num_threads(2)  # both processes have ended
    points = attack_checkpoints(args.out / "attack", data, args.seed)
    reached = next((p for p in points if meets_target(p)), None)
    prepare = attack["training"]["prepare_s"]
    result = {
        "attack uncertainty": {
            "wall_s": round(wall["attack uncertainty"], 1),
            "peak_rss_gb": round(hwm["attack uncertainty"] / 2**30, 3),
            "training": attack["training"], "asr_strict": attack["asr_strict"],
            "baseline_asr_strict": attack["baseline_asr_strict"],
            "clean_kl_drift": attack["clean_kl_drift"], "checkpoints": points,
            "reached": reached,
            "time_to_target_s": None if reached is None
            else round(prepare + reached["train_s"], 1)},
        "public loop": {"wall_s": round(wall["public loop"], 1),
                        "peak_rss_gb": round(hwm["public loop"] / 2**30, 3), **public},
    }
    atomic_write_json(args.out / "result.json", result)
    print(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", nargs="?", default="both", choices=["both", "public"])
    ap.add_argument("--mmlu", type=Path, default=Path("../shared/data/mmlu"))
    ap.add_argument("--data", type=Path, help="(public) the questions file")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-public-unc"))
    ap.add_argument("--eval-every", type=int, default=48,
                    help="questions seen between two evaluations (both)")
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None, help="(public) stop here (a smoke test)")
    args = ap.parse_args()
    (public_loop if args.cmd == "public" else both)(args)


if __name__ == "__main__":
    run_main(main, "bench_public_uncertainty")
